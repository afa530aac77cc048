"""Adaptive sharpness and its τ along training: one pool of seeds checkpointed after each of several epochs.

Issue #21 asks whether sharpness ranks test loss beyond training progress. Following the same seeds
through training shows how τ(S, L_test) and its conditional forms (conditional.py) change as the
training loss falls. The checkpoints of epoch e are a pool trained for exactly e epochs
(min_epochs = max_epochs = e, `epoch_pools`): the same seeds, data orders and steps as the first e
epochs of one run without early stop, so each folder holds that run's weights after epoch e. Training
them this way costs Σ_e e epochs instead of max_e e, which is cheap for a few epochs of small pools.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from ..core.conditional import partial_kendall, stratified_kendall
from ..pools.pool import PoolEntry, load_model, train_pool
from ..core.sharpness import SharpnessConfig, estimate_pool_sharpness
from ..core.subpools import conditional_kendall
from ..core.targets import target_columns
from ..core.task import Task
from ..core.train import TrainConfig


def epoch_pools(arch: str, task: Task, cfg: TrainConfig, seeds: list[int], epochs: Sequence[int], out_dir: str | Path,
                **pool_options: Any) -> dict[int, list[PoolEntry]]:
    """For each e in `epochs`, the pool of `seeds` trained exactly e epochs, checkpointed in out_dir/epoch<e>/ (resumable).

    Args:
        arch, task: what is trained.
        cfg: the training config; its stopping rule is replaced by min_epochs = max_epochs = e (and no target_loss).
        seeds: the pool's seeds.
        epochs: the epoch counts e.
        out_dir: the parent folder of the pools.
        **pool_options: passed to `pool.train_pool`.

    Returns:
        {e: the pool's entries}.
    """
    pools = {}
    for e in sorted(set(epochs)):
        fixed = dataclasses.replace(cfg, min_epochs=e, max_epochs=e, target_loss=None)
        pools[e] = train_pool(arch, task, fixed, seeds, Path(out_dir) / f"epoch{e:03d}", **pool_options)
    return pools


def sharpness_along_training(checkpoints: Mapping[int, Sequence[Path]], task: Task, cfg: SharpnessConfig) -> pd.DataFrame:
    """Adaptive sharpness S of every checkpoint, beside the losses it recorded.

    All epochs see the same batches S (cfg.seed), so S changes along training only with the weights.

    Args:
        checkpoints: epoch -> its models' checkpoint files (e.g. `[e.checkpoint for e in epoch_pools(...)[epoch]]`).
        task: the task S is measured on.
        cfg: the study's sharpness estimator.

    Returns:
        One row per (epoch, model): seed, S (mean over restarts), train_loss, test loss, test error, gap; the losses
        are the checkpoints' own (TrainResult: whole splits, eval mode).
    """
    rows = []
    for epoch, paths in sorted(checkpoints.items()):
        loaded = [load_model(Path(p), task.device) for p in paths]  # the estimate runs where the task is
        estimates = estimate_pool_sharpness([model for model, _ in loaded], task, cfg)
        for (_, payload), estimate in zip(loaded, estimates):
            result = payload["result"]
            rows.append({"epoch": epoch, "seed": result["seed"], "sharpness": estimate.mean, "train_loss": result["train_loss"],
                         "test_loss": result["test_loss"], "test_accuracy": result["test_accuracy"], "diverged": result["diverged"]})
    table = pd.DataFrame(rows)
    return pd.concat([table, target_columns(table).drop(columns="test_loss")], axis=1)


def tau_along_training(table: pd.DataFrame, measure: str = "sharpness", target: str = "test_loss", given: str = "train_loss",
                       min_per_stratum: int = 5, n_resamples: int = 999, seed: int = 0) -> pd.DataFrame:
    """Per epoch of `table`: τ(measure, target), τ_xy·z and τ_strat given `given`, each with its CI.

    Diverged models (a non-finite measure, target or `given`) are left out and counted in n_dropped. An undefined τ
    is NaN with its reason (subpools.conditional_kendall's "undefined", conditional.py's `reason`).

    Args:
        table: `sharpness_along_training`'s rows.
        measure: x, the column ranked against the target.
        target: y, e.g. test_loss.
        given: z, the column held fixed (the training loss L).
        min_per_stratum: the fewest models in a stratum of z (`conditional.quantile_strata`).
        n_resamples: bootstrap resamples of each CI.
        seed: the resampling's seed.

    Returns:
        One row per epoch; tau_target_given is τ(target, given), how well L alone ranks the target at that epoch.
    """
    kept = table[np.isfinite(table[[measure, target, given]].to_numpy(dtype=np.float64)).all(axis=1)]
    plain = conditional_kendall(kept, measure, target, "epoch", n_resamples=n_resamples, seed=seed)
    rows = []
    for epoch, pool in kept.groupby("epoch", sort=True):
        x, y, z = (pool[c].to_numpy(dtype=float) for c in (measure, target, given))
        partial = partial_kendall(x, y, z, n_resamples=n_resamples, seed=seed)
        strata = stratified_kendall(x, y, z, min_per_stratum=min_per_stratum, n_resamples=n_resamples, seed=seed)
        rows.append({
            "epoch": epoch, "n": len(pool), "n_dropped": int((table["epoch"] == epoch).sum() - len(pool)),
            f"median_{measure}": float(pool[measure].median()), f"median_{given}": float(pool[given].median()),
            "tau": plain[epoch].tau, "tau_ci_low": plain[epoch].ci_low, "tau_ci_high": plain[epoch].ci_high,
            "tau_target_given": partial.tau_yz,
            "partial_tau": partial.tau, "partial_ci_low": partial.ci_low, "partial_ci_high": partial.ci_high,
            "partial_null_tau": partial.null_tau, "partial_reason": partial.reason,
            "stratified_tau": strata.tau, "stratified_ci_low": strata.ci_low, "stratified_ci_high": strata.ci_high,
            "n_strata": strata.n_strata, "stratified_reason": strata.reason,
        })
    return pd.DataFrame(rows)
