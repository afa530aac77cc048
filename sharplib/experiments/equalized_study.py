"""The panel on pools trained to a common loss: does any flatness measure rank test loss once progress is equal?

The progress step trains the study's seeds to a common epoch loss L* and measures adaptive sharpness on them.
notebooks/equalized.py puts the whole panel of measures (`panel.measures`) to two pools at that common progress:

    seed pool    the progress step's equalized pool (its seeds, its config: the study's with L* and the cap)
    varied pool  the measures step's lr × batch grid, each model trained to the same L* (`grid.cell_config`)

and takes, per measure and target, τ, the partial τ given the training loss and the stratified τ on each
pool (`progress_study.tau_set`), and on the varied pool the granulated τ Ψ. A model that misses L* is
counted, named and left out of every τ.

    <results_dir>/<arch>/equalized.csv    one row per (pool, model): hyperparameters, seed, losses, L* reached, measures
    <results_dir>/<arch>/equalized.json   per measure, pool and target: every τ with its interval; per pool, the counts
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Mapping

import numpy as np
import pandas as pd

from ..core.subpools import granulated_kendall
from ..core.targets import TARGETS
from ..core.train import TrainConfig, TrainResult
from ..panel.measures import MEASURES, MeasuresConfig
from .grid import HYPERPARAMETERS, Grid
from .measures_study import panel_config
from .params import StepParams
from .progress_study import counted, missed_target, tau_set, with_targets
from .study import read_step_files, write_step_files

POOLS = ("seed", "varied")  # the measures step's names: a pool here is that pool trained to L*


@dataclass(frozen=True)
class EqualizedParams(StepParams):
    """The equalized notebook's parameters. None means the profile's value (`profiles.PROFILES`); n_seed_models
    None there means the progress step's whole equalized pool."""

    n_seed_models: int | None = None
    n_restarts: int | None = None
    n_resamples: int | None = None
    subset_rows: int | None = None

    STEP: ClassVar[str] = "equalized"
    COUNTS: ClassVar[tuple[tuple[str, int], ...]] = (("n_seed_models", 3), ("n_restarts", 1), ("n_resamples", 1), ("subset_rows", 1))

    @property
    def grid(self) -> Grid:
        return self.default("grid")

    def measures_config(self) -> MeasuresConfig:
        """The measures step's panel (Table I's ρ and η for every model), with this step's restarts and rows."""
        return panel_config(self.arch, self.resolved("n_restarts"), self.resolved("subset_rows"), self.default("estimators"), self.device)


@dataclass(frozen=True)
class EqualizedInputs:
    """What the progress step recorded of its equalized pool: how it trained, and on which seeds."""

    train_config: TrainConfig  # the study's config with L*, the cap and min_epochs 1
    seeds: tuple[int, ...]


def equalized_inputs(progress: Mapping[str, Any], progress_table: pd.DataFrame, device: str,
                     n_seed_models: int | None = None) -> EqualizedInputs:
    """The progress step's equalized pool (progress.json, progress.csv) on `device`: its first n_seed_models seeds (None: all)."""
    seeds = tuple(int(s) for s in progress_table.loc[progress_table["pool"] == "equalized", "seed"])
    if not seeds:
        raise ValueError("progress.csv has no equalized pool: rerun notebooks/progress.py for this architecture")
    if n_seed_models is not None and n_seed_models > len(seeds):
        raise ValueError(f"parameter.n_seed_models is {n_seed_models}, but the progress step's equalized pool holds {len(seeds)} models")
    config = dataclasses.replace(TrainConfig.from_dict(dict(progress["equalized_train_config"])), device=device)
    return EqualizedInputs(config, seeds[:n_seed_models])


