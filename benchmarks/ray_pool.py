"""Ray's overhead: a pool trained by train_pool with backend="ray" against backend="processes".

    python benchmarks/ray_pool.py                   # the GAT pool of 50, 2 workers each (needs the cluster extra)
    python benchmarks/ray_pool.py --models 20       # a smaller pool (a busy machine)
    python benchmarks/ray_pool.py --quick           # 4 models: checks that it runs
    python benchmarks/ray_pool.py --device cuda     # adds LeNet-5: one vmap shard per GPU task vs the batched back end

GAT on Cora by the protocol (Table I's training; each model stops when its epoch loss settles),
seeds 0..n-1, each back end into an empty folder: "processes" with `--workers` worker processes,
Ray with a local instance of `--workers` CPUs (one task per model), alternately for `--rounds`
rounds. Each pool's seconds include the checkpoints and whatever workers it starts: the processes
back end spawns its workers for every pool, Ray's first pool starts its worker processes' work
(importing sharplib) and later pools find them warm. The Ray instance's own start is timed apart
(once per session; none on a running cluster). The ratio is Ray's pool seconds over the processes
back end's in the same round; the two pools must hold the same models bit for bit.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import machine, markdown_table, pick_device  # noqa: E402

from sharplib.pools import cluster  # noqa: E402
from sharplib.experiments import protocol  # noqa: E402
from sharplib.core.data import load_task  # noqa: E402
from sharplib.pools.pool import PoolEntry, load_model, train_pool  # noqa: E402
from sharplib.core.task import Task  # noqa: E402


@dataclass(frozen=True)
class BenchConfig:
    device: torch.device
    n_models: int
    workers: int
    rounds: int


def timed_pool(arch: str, task: Task, n: int, out_dir: Path, **options) -> tuple[float, list[PoolEntry]]:
    cfg = protocol.train_config(arch, device="cpu")
    start = time.perf_counter()
    entries = train_pool(arch, task, cfg, list(range(n)), out_dir, progress=False, **options)
    return time.perf_counter() - start, entries


def same_models(a: list[PoolEntry], b: list[PoolEntry]) -> int:
    """How many seeds have bit-identical weights in both pools."""
    same = 0
    for x, y in zip(a, b):
        wx, wy = load_model(x.checkpoint)[0].state_dict(), load_model(y.checkpoint)[0].state_dict()
        same += all(torch.equal(wx[k], wy[k]) for k in wx)
    return same


def gat_rows(bench: BenchConfig) -> list[list[str]]:
    """Rounds of (processes, Ray), each pool into an empty folder. The processes back end starts its
    workers for every pool; Ray's workers outlive a pool, so from the second round on they are warm."""
    task = load_task("gat", device=torch.device("cpu"))
    n, rows = bench.n_models, []
    for round_ in range(1, bench.rounds + 1):
        with tempfile.TemporaryDirectory() as tmp:
            processes_s, here = timed_pool("gat", task, n, Path(tmp) / "processes", backend="processes", n_workers=bench.workers)
            if round_ == 1:  # after the first processes pool, so that Ray's idle processes do not share its cores
                start = time.perf_counter()
                cluster.connect(num_cpus=bench.workers)
                ray_start_s = time.perf_counter() - start
            ray_s, on_ray = timed_pool("gat", task, n, Path(tmp) / "ray", backend="ray")
            same = same_models(here, on_ray)
        warm = "workers start" if round_ == 1 else "workers warm"
        rows += [
            [
                f"{round_}: processes back end, {bench.workers} workers",
                f"{processes_s:.1f}",
                f"{processes_s / n:.2f}",
                "1.00",
                f"{sum(e.result.epochs for e in here)}",
                "",
            ],
            [
                f"{round_}: Ray, local instance of {bench.workers} CPUs ({warm})",
                f"{ray_s:.1f}",
                f"{ray_s / n:.2f}",
                f"{ray_s / processes_s:.2f}",
                f"{sum(e.result.epochs for e in on_ray)}",
                f"{same}/{n}",
            ],
        ]
    rows.append(["Ray instance start (once per session; none on a running cluster)", f"{ray_start_s:.1f}", "", "", "", ""])
    return rows


def lenet_gpu_rows(bench: BenchConfig) -> list[list[str]]:
    """LeNet-5, one epoch each: n models as one vmap shard in a Ray task holding a GPU (the local instance
    counts the GPUs), against the batched back end in this process. Not yet run: no GPU on the 2-core machine."""
    task = load_task("lenet5", device=bench.device)
    n = bench.n_models
    cfg = protocol.train_config("lenet5", max_epochs=1, min_epochs=1, device="auto")
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        train_pool("lenet5", task, cfg, list(range(n)), Path(tmp) / "batched", backend="batched", batch_models=n, progress=False)
        batched_s = time.perf_counter() - start
        start = time.perf_counter()
        train_pool("lenet5", task, cfg, list(range(n)), Path(tmp) / "ray", backend="ray", batch_models=n, progress=False)
        ray_s = time.perf_counter() - start
    return [
        [f"{n} LeNet-5, batched back end (this process)", f"{batched_s:.1f}", "1.00"],
        [f"{n} LeNet-5, Ray: one shard per GPU task", f"{ray_s:.1f}", f"{ray_s / batched_s:.2f}"],
    ]


def parse_args(argv: list[str] | None = None) -> BenchConfig:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", type=int, default=50, help="pool size (default: 50)")
    parser.add_argument("--workers", type=int, default=2, help="worker processes / Ray CPUs (default: 2)")
    parser.add_argument("--device", default="cpu", help="cpu, or cuda to add the LeNet-5 GPU shard (default: cpu)")
    parser.add_argument("--rounds", type=int, default=2, help="rounds of (processes, Ray) pools (default: 2)")
    parser.add_argument("--quick", action="store_true", help="4 models, 1 round: a smoke run, not a measurement")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)  # the driver only writes checkpoints; the workers have the cores
    return BenchConfig(device=pick_device(args.device), n_models=4 if args.quick else args.models, workers=args.workers,
                       rounds=1 if args.quick else args.rounds)


def main(argv: list[str] | None = None) -> None:
    bench = parse_args(argv)
    os.environ.pop("RAY_ADDRESS", None)  # a local instance of --workers CPUs, whatever the shell names
    print("\n".join(["## Ray back end against local worker processes", *machine(bench.device).lines()]), flush=True)
    gat = gat_rows(bench)
    lenet = lenet_gpu_rows(bench) if bench.device.type == "cuda" else []
    print()
    print(
        markdown_table([f"GAT on Cora, {bench.n_models} models", "seconds", "s/model", "ratio to processes", "epochs", "same weights"], gat)
    )
    if lenet:
        print()
        print(markdown_table(["LeNet-5, one epoch each", "seconds", "ratio"], lenet))
    print(f"\nload average (1 min) at the end: {os.getloadavg()[0]:.2f}")
    cluster.disconnect()


if __name__ == "__main__":
    main()
