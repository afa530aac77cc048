"""The measures study of one architecture: which flatness measure tracks test loss, and on which pools.

notebooks/measures.py measures two pools of one architecture with the whole panel (`measures.compute_panel`):
the seed-only pool (the study's own models) and the varied pool (the grid of `grid.GRIDS`: learning rate ×
batch size × seeds). For each measure μ it reports Kendall τ(μ, test loss) on both pools, and on the varied
pool Jiang et al.'s (2020) granulated τ Ψ with each ψ_i and τ within each learning rate:

    <results_dir>/<arch>/measures.csv    one row per (pool, model): hyperparameters, seed, test loss, measures
    <results_dir>/<arch>/measures.json   per measure: τ with CI on each pool, Ψ and ψ_i with CIs, conditional τ
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..core.notebook import results_path
from ..core.config import check_choice, check_device, check_number, check_text, params_from_namespace
from .grid import GRIDS, HYPERPARAMETERS, Grid
from ..panel.measures import MEASURES, MeasuresConfig
from ..pools.pool import BACKENDS
from .protocol import spec
from ..core.subpools import conditional_kendall, granulated_kendall, kendall_where_defined
from .study import write_json_atomic

# Per profile: how many of the study's models form the seed-only pool, the worst-case restarts, the bootstrap.
PROFILES: dict[str, dict[str, Any]] = {
    "full": dict(n_seed_models=50, n_restarts=10, n_resamples=999, subset_rows=1024),
    "quick": dict(n_seed_models=None, n_restarts=2, n_resamples=199, subset_rows=128),
}
AVERAGE_RHO = 0.05  # σ_i = 0.05 |w_i| for the average-case sharpness, every architecture
# The quick profile's estimators, cut to check the chain (the full profile keeps MeasuresConfig's defaults).
QUICK_ESTIMATORS = dict(n_gaussian_draws=4, hessian_iters=6, n_hutchinson_probes=4, pac_bayes_steps=6)


@dataclass(frozen=True)
class MeasuresParams:
    """The measures notebook's parameters. None means the profile's value (PROFILES)."""

    arch: str
    profile: str = "full"
    n_seed_models: int | None = None  # None: the profile's (quick: the whole quick study pool)
    n_restarts: int | None = None
    n_resamples: int | None = None
    subset_rows: int | None = None
    device: str = "auto"
    backend: str = "auto"
    n_workers: int | None = None
    results_dir: str | None = None  # None: <repository root>/build/scratch (notebook.results_path)
    data_root: str | None = None

    def __post_init__(self) -> None:
        name = "parameter"
        check_choice(name, "arch", self.arch, tuple(GRIDS["full"]))
        check_choice(name, "profile", self.profile, tuple(PROFILES))
        check_choice(name, "backend", self.backend, BACKENDS)
        for field, minimum in (("n_seed_models", 3), ("n_restarts", 1), ("n_resamples", 1), ("subset_rows", 1), ("n_workers", 1)):
            if getattr(self, field) is not None:
                check_number(name, field, getattr(self, field), minimum=minimum, integer=True)
        if self.results_dir is not None:
            check_text(name, "results_dir", self.results_dir)
        if self.data_root is not None:
            check_text(name, "data_root", self.data_root)
        check_device(name, "device", self.device)

    @classmethod
    def from_namespace(cls, namespace: dict[str, Any]) -> "MeasuresParams":
        return params_from_namespace(cls, namespace)

    def resolved(self, field: str) -> Any:
        value = getattr(self, field)
        return PROFILES[self.profile][field] if value is None else value

    @property
    def out_dir(self) -> Path:
        return self.results_path / self.arch

    @property
    def results_path(self) -> Path:
        """`results_dir` resolved: None is the git-ignored scratch folder, a relative path is taken from the repository root."""
        return results_path(self.results_dir)

    @property
    def grid(self) -> Grid:
        return GRIDS[self.profile][self.arch]

    def measures_config(self) -> MeasuresConfig:
        """Table I's ρ and η for every model: the ascent's step does not follow a model's own learning rate,
        so that on the varied pool a measure cannot read the learning rate off its own settings. The
        average-case sharpness uses ρ = AVERAGE_RHO: at LeNet-5's worst-case ρ (1e-4) Gaussian noise moves
        the loss by about float32's resolution."""
        s = spec(self.arch)
        quick = QUICK_ESTIMATORS if self.profile == "quick" else {}
        return MeasuresConfig(rho=s.rho, lr=s.lr, n_restarts=self.resolved("n_restarts"), subset_rows=self.resolved("subset_rows"),
                              rho_average=AVERAGE_RHO, device=self.device, **quick)


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
    """measures.csv, then measures.json (last, atomically: its presence means the run finished)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    table.to_csv(out / "measures.csv", index=False)
    write_json_atomic(out / "measures.json", {**record, "measures": summary})
    return out / "measures.json"


def read_measures(results_dir: str | Path, arch: str) -> tuple[dict[str, Any], pd.DataFrame]:
    folder = Path(results_dir) / arch
    if not (folder / "measures.json").exists():
        raise FileNotFoundError(f"{folder / 'measures.json'} not found: run notebooks/measures.py for {arch}")
    return json.loads((folder / "measures.json").read_text()), pd.read_csv(folder / "measures.csv")


def params_record(params: MeasuresParams) -> dict[str, Any]:
    return {"arch": params.arch, "profile": params.profile, "params": dataclasses.asdict(params), "grid": dataclasses.asdict(params.grid),
            "measures_config": dataclasses.asdict(params.measures_config())}