def equalized_table(seed_panel: pd.DataFrame, seed_results: list[TrainResult], seed_config: TrainConfig, varied_panel: pd.DataFrame,
                    grid_table: pd.DataFrame) -> pd.DataFrame:
    """equalized.csv: the seed pool's panel (the equalized config's η and B) above the varied pool's (its cells'), each row
    with its pool, hyperparameters, test loss and accuracy, and whether it diverged or reached L*; then the targets."""
    outcome = ["test_loss", "test_accuracy", "diverged", "reached_target"]
    seed_rows = pd.DataFrame([{k: getattr(r, k) for k in outcome} for r in seed_results])
    seed = seed_panel.assign(pool="seed", lr=seed_config.lr, batch_size=seed_config.batch_size, **seed_rows.to_dict(orient="list"))
    varied = varied_panel.assign(pool="varied", lr=grid_table["lr"].to_numpy(), batch_size=grid_table["batch_size"].to_numpy(),
                                 **{k: grid_table[k].to_numpy() for k in outcome})
    return with_targets(pd.concat([seed, varied], ignore_index=True))


def pool_counts(pool: pd.DataFrame) -> dict[str, Any]:
    """A pool's models, those diverged or short of L* (named by cell and seed), its stopping epochs and training losses."""
    missed = pool[missed_target(pool["reached_target"])]
    kept = counted(pool.assign(sharpness=0.0))  # counted reads a sharpness column; here only divergence and L* decide
    train_loss = kept["train_loss"].to_numpy(dtype=np.float64)
    return {
        "n_models": int(len(pool)), "n_used": int(len(kept)), "n_diverged": int(pool["diverged"].astype(bool).sum()),
        "n_missed_target": int(len(missed)),
        "missed_target": [f"lr {r.lr:g}, batch {int(r.batch_size)}, seed {int(r.seed)}" for r in missed.itertuples()],
        "epochs": {str(int(e)): int(c) for e, c in pool["epochs"].value_counts().sort_index().items()},
        "train_loss": {"min": float(train_loss.min()), "max": float(train_loss.max())} if train_loss.size else {},
    }


def granulated(pool: pd.DataFrame, measure: str, n_resamples: int, seed: int = 0) -> dict[str, Any]:
    """Per target, Ψ of the measure over the varied pool's models that reached L* (τ = 0 where a sub-pool has none)."""
    kept = counted(pool.assign(sharpness=pool[measure].astype(float)))
    return {target: granulated_kendall(kept, measure, target, list(HYPERPARAMETERS), n_resamples=n_resamples, seed=seed,
                                       undefined="zero").as_dict()
            for target in TARGETS if target in kept.columns and kept[target].notna().any()}


def summarize(table: pd.DataFrame, n_resamples: int, seed: int = 0) -> dict[str, Any]:
    """equalized.json's numbers: each pool's counts, and per measure and pool the τ set of `progress_study.tau_set`
    (τ, partial τ given the training loss with its null value, stratified τ, per target), Ψ on the varied pool."""
    pools = {name: table[table["pool"] == name] for name in POOLS if (table["pool"] == name).any()}
    measures = {}
    for measure in MEASURES:
        if measure == "train_loss":  # the variable conditioned on: its partial τ given itself is not defined
            continue
        per_pool = {name: tau_set(pool.assign(sharpness=pool[measure].astype(float)), n_resamples, seed) for name, pool in pools.items()}
        if "varied" in pools:
            per_pool["granulated"] = granulated(pools["varied"], measure, n_resamples, seed)
        measures[measure] = per_pool
    return {"pools": {name: pool_counts(pool) for name, pool in pools.items()}, "measures": measures}


def params_record(params: EqualizedParams, inputs: EqualizedInputs) -> dict[str, Any]:
    """What the run used: its parameters, the grid, the seed pool's config and seeds, the panel's settings."""
    return {"arch": params.arch, "profile": params.profile, "params": dataclasses.asdict(params), "grid": dataclasses.asdict(params.grid),
            "target_loss": inputs.train_config.target_loss, "seed_train_config": dataclasses.asdict(inputs.train_config),
            "seeds": list(inputs.seeds), "measures_config": dataclasses.asdict(params.measures_config()),
            "n_resamples": params.resolved("n_resamples")}


def write_equalized(out_dir: str | Path, table: pd.DataFrame, summary: Mapping[str, Any], record: Mapping[str, Any]) -> Path:
    """equalized.csv, then equalized.json (last, atomically: its presence means the run finished)."""
    return write_step_files(out_dir, "equalized", table, {**record, **summary})


def read_equalized(results_dir: str | Path, arch: str) -> tuple[dict[str, Any], pd.DataFrame]:
    return read_step_files(results_dir, arch, "equalized")
