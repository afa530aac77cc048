"""What the ρ sweep of the ablation costs next to training the model it measures.

    python benchmarks/rho_sweep.py                     # FCNN and GAT
    python benchmarks/rho_sweep.py --archs fcnn gat lenet5   # LeNet-5 trains on all 60000 images (minutes)

For each architecture one model is trained by the protocol (timed), then its sharpness is measured
at the default grid of `ablation.default_rho_grid` (five ρ over two decades) for adaptive and
standard sharpness, with the report's 50 restarts, as the ablation's `rho_sweep` does it: one call
of the study's estimator per combination. The table prints seconds and the ratio sweep / training.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time

import torch
from tqdm.auto import tqdm

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import machine, markdown_table, pick_device, seconds, set_threads  # noqa: E402

from sharplib.core.archs import ARCHS
from sharplib.experiments import ablation, protocol  # noqa: E402
from sharplib.core.data import load_task  # noqa: E402
from sharplib.pools.pool import init_model  # noqa: E402
from sharplib.core.sharpness import estimate_sharpness  # noqa: E402
from sharplib.core.train import train_model  # noqa: E402


def measure(arch: str, device: torch.device, repeats: int) -> list[str]:
    task = load_task(arch, device=device)
    train_cfg = protocol.train_config(arch, device=str(device))
    start = time.perf_counter()
    model, result = train_model(init_model(arch, train_cfg), task, train_cfg)
    train_s = time.perf_counter() - start
    cfg = protocol.sharpness_config(arch, device=str(device))
    combos = [(rho, adaptive) for rho in ablation.default_rho_grid(arch) for adaptive in (True, False)]
    sweep_s = seconds(lambda: [estimate_sharpness(model, task, dataclasses.replace(cfg, rho=r, adaptive=a)) for r, a in combos],
                      device, repeats)
    return [protocol.spec(arch).model_name, f"{train_s:.1f} ({result.epochs} epochs)", str(len(combos)), f"{sweep_s:.2f}",
            f"{100 * sweep_s / train_s:.0f} %"]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--archs", nargs="+", default=["fcnn", "gat"], choices=ARCHS)
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto (default: cpu)")
    parser.add_argument("--repeats", type=int, default=3, help="timed sweeps per variant (median reported)")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's choice)")
    args = parser.parse_args(argv)
    set_threads(args.threads)
    if args.repeats < 1:
        raise SystemExit(f"--repeats must be >= 1, got {args.repeats}")
    device = pick_device(args.device)
    print("\n".join(["## ρ sweep (5 ρ x adaptive/standard, 50 restarts) against training one model", *machine(device).lines()]), flush=True)
    rows = [measure(arch, device, args.repeats) for arch in tqdm(args.archs, desc="architectures")]
    header = ["model", "training (s)", "combinations", "sweep (s)", "sweep / training"]
    print()
    print(markdown_table(header, rows))
    print(f"\nmedian of {args.repeats} sweep(s) after one warm-up; load average (1 min) at the end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
