"""Is sharpness more than training progress? The progress study of one architecture.

The protocol's models stop at different training losses, and the training loss alone ranks test loss better
than any flatness measure. notebooks/progress.py asks whether adaptive sharpness still ranks test loss with
progress held fixed: by partial and stratified τ given the training loss (conditional.py), on an equalized
pool trained to a common epoch loss L* (TrainConfig.target_loss), and along training (trajectory.py).

    <results_dir>/<arch>/progress.csv    one row per (pool, model): pool, epoch, seed, losses, targets, sharpness
    <results_dir>/<arch>/progress.json   every τ with its interval, L*, counts, the seeds that missed L*
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Mapping

import numpy as np
import pandas as pd

from ..core.conditional import partial_kendall, stratified_kendall
from ..core.config import check_number
from ..pools.pool import PoolEntry
from .params import OWNER, StepParams
from ..core.sharpness import SharpnessConfig, SharpnessResult
from ..core.stats import KendallResult, kendall
from .study import read_step_files, write_step_files
from ..core.targets import TARGETS, target_columns
from ..core.train import TrainConfig

# L* per architecture: the epoch loss L_e (mean minibatch loss) every model trains to. Chosen from a probe: seeds 0-7
# trained on the CPU with the study's settings and no stopping rule; L* is the highest L_e among them at the protocol's
# last stopping epoch in the study (FCNN epoch 5, LeNet-5 6, GAT 12), rounded up to 0.01. The probe models first reach
# it at epochs 3-5, 5-6 and 7-12, where the protocol stops its models. The cap (the profile's max_epochs) is twice that epoch.
TARGET_LOSS: dict[str, float] = {"fcnn": 0.51, "lenet5": 0.37, "gat": 1.61}
POOLS = ("protocol", "equalized")
CONDITIONED_ON = "train_loss"  # z: the training loss over the whole training set, eval mode (TrainResult.train_loss)
MIN_PER_STRATUM = 5


@dataclass(frozen=True)
class ProgressParams(StepParams):
    """The progress notebook's parameters. None means the profile's value (`profiles.PROFILES`: pools, cap, trajectory),
    or the architecture's L* (TARGET_LOSS)."""

    n_models: int | None = None
    target_loss: float | None = None
    max_epochs: int | None = None
    n_resamples: int | None = None

    STEP: ClassVar[str] = "progress"
    COUNTS: ClassVar[tuple[tuple[str, int], ...]] = (("n_models", 3), ("max_epochs", 1), ("n_resamples", 1))

    def check(self) -> None:
        if self.target_loss is not None:
            check_number(OWNER, "target_loss", self.target_loss, minimum=0, strict=True)

    @property
    def n(self) -> int:
        """Models in the equalized pool: the given number, else the profile's."""
        return self.resolved("n_models")

    @property
    def L_star(self) -> float:
        return TARGET_LOSS[self.arch] if self.target_loss is None else self.target_loss

    @property
    def cap(self) -> int:
        return self.resolved("max_epochs")

    @property
    def resamples(self) -> int:
        return self.resolved("n_resamples")

    @property
    def trajectory_epochs(self) -> tuple[int, ...]:
        return tuple(self.default("trajectory_epochs"))

    @property
    def trajectory_models(self) -> int:
        return min(self.n, self.default("trajectory_models"))

    # stop at the first epoch e with L_e <= L* (min_epochs 1), or at the cap
    def equalized_config(self, study_train: Mapping[str, Any]) -> TrainConfig:
        """The study's training config (its recorded fields) with the target rule: L*, the cap, min_epochs 1, this device."""
        return dataclasses.replace(TrainConfig.from_dict(dict(study_train)), target_loss=self.L_star, max_epochs=self.cap,
                                   min_epochs=1, device=self.device)

    def trajectory_config(self, study_train: Mapping[str, Any]) -> TrainConfig:
        return dataclasses.replace(TrainConfig.from_dict(dict(study_train)), device=self.device)

    def sharpness_config(self, study_sharpness: Mapping[str, Any]) -> SharpnessConfig:
        """The study's SharpnessConfig (ρ, restarts, batch seed: the same batches S), on this device."""
        return dataclasses.replace(SharpnessConfig.from_dict(dict(study_sharpness)), device=self.device)

    def trajectory_sharpness_config(self, study_sharpness: Mapping[str, Any]) -> SharpnessConfig:
        """The study's SharpnessConfig with the profile's trajectory restarts (None: the study's)."""
        cfg = self.sharpness_config(study_sharpness)
        restarts = self.default("trajectory_restarts")
        return cfg if restarts is None else dataclasses.replace(cfg, n_restarts=restarts)


