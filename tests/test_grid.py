"""The hyperparameter grid: its cells come from Table I, each cell is a resumable pool of its own, and trained to L* a
slower cell gets a later cap."""
from __future__ import annotations

from pathlib import Path

import pytest

from sharplib.experiments.grid import HYPERPARAMETERS, Grid, cell_config, cell_folder, target_cap, train_grid
from sharplib.experiments.profiles import PROFILES
from sharplib.experiments.protocol import spec, train_config
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


def test_a_slower_cell_gets_a_later_cap_never_an_earlier_one() -> None:
    # cap = ⌈cap₀ · max(1, (B / B₀) / (η / η₀))⌉ with B₀ = 64
    assert target_cap(12, {"lr_factor": 0.5, "batch_size": 128}, 64) == 48
    assert target_cap(12, {"lr_factor": 1.0, "batch_size": 64}, 64) == 12
    assert target_cap(12, {"lr_factor": 2.0, "batch_size": 32}, 64) == 12, "a faster cell keeps the base cap"
    assert target_cap(10, {"lr_factor": 1.0, "batch_size": 96}, 64) == 15


def test_cell_config_is_table_one_or_the_base_trained_to_L_star() -> None:
    grid = Grid(lr_factors=(0.5, 1.0), batch_sizes=(32, 128), n_seeds=1)
    cell = grid.cells("lenet5")[1]  # η × 0.5, B = 128
    assert cell_config("lenet5", grid, cell, "cpu") == train_config("lenet5", lr=cell["lr"], batch_size=128, device="cpu")
    base = train_config("lenet5", target_loss=0.37, max_epochs=12, min_epochs=1)
    cfg = cell_config("lenet5", grid, cell, "cpu", base)
    assert (cfg.lr, cfg.batch_size, cfg.target_loss, cfg.max_epochs, cfg.min_epochs, cfg.device) == (cell["lr"], 128, 0.37, 48, 1, "cpu")
    assert cfg.weight_decay == base.weight_decay, "everything but η, B and the cap comes from the base"
    with pytest.raises(ValueError, match="target_loss"):
        cell_config("lenet5", grid, cell, "cpu", train_config("lenet5"))


def test_a_grid_trained_to_L_star_stops_each_model_there_or_names_it(abalone_task: Task, tmp_path: Path) -> None:
    grid = Grid(lr_factors=(0.5, 2.0), batch_sizes=(32, 128), n_seeds=1)
    base = train_config("fcnn", target_loss=0.6, max_epochs=2, min_epochs=1)
    table = train_grid("fcnn", abalone_task, grid, tmp_path, base=base, device="cpu", backend="batched", progress=False)
    assert table["reached_target"].isin([True, False]).all()
    slow = table[(table["lr_factor"] == 0.5) & (table["batch_size"] == 128)].iloc[0]
    assert slow["epochs"] <= 8 and (slow["reached_target"] or slow["epochs"] == 8), "the slowest cell's cap is 2 × 4"
    for row in table.itertuples():
        assert row.reached_target or row.epochs == target_cap(2, {"lr_factor": row.lr_factor, "batch_size": row.batch_size}, 64)
