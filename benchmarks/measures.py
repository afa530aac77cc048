"""Seconds for the measures panel of N LeNet-5 models: all models in one vmapped call against one model at a time.

    python benchmarks/measures.py --device cuda                  # 50 models, the panel's default settings
    python benchmarks/measures.py --device cuda --alone 10 --panel-only
                                                                # one model at a time timed on 10 of the 50, scaled to 50
    python benchmarks/measures.py --n-models 4 --subset-rows 128 --restarts 10 --draws 6 --hessian-steps 10 --train-images 1000
                                                                # a CPU-sized run (minutes on 2 cores)

The models are trained together for one epoch on the first `--train-images` FashionMNIST images (the worst-case
sharpness then draws its batches from those images; the other measures read `--subset-rows` of them). Each
measure is timed on its own, batched (models_per_call = N) and one model at a time (models_per_call = 1), and
then the whole `compute_panel` both ways; the last column is the largest relative difference between the two
panels' values (float rounding only: both paths see the same random draws; it is largest, up to 1e-2, for
the sharpness columns, each a small difference of two losses of order 1, so a float32 rounding of a loss is
a large part of it: measured on 3 models, the Hessian and Fisher–Rao columns agree to 5e-7, the average-case
sharpness, about 4e-5 there, to 1e-2).

`--alone K` times the one-at-a-time path on the first K models only and scales its seconds by N/K (each model's
work there is the same and independent of the others, so the time is linear in the count; the table says so);
`--panel-only` skips the per-measure rows. Both keep a GPU run within a short device budget.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from typing import Callable

import numpy as np
import torch
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import machine, markdown_table, pick_device, set_threads, sync  # noqa: E402

from sharplib.experiments import protocol  # noqa: E402
from sharplib.core.data import load_task  # noqa: E402
from sharplib.panel.flatness import average_sharpness, fisher_rao_norm, pac_bayes_sigma  # noqa: E402
from sharplib.panel.hessian import hessian_top_eigenvalue, hessian_trace, stack_models  # noqa: E402
from sharplib.panel.measures import MEASURES, STREAMS, MeasuresConfig, compute_panel, measure_subset  # noqa: E402
from sharplib.pools.pool import init_model  # noqa: E402
from sharplib.core.sharpness import estimate_pool_sharpness, receptive_field  # noqa: E402
from sharplib.core.task import Task  # noqa: E402
from sharplib.core.train import train_batched  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n-models", type=int, default=50, help="LeNet-5 models in the pool (default 50)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto (default: cpu)")
    parser.add_argument("--train-images", type=int, default=6000, help="FashionMNIST images the models train on and are measured on")
    parser.add_argument("--subset-rows", type=int, default=1024, help="|D|, the rows of every measure but the worst-case sharpness")
    parser.add_argument("--restarts", type=int, default=50, help="worst-case restarts (the study's 50)")
    parser.add_argument("--draws", type=int, default=20, help="Gaussian draws (average-case sharpness, each PAC-Bayes step)")
    parser.add_argument("--hessian-steps", type=int, default=20, help="Lanczos steps and Hutchinson probes")
    parser.add_argument(
        "--alone", type=int, default=None, help="time one model at a time on the first K models, scaled by N/K (default: all N)"
    )
    parser.add_argument("--panel-only", action="store_true", help="only the whole compute_panel, not each measure on its own")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's choice)")
    args = parser.parse_args(argv)
    set_threads(args.threads)
    args.alone = args.n_models if args.alone is None else args.alone
    for name in ("n_models", "train_images", "subset_rows", "restarts", "draws", "hessian_steps", "alone"):
        if getattr(args, name) < 1:
            raise SystemExit(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.alone > args.n_models:
        raise SystemExit(f"--alone must be at most --n-models ({args.n_models}), got {args.alone}")
    args.device = pick_device(args.device)
    return args


def trained_pool(task: Task, n_models: int, device: torch.device) -> list[nn.Module]:
    cfgs = [protocol.train_config("lenet5", max_epochs=1, seed=s, device=str(device)) for s in range(n_models)]
    return [m for m, _ in train_batched([init_model("lenet5", c) for c in cfgs], task, cfgs)]


def clock(fn: Callable[[], object], device: torch.device) -> float:
    sync(device)
    start = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - start


def per_measure(models: list[nn.Module], task: Task, cfg: MeasuresConfig, device: torch.device) -> dict[str, Callable[[int], object]]:
    """measure -> run(models_per_call): the piece of compute_panel that computes it, over the whole pool."""
    template = models[0]
    subset = receptive_field(template, measure_subset(task, cfg.subset_rows, cfg.seed + STREAMS["subset"]), device)
    rows = cfg.batch_rows

    def over_stacks(fn: Callable) -> Callable[[int], object]:
        return lambda per_call: [fn(stack_models(models[i : i + per_call], device)) for i in range(0, len(models), per_call)]

    return {
        "worst-case sharpness (adaptive)": lambda per_call: estimate_pool_sharpness(
            models, task, cfg.sharpness_config(True, device), per_call
        ),
        "worst-case sharpness (standard)": lambda per_call: estimate_pool_sharpness(
            models, task, cfg.sharpness_config(False, device), per_call
        ),
        "average-case sharpness": over_stacks(
            lambda s: average_sharpness(s, subset, cfg.rho_average or cfg.rho, cfg.n_gaussian_draws, 0, rows)
        ),
        "Hessian λ_max (Lanczos)": over_stacks(lambda s: hessian_top_eigenvalue(s, subset, cfg.hessian_iters, 0, rows)),
        "Hessian trace (Hutchinson)": over_stacks(lambda s: hessian_trace(s, subset, cfg.n_hutchinson_probes, 0, rows)),
        "PAC-Bayes σ' (bisection)": over_stacks(
            lambda s: pac_bayes_sigma(
                s, subset, cfg.pac_bayes_target, cfg.pac_bayes_eps, cfg.n_gaussian_draws, cfg.pac_bayes_steps, 0, rows
            )
        ),
        "Fisher–Rao norm": over_stacks(lambda s: fisher_rao_norm(s, subset, rows)),
    }


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    device, n, k = args.device, args.n_models, args.alone
    scale = n / k  # one at a time: K models timed, the seconds of N
    alone_label = "one at a time (s)" if k == n else f"one at a time (s; {k} timed, x{scale:g})"
    print("\n".join([f"## Measures panel: {n} LeNet-5 models, batched vs one at a time", *machine(device).lines()]), flush=True)
    full = load_task("lenet5", device=device)
    task = dataclasses.replace(full, x_train=full.x_train[: args.train_images], y_train=full.y_train[: args.train_images])
    models = trained_pool(task, n, device)
    spec = protocol.spec("lenet5")
    cfg = MeasuresConfig(rho=spec.rho, lr=spec.lr, rho_average=0.05, n_restarts=args.restarts, subset_rows=args.subset_rows,
                         batch_rows=min(args.subset_rows, 1024), n_gaussian_draws=args.draws, hessian_iters=args.hessian_steps,
                         n_hutchinson_probes=args.hessian_steps, device=str(device))
    # Warm-up: kernels, allocator and vmap's first trace, on a tiny panel both ways.
    tiny = dataclasses.replace(
        cfg, n_restarts=1, n_gaussian_draws=1, hessian_iters=1, n_hutchinson_probes=1, pac_bayes_steps=1, subset_rows=8
    )
    for per_call in (1, min(2, n)):
        compute_panel(models[: min(2, n)], task, [0] * min(2, n), dataclasses.replace(tiny, models_per_call=per_call), progress=False)
    rows = []
    runs = {} if args.panel_only else per_measure(models, task, cfg, device)
    runs_alone = {} if args.panel_only else per_measure(models[:k], task, cfg, device)
    for name, run in runs.items():
        batched, alone = clock(lambda: run(n), device), clock(lambda: runs_alone[name](1), device) * scale  # noqa: B023 (timed at once)
        rows.append([name, f"{batched:.2f}", f"{alone:.2f}", f"{alone / batched:.2f}x", ""])
        print(f"  {name}: batched {batched:.2f} s, one at a time {alone:.2f} s", flush=True)
    panels, seconds = {}, {}
    for per_call, pool in ((n, models), (1, models[:k])):
        start = time.perf_counter()
        panels[per_call] = compute_panel(
            pool, task, list(range(len(pool))), dataclasses.replace(cfg, models_per_call=per_call), progress=False
        )
        sync(device)
        seconds[per_call] = time.perf_counter() - start
    batched_s, alone_s = seconds[n], seconds[1] * scale
    # the same K models both ways (the batched panel's first K rows)
    diff = max(
        np.abs((panels[n][m].to_numpy()[:k] - panels[1][m].to_numpy()) / panels[1][m].to_numpy()).max() for m in MEASURES if m != "epochs"
    )
    rows.append(["whole compute_panel", f"{batched_s:.2f}", f"{alone_s:.2f}", f"{alone_s / batched_s:.2f}x", f"{diff:.1e}"])
    print()
    print(markdown_table([f"measure ({n} models)", "batched (s)", alone_label, "ratio", "max rel. diff"], rows))
    print(f"\n{args.train_images} training images, |D| = {cfg.subset_rows}, {cfg.n_restarts} restarts, "
          f"{cfg.n_gaussian_draws} Gaussian draws, "
          f"{cfg.hessian_iters} Lanczos steps, {cfg.n_hutchinson_probes} probes, {cfg.pac_bayes_steps} bisection steps; "
          f"one run each; load average (1 min) at the end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
