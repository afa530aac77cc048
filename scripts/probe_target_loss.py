"""How L* (progress_study.TARGET_LOSS) was chosen: the epoch loss L_e of a few seeds trained with the study's
settings and no stopping rule. L* is the highest L_e at the protocol's last stopping epoch, rounded up to 0.01.

    python scripts/probe_target_loss.py lenet5 6        # seeds 0-7, 6 epochs (about 9 min on 2 CPU cores)
"""
from __future__ import annotations

import argparse
import math

from sharplib.core.archs import ARCHS
from sharplib.core.data import load_task
from sharplib.pools.pool import init_model
from sharplib.experiments.protocol import spec, train_config
from sharplib.core.task import resolve_device
from sharplib.core.train import train_batched

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("arch", choices=ARCHS)
    parser.add_argument("epochs", type=int, help="the protocol's last stopping epoch in the study (models.csv)")
    parser.add_argument("--seeds", type=int, default=8)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    task = load_task(spec(args.arch).dataset, device=resolve_device(args.device))
    last = []
    for seed in range(args.seeds):
        # a target no model reaches: the run goes on to the cap, `epochs`
        cfg = train_config(args.arch, seed=seed, target_loss=1e-12, max_epochs=args.epochs, device=args.device)
        ((_, result),) = train_batched([init_model(args.arch, cfg)], task, [cfg])
        last.append(result.epoch_losses[-1])
        print(f"seed {seed}: L_e = {', '.join(f'{v:.4f}' for v in result.epoch_losses)}", flush=True)
    print(f"highest L_e at epoch {args.epochs}: {max(last):.4f}; L* = {math.ceil(max(last) * 100) / 100:.2f}")