def protocol_table(models: pd.DataFrame) -> pd.DataFrame:
    """The study's models.csv as the protocol pool's rows (reached_target: None, no L* was set)."""
    table = models[["seed", "epochs", "train_loss", "test_loss", "test_accuracy", "diverged", "sharpness"]].copy()
    return table.assign(pool="protocol", epoch=np.nan, reached_target=None)


def pool_table(entries: list[PoolEntry], sharpness: list[SharpnessResult], pool: str, epoch: int | None = None) -> pd.DataFrame:
    """One row per trained model of `pool`: its training outcome and adaptive sharpness (mean over restarts)."""
    rows = [{"seed": e.result.seed, "epochs": e.result.epochs, "train_loss": e.result.train_loss, "test_loss": e.result.test_loss,
             "test_accuracy": e.result.test_accuracy, "diverged": e.result.diverged, "sharpness": s.mean, "pool": pool,
             "epoch": np.nan if epoch is None else epoch, "reached_target": e.result.reached_target} for e, s in zip(entries, sharpness)]
    return pd.DataFrame(rows)


def trajectory_table(along: pd.DataFrame) -> pd.DataFrame:
    """trajectory.sharpness_along_training's rows as the trajectory pool's (epochs: the checkpoint's epoch)."""
    columns = ["seed", "train_loss", "test_loss", "test_accuracy", "diverged", "sharpness", "epoch"]
    return along[columns].assign(epochs=along["epoch"], pool="trajectory", reached_target=None)


def with_targets(table: pd.DataFrame) -> pd.DataFrame:
    """The table with test_error (classifiers) and generalization_gap columns (re)computed."""
    extra = target_columns(table).drop(columns="test_loss")
    return pd.concat([table.drop(columns=[c for c in extra.columns if c in table.columns]), extra], axis=1)


def missed_target(reached: pd.Series) -> pd.Series:
    """True where L* was set and not reached (False, also as read back from a CSV); None/NaN: no L* was set."""
    return reached.map(lambda r: str(r) == "False").astype(bool)


def counted(table: pd.DataFrame) -> pd.DataFrame:
    """The models a τ is taken over: not diverged, finite sharpness and losses, and (where an L* was set) L* reached."""
    finite = np.isfinite(table[["sharpness", "train_loss", "test_loss"]].to_numpy(dtype=np.float64)).all(axis=1)
    return table[finite & ~table["diverged"].astype(bool).to_numpy() & ~missed_target(table["reached_target"]).to_numpy()]


def _kendall(x: np.ndarray, y: np.ndarray, n_resamples: int, seed: int) -> dict[str, Any]:
    if len(x) < 3 or np.all(x == x[0]) or np.all(y == y[0]):
        nan = float("nan")
        return KendallResult(nan, nan, nan, nan, int(len(x)), ci_method="undefined").as_dict()
    return kendall(x, y, n_resamples=n_resamples, seed=seed).as_dict()


