"""Seconds per model: the batched sharpness estimator against the plain reference, on trained models.

    python benchmarks/sharpness.py                  # CPU, the report's settings
    python benchmarks/sharpness.py --device cuda    # adds the pool of 50 LeNet-5 models
    python benchmarks/sharpness.py --quick          # 10 restarts, 1 repeat: checks that it runs
    python benchmarks/sharpness.py --check          # batched == plain for every step rule (slow)

Settings are the report's (`protocol.sharpness_config`: 50 restarts x 5 steps, m = 64, p = inf,
step "gradient"). Each model is first trained briefly: FCNN and GAT by the protocol, LeNet-5 for
one epoch on the first 6000 training images (the estimate then draws its batches from all 60000).
Both estimators see the same batches, so their per-restart values must agree to float rounding;
the table prints the largest difference.
"""
from __future__ import annotations

import argparse
import dataclasses
import itertools
import os
import sys
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn
from tqdm.auto import tqdm

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import machine, markdown_table, pick_device, seconds, set_threads  # noqa: E402

from sharplib.core.archs import ARCHS
from sharplib.experiments import protocol  # noqa: E402
from sharplib.core.data import load_task  # noqa: E402
from sharplib.core.models import n_parameters  # noqa: E402
from sharplib.pools.pool import init_model  # noqa: E402
from sharplib.core.sharpness import SharpnessConfig, SharpnessResult, estimate_pool_sharpness, estimate_sharpness  # noqa: E402
from sharplib.core.sharpness_plain import estimate_sharpness_plain  # noqa: E402
from sharplib.core.task import Task  # noqa: E402
from sharplib.core.train import train_batched, train_model  # noqa: E402

LENET_TRAIN_IMAGES = 6000
POOL_SIZE = 50
TOLERANCE = 1e-6  # per restart, batched vs plain


@dataclass(frozen=True)
class BenchConfig:
    device: torch.device
    quick: bool = False
    repeats: int = 3
    check: bool = False

    @property
    def n_restarts(self) -> int | None:
        return 10 if self.quick else None  # None: the report's 50


def subset(task: Task, n: int) -> Task:
    return dataclasses.replace(task, x_train=task.x_train[:n], y_train=task.y_train[:n])


def train_briefly(arch: str, task: Task, device: torch.device, seed: int = 0) -> nn.Module:
    """One trained model: the protocol's training, LeNet-5 cut to one epoch on a subset."""
    if arch == "lenet5":
        cfg = protocol.train_config(arch, max_epochs=1, seed=seed, device=str(device))
        return train_model(init_model(arch, cfg), subset(task, LENET_TRAIN_IMAGES), cfg)[0]
    cfg = protocol.train_config(arch, seed=seed, device=str(device))
    return train_model(init_model(arch, cfg), task, cfg)[0]


def sharpness_config(arch: str, bench: BenchConfig, **overrides: object) -> SharpnessConfig:
    if bench.n_restarts is not None:
        overrides.setdefault("n_restarts", bench.n_restarts)
    return protocol.sharpness_config(arch, device=str(bench.device), **overrides)


def max_diff(a: SharpnessResult, b: SharpnessResult) -> float:
    return max(abs(x - y) for x, y in zip(a.values, b.values))


def timed(fn: Callable[[], SharpnessResult], bench: BenchConfig) -> tuple[float, SharpnessResult]:
    """Median seconds over the repeats (one untimed warm-up run first) and the last result."""
    out: list[SharpnessResult] = []
    median = seconds(lambda: out.append(fn()), bench.device, bench.repeats)
    return median, out[-1]


def compare(arch: str, task: Task, model: nn.Module, bench: BenchConfig) -> list[str]:
    cfg = sharpness_config(arch, bench)
    plain_s, plain = timed(lambda: estimate_sharpness_plain(model, task, cfg), bench)
    batched_s, batched = timed(lambda: estimate_sharpness(model, task, cfg), bench)
    name = protocol.spec(arch).model_name
    return [name, f"{n_parameters(model):,}", f"{cfg.n_restarts} x {cfg.n_steps} x {cfg.batch_size}",
            f"{plain_s:.3f}", f"{batched_s:.3f}", f"{plain_s / batched_s:.1f}x", f"{max_diff(batched, plain):.1e}"]


