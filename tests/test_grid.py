"""The hyperparameter grid: its cells come from Table I, and each cell is a resumable pool of its own."""
from __future__ import annotations

from pathlib import Path

import pytest

from sharplib.experiments.grid import HYPERPARAMETERS, Grid, cell_folder, train_grid
from sharplib.experiments.profiles import PROFILES
from sharplib.experiments.protocol import spec
from sharplib.core.task import Task


def test_full_grid_is_three_by_three_by_five() -> None:
    for arch, row in PROFILES["full"]["measures"].items():
        grid = row["grid"]
        cells = grid.cells(arch)
        assert len(cells) == 9 and grid.n_seeds == 5
        assert sorted({c["lr"] for c in cells}) == pytest.approx([spec(arch).lr * f for f in (0.5, 1.0, 2.0)])
        assert sorted({c["batch_size"] for c in cells}) == [32, 64, 128]
    for arch, row in PROFILES["quick"]["measures"].items():  # Ψ needs two values of every hyperparameter
        assert all(len({c[h] for c in row["grid"].cells(arch)}) >= 2 for h in HYPERPARAMETERS)


def test_train_grid_trains_each_cell_and_resumes(abalone_task: Task, tmp_path: Path) -> None:
    grid = Grid(lr_factors=(0.5, 2.0), batch_sizes=(32, 128), n_seeds=2, max_epochs=2)
    table = train_grid("fcnn", abalone_task, grid, tmp_path, device="cpu", backend="batched", progress=False)
    assert len(table) == 8 and not table["reused"].any()
    assert set(zip(table["lr"], table["batch_size"])) == {(c["lr"], c["batch_size"]) for c in grid.cells("fcnn")}
    assert all(Path(p).parent == cell_folder(tmp_path, c) for p, c in zip(table["checkpoint"], table.to_dict("records")))
    # same seed, other learning rate: another model
    first = table[(table["seed"] == 0) & (table["batch_size"] == 32)]
    assert first["test_loss"].nunique() == 2
    again = train_grid("fcnn", abalone_task, grid, tmp_path, device="cpu", backend="batched", progress=False)
    assert again["reused"].all() and list(again["test_loss"]) == list(table["test_loss"])
