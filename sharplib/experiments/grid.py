"""Pools that vary their training: the hyperparameter grid behind the measures study.

The report's pools differ only by the seed. Jiang et al. (2020) judge a generalization measure on pools
that vary one training hyperparameter at a time, so each architecture here also trains a grid:

    learning rate  η ∈ {½, 1, 2} × Table I's η
    batch size     B ∈ {32, 64, 128}
    seeds          5 per cell (0–4)

45 models per architecture, trained through `pool.train_pool`, one folder per cell; each profile's grid is in `profiles.PROFILES`.
The equalized step trains the same grid to a common epoch loss L* instead of the protocol's stop (`target_cap`).
"""
from __future__ import annotations

import dataclasses
import itertools
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from ..pools.pool import PoolEntry, train_pool
from .protocol import spec, train_config
from ..core.task import Task
from ..core.train import TrainConfig


@dataclass(frozen=True)
class Grid:
    """Which training hyperparameters vary, over which values, and how many seeds fill each cell."""

    lr_factors: tuple[float, ...]  # × Table I's learning rate
    batch_sizes: tuple[int, ...]
    n_seeds: int
    max_epochs: int | None = None  # None: the protocol's; the quick profile caps LeNet-5

    def cells(self, arch: str) -> list[dict[str, Any]]:
        """Every (lr, batch_size) of the grid, the learning rate resolved against Table I."""
        return [{"lr": spec(arch).lr * f, "lr_factor": f, "batch_size": b} for f, b in itertools.product(self.lr_factors, self.batch_sizes)]


HYPERPARAMETERS = ("lr", "batch_size")  # the columns of a grid's table that vary


def cell_folder(out_dir: Path, cell: dict[str, Any]) -> Path:
    return Path(out_dir) / f"lr{cell['lr_factor']:g}x_bs{cell['batch_size']}"


def target_cap(max_epochs: int, cell: dict[str, Any], base_batch_size: int) -> int:
    """The epoch cap of a cell trained to L*: `max_epochs` (the cap of Table I's η and B) times how much slower the cell
    progresses, never less. SGD moves a model about η·N/B per epoch, so a cell needs about (B / B₀) / (η / η₀) times the epochs."""
    # cap = ⌈cap₀ · max(1, (B / B₀) / (η / η₀))⌉
    return math.ceil(max_epochs * max(1.0, cell["batch_size"] / base_batch_size / cell["lr_factor"]))


def cell_config(arch: str, grid: Grid, cell: dict[str, Any], device: str, base: TrainConfig | None = None) -> TrainConfig:
    """How one cell's models train. base None: Table I's config with the cell's η and B (and the grid's cap, if set).
    A base with a target L* (the equalized step's): the base with the cell's η and B and its cap scaled by `target_cap`."""
    if base is None:
        overrides = {"lr": cell["lr"], "batch_size": cell["batch_size"], "device": device}
        if grid.max_epochs is not None:
            overrides.update(max_epochs=grid.max_epochs, min_epochs=min(grid.max_epochs, spec(arch).min_epochs))
        return train_config(arch, **overrides)
    if base.target_loss is None:
        raise ValueError("cell_config: base must set target_loss (a grid trained to L*); base None gives the protocol's grid")
    return dataclasses.replace(base, lr=cell["lr"], batch_size=cell["batch_size"], device=device,
                               max_epochs=target_cap(base.max_epochs, cell, base.batch_size))


def train_grid(arch: str, task: Task, grid: Grid, out_dir: str | Path, *, base: TrainConfig | None = None, device: str = "auto",
               backend: str = "auto", n_workers: int | None = None, progress: bool = True) -> pd.DataFrame:
    """Train every cell of `grid` (one `train_pool` each, into out_dir/<cell>/, configs by `cell_config`) and return one
    row per model: its hyperparameters, seed, checkpoint and TrainResult fields. Trained models are reused, as in the study."""
    rows = []
    for cell in grid.cells(arch):
        entries: list[PoolEntry] = train_pool(
            arch,
            task,
            cell_config(arch, grid, cell, device, base),
            list(range(grid.n_seeds)),
            cell_folder(out_dir, cell),
            backend=backend,
            n_workers=n_workers,
            progress=progress,
        )
        rows += [{**cell, "seed": e.seed, "checkpoint": str(e.checkpoint), "reused": e.reused, **_result_columns(e)} for e in entries]
    return pd.DataFrame(rows)


def _result_columns(entry: PoolEntry) -> dict[str, Any]:
    r = entry.result
    return {
        "epochs": r.epochs,
        "train_loss": r.train_loss,
        "test_loss": r.test_loss,
        "test_accuracy": r.test_accuracy,
        "diverged": r.diverged,
        "reached_target": r.reached_target,
    }