def pool_row(task: Task, bench: BenchConfig) -> list[str]:
    """The pool of 50 LeNet-5 (trained together, one epoch on the subset) in estimate_pool_sharpness."""
    cfgs = [protocol.train_config("lenet5", max_epochs=1, seed=s, device=str(bench.device)) for s in range(POOL_SIZE)]
    models = [m for m, _ in train_batched([init_model("lenet5", c) for c in cfgs], subset(task, LENET_TRAIN_IMAGES), cfgs)]
    cfg = sharpness_config("lenet5", bench)
    try:
        per_call = None  # the library's default on CUDA: all models in one vmapped call
        total_s, results = timed_pool(models, task, cfg, per_call, bench)
    except torch.cuda.OutOfMemoryError:
        torch.cuda.empty_cache()
        per_call = 10
        total_s, results = timed_pool(models, task, cfg, per_call, bench)
    singles = [estimate_sharpness(m, task, cfg) for m in models[:3]]
    diff = max(max_diff(r, s) for r, s in zip(results, singles))
    label = f"LeNet-5 pool of {POOL_SIZE} ({'all in one call' if per_call is None else f'{per_call} per call'})"
    return [label, f"{n_parameters(models[0]):,} each", f"{cfg.n_restarts} x {cfg.n_steps} x {cfg.batch_size}",
            "-", f"{total_s / POOL_SIZE:.3f}", "-", f"{diff:.1e} (vs alone)"]


def timed_pool(
    models: list[nn.Module], task: Task, cfg: SharpnessConfig, per_call: int | None, bench: BenchConfig
) -> tuple[float, list[SharpnessResult]]:
    out: list[list[SharpnessResult]] = []
    median = seconds(lambda: out.append(estimate_pool_sharpness(models, task, cfg, models_per_call=per_call)), bench.device, bench.repeats)
    return median, out[-1]


def check_rows(arch: str, task: Task, model: nn.Module, bench: BenchConfig) -> list[list[str]]:
    """batched == plain per restart for p, adaptive, step rule, random start, average-case; pool == alone."""
    rows = []
    variants = [(p, adaptive, step, {}) for p, adaptive, step in itertools.product(("inf", 2), (True, False), ("gradient", "steepest"))]
    variants += [("inf", True, "gradient", {"random_start": True}), (2, True, "gradient", {"kind": "average"})]
    for p, adaptive, step, extra in tqdm(variants, desc=f"check {arch}", leave=False):
        cfg = sharpness_config(arch, bench, p=p, adaptive=adaptive, step=step, n_restarts=4, **extra)
        diff = max_diff(estimate_sharpness(model, task, cfg), estimate_sharpness_plain(model, task, cfg))
        rows.append(
            [arch, f"p={p} adaptive={adaptive} step={step} {extra or ''}".strip(), f"{diff:.1e}", "ok" if diff <= TOLERANCE else "FAIL"]
        )
    others = [train_briefly(arch, task, bench.device, seed=s) for s in (1, 2)]
    cfg = sharpness_config(arch, bench, n_restarts=4)
    pooled = estimate_pool_sharpness([model, *others], task, cfg, models_per_call=3)
    diff = max(max_diff(r, estimate_sharpness(m, task, cfg)) for r, m in zip(pooled, [model, *others]))
    rows.append([arch, "pool of 3 in one call vs each alone", f"{diff:.1e}", "ok" if diff <= TOLERANCE else "FAIL"])
    return rows


def parse_args(argv: list[str] | None = None) -> BenchConfig:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto (default: cpu)")
    parser.add_argument("--quick", action="store_true", help="10 restarts and 1 repeat: a smoke run, not a measurement")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per estimator (median reported)")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's choice)")
    parser.add_argument("--check", action="store_true", help="also check batched == plain for every step rule")
    args = parser.parse_args(argv)
    set_threads(args.threads)
    if args.repeats < 1:
        raise SystemExit(f"--repeats must be >= 1, got {args.repeats}")
    return BenchConfig(device=pick_device(args.device), quick=args.quick, repeats=1 if args.quick else args.repeats, check=args.check)


def main(argv: list[str] | None = None) -> None:
    bench = parse_args(argv)
    print("\n".join(["## Sharpness: batched vs plain, seconds per model", *machine(bench.device).lines()]), flush=True)
    rows, checks = [], []
    for arch in tqdm(ARCHS, desc="architectures"):
        task = load_task(arch, device=bench.device)
        model = train_briefly(arch, task, bench.device)
        rows.append(compare(arch, task, model, bench))
        if arch == "lenet5" and bench.device.type == "cuda":
            rows.append(pool_row(task, bench))
        if bench.check:
            checks += check_rows(arch, task, model, bench)
    header = ["model", "parameters", "restarts x steps x m", "plain (s/model)", "batched (s/model)", "speed-up", "max abs diff per restart"]
    print()
    print(markdown_table(header, rows))
    print(f"\nmedian of {bench.repeats} run(s) after one warm-up; LeNet-5 trained 1 epoch on {LENET_TRAIN_IMAGES} images; "
          f"load average (1 min) at the end: {os.getloadavg()[0]:.2f}")
    if checks:
        print()
        print(markdown_table(["model", "settings (4 restarts)", "max abs diff", f"<= {TOLERANCE:g}"], checks))
        if any(r[-1] == "FAIL" for r in checks):
            raise SystemExit("batched and plain estimates differ by more than the tolerance")


if __name__ == "__main__":
    main()
