"""Sharpness and its τ along training, on a tiny FCNN pool checkpointed after epochs 1 and 2."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from sharplib.core.conditional import partial_kendall
from sharplib.pools.pool import load_model
from sharplib.experiments.protocol import train_config
from sharplib.core.sharpness import SharpnessConfig, estimate_sharpness
from sharplib.core.task import Task
from sharplib.experiments.trajectory import epoch_pools, sharpness_along_training, tau_along_training

FEW = 99


@pytest.fixture(scope="module")
def along(abalone_task: Task, tmp_path_factory: pytest.TempPathFactory) -> tuple[Task, dict, pd.DataFrame, SharpnessConfig]:
    task = dataclasses.replace(abalone_task, x_train=abalone_task.x_train[:512], y_train=abalone_task.y_train[:512])
    cfg = train_config("fcnn", device="cpu", target_loss=0.3)  # epoch_pools replaces the stopping rule
    pools = epoch_pools("fcnn", task, cfg, list(range(6)), [2, 1], tmp_path_factory.mktemp("epochs"), progress=False)
    sharpness_cfg = SharpnessConfig(rho=0.025, lr=0.014, n_restarts=2, device="cpu")
    table = sharpness_along_training({e: [m.checkpoint for m in pool] for e, pool in pools.items()}, task, sharpness_cfg)
    return task, pools, table, sharpness_cfg


def test_epoch_pools_train_exactly_each_epoch(along) -> None:
    _, pools, _, _ = along
    assert sorted(pools) == [1, 2]
    for epoch, pool in pools.items():
        assert [m.result.epochs for m in pool] == [epoch] * 6 and all(m.result.reached_target is None for m in pool)
        assert all(Path(m.checkpoint).parent.name == f"epoch{epoch:03d}" for m in pool)
    # Epoch 1 of the 2-epoch run is the 1-epoch pool: the same steps.
    assert [m.result.epoch_losses[0] for m in pools[2]] == [m.result.epoch_losses[0] for m in pools[1]]


def test_sharpness_along_training_rows(along) -> None:
    task, pools, table, sharpness_cfg = along
    assert list(table["epoch"]) == [1] * 6 + [2] * 6 and list(table["seed"]) == list(range(6)) * 2
    assert {"test_loss", "generalization_gap", "train_loss"} <= set(table.columns) and "test_error" not in table.columns
    model, _ = load_model(pools[2][3].checkpoint)
    assert table["sharpness"].iloc[9] == pytest.approx(estimate_sharpness(model, task, sharpness_cfg).mean)
    np.testing.assert_allclose(table["generalization_gap"], table["test_loss"] - table["train_loss"])


def test_tau_along_training(along) -> None:
    _, _, table, _ = along
    summary = tau_along_training(table, min_per_stratum=3, n_resamples=FEW)
    assert list(summary["epoch"]) == [1, 2] and list(summary["n"]) == [6, 6] and list(summary["n_dropped"]) == [0, 0]
    second = table[table["epoch"] == 2]
    direct = partial_kendall(second["sharpness"], second["test_loss"], second["train_loss"], n_resamples=FEW)
    assert summary["partial_tau"].iloc[1] == pytest.approx(direct.tau)
    assert summary["tau_target_given"].iloc[1] == pytest.approx(direct.tau_yz)
    assert (summary["n_strata"] == 2).all()
    # A diverged model is left out and counted.
    broken = table.assign(sharpness=table["sharpness"].where(table.index != 0, np.nan))
    assert list(tau_along_training(broken, min_per_stratum=3, n_resamples=FEW)["n_dropped"]) == [1, 0]