def tau_set(table: pd.DataFrame, n_resamples: int, seed: int = 0) -> dict[str, dict[str, Any]]:
    """Per target: τ(sharpness, target), the partial τ given the training loss (with its null value), the stratified τ."""
    pool = with_targets(counted(table))
    out = {}
    for target in TARGETS:
        if target not in pool.columns or (len(pool) and not pool[target].notna().any()):
            continue
        kept = pool[np.isfinite(pool[target].to_numpy(dtype=np.float64))]
        x, y, z = (kept[c].to_numpy(dtype=np.float64) for c in ("sharpness", target, CONDITIONED_ON))
        strata = (
            stratified_kendall(x, y, z, min_per_stratum=MIN_PER_STRATUM, n_resamples=n_resamples, seed=seed).as_dict()
            if len(kept) >= 3
            else {
                "tau": np.nan,
                "ci_low": np.nan,
                "ci_high": np.nan,
                "stratum_size": [],
                "n": len(kept),
                "ci_method": "undefined",
                "reason": f"need at least 3 models, got {len(kept)}",
            }
        )
        out[target] = {
            "tau": _kendall(x, y, n_resamples, seed),
            "partial": partial_kendall(x, y, z, n_resamples=n_resamples, seed=seed).as_dict(),
            "stratified": strata,
            "tau_target_train_loss": _kendall(z, y, n_resamples, seed),
        }
    return out


def pool_summary(table: pd.DataFrame, n_resamples: int, seed: int = 0) -> dict[str, Any]:
    """One pool's counts (models, diverged, missed L*, their seeds), stopping epochs, training-loss spread and τ set."""
    missed = table[missed_target(table["reached_target"])]
    kept = counted(table)
    return {
        "n_models": int(len(table)), "n_used": int(len(kept)), "n_diverged": int(table["diverged"].astype(bool).sum()),
        "n_missed_target": int(len(missed)), "missed_target_seeds": [int(s) for s in missed["seed"]],
        "epochs": {str(int(e)): int(c) for e, c in table["epochs"].value_counts().sort_index().items()},
        "train_loss": _spread(kept["train_loss"]), "test_loss": _spread(kept["test_loss"]),
        "taus": tau_set(table, n_resamples, seed),
    }


def _spread(values: pd.Series) -> dict[str, float]:
    v = values.to_numpy(dtype=np.float64)
    return {"min": float(v.min()), "median": float(np.median(v)), "max": float(v.max())} if v.size else {}


def summarize(table: pd.DataFrame, trajectory: pd.DataFrame, stopping_epochs: pd.Series, n_resamples: int, seed: int = 0) -> dict[str, Any]:
    """progress.json's numbers: each pool's summary, τ along training (trajectory.tau_along_training's rows), the protocol's stops."""
    return {
        "pools": {pool: pool_summary(table[table["pool"] == pool], n_resamples, seed) for pool in POOLS if (table["pool"] == pool).any()},
        "trajectory": trajectory.to_dict(orient="records"),
        "stopping_epochs": {str(int(e)): int(c) for e, c in stopping_epochs.value_counts().sort_index().items()},
    }


def params_record(params: ProgressParams, study: Mapping[str, Any]) -> dict[str, Any]:
    """What the run used: its parameters, L* and the cap, the equalized pool's and the sharpness configs."""
    return {"arch": params.arch, "profile": params.profile, "params": dataclasses.asdict(params), "target_loss": params.L_star,
            "max_epochs": params.cap, "n_resamples": params.resamples, "trajectory_epochs": list(params.trajectory_epochs),
            "trajectory_models": params.trajectory_models,
            "trajectory_sharpness_config": dataclasses.asdict(params.trajectory_sharpness_config(study["sharpness_config"])),
            "equalized_train_config": dataclasses.asdict(params.equalized_config(study["train_config"])),
            "sharpness_config": dataclasses.asdict(params.sharpness_config(study["sharpness_config"])),
            "study_profile": study["profile"]}


def write_progress(out_dir: str | Path, table: pd.DataFrame, summary: Mapping[str, Any], record: Mapping[str, Any]) -> Path:
    """progress.csv, then progress.json (last, atomically: its presence means the run finished)."""
    return write_step_files(out_dir, "progress", table, {**record, **summary})


def read_progress(results_dir: str | Path, arch: str) -> tuple[dict[str, Any], pd.DataFrame]:
    return read_step_files(results_dir, arch, "progress")
