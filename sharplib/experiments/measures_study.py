"""The measures study of one architecture: which flatness measure tracks test loss, and on which pools.

notebooks/measures.py measures two pools of one architecture with the whole panel (`measures.compute_panel`):
the seed-only pool (the study's own models) and the varied pool (the grid of `profiles.PROFILES`: learning rate ×
batch size × seeds). For each measure μ it reports Kendall τ(μ, test loss) on both pools, and on the varied
pool Jiang et al.'s (2020) granulated τ Ψ with each ψ_i and τ within each learning rate:

    <results_dir>/<arch>/measures.csv    one row per (pool, model): hyperparameters, seed, test loss, measures
    <results_dir>/<arch>/measures.json   per measure: τ with CI on each pool, Ψ and ψ_i with CIs, conditional τ
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from .grid import HYPERPARAMETERS, Grid
from .params import StepParams
from ..panel.measures import MEASURES, MeasuresConfig
from .protocol import spec
from ..core.subpools import conditional_kendall, granulated_kendall, kendall_where_defined
from .study import read_step_files, write_step_files
from ..core.train import TrainConfig, TrainResult

AVERAGE_RHO = 0.05  # σ_i = 0.05 |w_i| for the average-case sharpness, every architecture


@dataclass(frozen=True)
class MeasuresParams(StepParams):
    """The measures notebook's parameters. None means the profile's value (`profiles.PROFILES`)."""

    n_seed_models: int | None = None  # None: the profile's (quick: the whole quick study pool)
    n_restarts: int | None = None
    n_resamples: int | None = None
    subset_rows: int | None = None

    STEP: ClassVar[str] = "measures"
    COUNTS: ClassVar[tuple[tuple[str, int], ...]] = (("n_seed_models", 3), ("n_restarts", 1), ("n_resamples", 1), ("subset_rows", 1))

    @property
    def grid(self) -> Grid:
        return self.default("grid")

    def measures_config(self) -> MeasuresConfig:
        return panel_config(self.arch, self.resolved("n_restarts"), self.resolved("subset_rows"), self.default("estimators"), self.device)


def panel_config(arch: str, n_restarts: int, subset_rows: int | None, estimators: dict[str, Any], device: str) -> MeasuresConfig:
    """Table I's ρ and η for every model: the ascent's step does not follow a model's own learning rate,
    so that on the varied pool a measure cannot read the learning rate off its own settings. The
    average-case sharpness uses ρ = AVERAGE_RHO: at LeNet-5's worst-case ρ (1e-4) Gaussian noise moves
    the loss by about float32's resolution."""
    s = spec(arch)
    return MeasuresConfig(rho=s.rho, lr=s.lr, n_restarts=n_restarts, subset_rows=subset_rows, rho_average=AVERAGE_RHO, device=device,
                          **estimators)


def measures_table(seed_panel: pd.DataFrame, seed_results: list[TrainResult], study_cfg: TrainConfig, varied_panel: pd.DataFrame,
                   grid_table: pd.DataFrame) -> pd.DataFrame:
    """measures.csv: the seed-only pool's panel (the study's lr and batch size) above the grid's (its cells'), each row
    with its pool, hyperparameters and test loss."""
    return pd.concat(
        [
            seed_panel.assign(pool="seed", lr=study_cfg.lr, batch_size=study_cfg.batch_size, test_loss=[r.test_loss for r in seed_results]),
            varied_panel.assign(pool="varied", lr=grid_table["lr"].to_numpy(), batch_size=grid_table["batch_size"].to_numpy(),
                                test_loss=grid_table["test_loss"].to_numpy()),
        ],
        ignore_index=True,
    )


def summarize(table: pd.DataFrame, n_resamples: int, seed: int = 0) -> dict[str, dict[str, Any]]:
    """Per measure: τ on each pool, and on the varied pool Ψ, ψ_i and τ within each learning rate (each with its CI).

    `table` is measures.csv: a `pool` column ("seed" or "varied"), the hyperparameters, test_loss and one column per measure.
    """
    summary = {}
    for measure in MEASURES:
        seed_pool, varied = (_finite(table[table["pool"] == name], measure) for name in ("seed", "varied"))
        # A measure constant within a sub-pool ranks nothing there: τ = 0, Jiang et al.'s convention (subpools' undefined="zero")
        granulated = granulated_kendall(
            varied, measure, "test_loss", list(HYPERPARAMETERS), n_resamples=n_resamples, seed=seed, undefined="zero"
        )
        by_lr = conditional_kendall(varied, measure, "test_loss", "lr", n_resamples=n_resamples, seed=seed)
        summary[measure] = {
            "tau_seed": _kendall(seed_pool[measure], seed_pool["test_loss"], n_resamples),
            "tau_varied": _kendall(varied[measure], varied["test_loss"], n_resamples),
            "granulated": granulated.as_dict(),
            "tau_within_lr": {f"{lr:g}": result.as_dict() for lr, result in by_lr.items()},
        }
    return summary


def _finite(pool: pd.DataFrame, measure: str) -> pd.DataFrame:
    """The models whose measure (as float) and test loss are finite."""
    pool = pool.assign(**{measure: pool[measure].astype(float)})
    return pool[np.isfinite(pool[measure]) & np.isfinite(pool["test_loss"])]


def _kendall(measure: pd.Series, test_loss: pd.Series, n_resamples: int) -> dict[str, Any]:
    # τ may be undefined: a constant measure (epochs of a pool that all stopped together)
    return kendall_where_defined(measure.to_numpy(), test_loss.to_numpy(), n_resamples=n_resamples).as_dict()


def write_measures(out_dir: str | Path, table: pd.DataFrame, summary: dict[str, Any], record: dict[str, Any]) -> Path:
    """measures.csv, then measures.json with the summary under "measures" (last: its presence means the run finished)."""
    return write_step_files(out_dir, "measures", table, {**record, "measures": summary})


def read_measures(results_dir: str | Path, arch: str) -> tuple[dict[str, Any], pd.DataFrame]:
    return read_step_files(results_dir, arch, "measures")


def params_record(params: MeasuresParams) -> dict[str, Any]:
    return {"arch": params.arch, "profile": params.profile, "params": dataclasses.asdict(params), "grid": dataclasses.asdict(params.grid),
            "measures_config": dataclasses.asdict(params.measures_config())}
