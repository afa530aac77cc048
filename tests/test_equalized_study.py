"""The equalized step: its parameters and inputs, its τ set on synthetic pools at L*, the writer, and the notebook end to end
on a tiny FCNN pool."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from sharplib.experiments import equalized_study
from sharplib.experiments.equalized_study import EqualizedParams, equalized_inputs, pool_counts, summarize
from sharplib.experiments.profiles import PROFILES
from sharplib.experiments.protocol import train_config
from sharplib.panel.measures import MEASURES
from tests.notebook_runner import run_notebook
from tests.test_notebooks import markdown_shown


def synthetic_pools(n_seed: int = 40, n_per_cell: int = 5, seed: int = 0) -> pd.DataFrame:
    """Two pools at L*: test loss = training loss + noise. `follows_train` reads only the training loss, `reads_test` the
    part of test loss the training loss does not explain; every other measure is noise."""
    rng = np.random.default_rng(seed)
    cells = [(lr, b) for lr in (0.007, 0.014, 0.028) for b in (32, 64, 128)]
    rows = [("seed", 0.014, 64, s) for s in range(n_seed)] + [("varied", lr, b, s) for lr, b in cells for s in range(n_per_cell)]
    table = pd.DataFrame(rows, columns=["pool", "lr", "batch_size", "seed"])
    n = len(table)
    train = rng.uniform(0.45, 0.51, n)
    test = train + rng.normal(0, 0.01, n)
    table = table.assign(train_loss=train, test_loss=test, test_accuracy=np.nan, diverged=False, reached_target=True,
                         epochs=rng.integers(3, 8, n))
    for measure in MEASURES:
        if measure not in table.columns:
            table[measure] = rng.normal(size=n)
    table["sharpness_adaptive"] = train * 10 + rng.normal(0, 0.05, n)  # follows the training loss only
    table["fisher_rao_norm"] = (test - train) * 100 + rng.normal(0, 0.2, n)  # reads test loss beyond it
    return table


def test_params_take_the_profile_and_name_bad_values() -> None:
    full = EqualizedParams("lenet5")
    assert full.grid == PROFILES["full"]["equalized"]["lenet5"]["grid"] and full.measures_config().n_restarts == 10
    assert EqualizedParams("fcnn", profile="quick", n_restarts=3).measures_config().n_restarts == 3
    for bad, name in (({"n_seed_models": 2}, "n_seed_models"), ({"n_restarts": 0}, "n_restarts"), ({"subset_rows": 0}, "subset_rows")):
        with pytest.raises(ValueError, match=name):
            EqualizedParams("fcnn", **bad)


def progress_record(seeds: list[int], target_loss: float = 0.51) -> tuple[dict, pd.DataFrame]:
    """progress.json's and progress.csv's parts the equalized step reads."""
    cfg = train_config("fcnn", target_loss=target_loss, max_epochs=10, min_epochs=1)
    table = pd.DataFrame({"pool": ["protocol"] * 3 + ["equalized"] * len(seeds), "seed": [0, 1, 2, *seeds]})
    return {"equalized_train_config": dataclasses.asdict(cfg)}, table


def test_inputs_are_the_progress_steps_equalized_pool() -> None:
    record, table = progress_record([0, 1, 2, 3])
    inputs = equalized_inputs(record, table, "cpu")
    assert inputs.seeds == (0, 1, 2, 3) and inputs.train_config.target_loss == 0.51 and inputs.train_config.device == "cpu"
    assert equalized_inputs(record, table, "cpu", n_seed_models=3).seeds == (0, 1, 2)
    with pytest.raises(ValueError, match="n_seed_models is 5.*holds 4"):
        equalized_inputs(record, table, "cpu", n_seed_models=5)
    with pytest.raises(ValueError, match="progress.py"):
        equalized_inputs(record, table[table["pool"] == "protocol"], "cpu")


def test_a_measure_that_follows_only_the_training_loss_stays_at_its_null_value() -> None:
    summary = summarize(synthetic_pools(), n_resamples=199)
    for pool in ("seed", "varied"):
        follows = summary["measures"]["sharpness_adaptive"][pool]["test_loss"]
        assert follows["tau"]["tau"] > 0.4, "its plain τ is high: the training loss ranks test loss"
        partial = follows["partial"]
        assert partial["ci_low"] <= partial["null_tau"] <= partial["ci_high"]
        reads = summary["measures"]["fisher_rao_norm"][pool]["test_loss"]["partial"]
        assert reads["ci_low"] > reads["null_tau"], "a measure that reads test loss beyond the training loss clears it"
    assert "train_loss" not in summary["measures"], "the variable conditioned on has no partial τ given itself"
    assert set(summary["measures"]["weight_norm"]) == {"seed", "varied", "granulated"}
    assert summary["measures"]["fisher_rao_norm"]["granulated"]["test_loss"]["psi"] > 0.2


def test_models_that_miss_L_star_are_counted_named_and_left_out() -> None:
    table = synthetic_pools()
    missed = (table["pool"] == "varied") & (table["lr"] == 0.007) & (table["batch_size"] == 128) & (table["seed"] < 2)
    table.loc[missed, "reached_target"] = False
    table.loc[missed, "fisher_rao_norm"] = 1e6  # would top the ranking if it were counted
    counts = pool_counts(table[table["pool"] == "varied"])
    assert (counts["n_models"], counts["n_used"], counts["n_missed_target"]) == (45, 43, 2)
    assert counts["missed_target"] == ["lr 0.007, batch 128, seed 0", "lr 0.007, batch 128, seed 1"]
    summary = summarize(table, n_resamples=99)
    assert summary["measures"]["fisher_rao_norm"]["varied"]["test_loss"]["tau"]["n"] == 43
    assert summary["measures"]["fisher_rao_norm"]["granulated"]["test_loss"]["psi"] > 0.2


def test_the_files_round_trip(tmp_path: Path) -> None:
    table = synthetic_pools(n_seed=6, n_per_cell=1)
    summary = summarize(table, n_resamples=99)
    path = equalized_study.write_equalized(tmp_path / "fcnn", table, summary, {"arch": "fcnn", "target_loss": 0.51})
    record, read = equalized_study.read_equalized(tmp_path, "fcnn")
    assert path.name == "equalized.json" and record["target_loss"] == 0.51 and set(record["pools"]) == {"seed", "varied"}
    assert len(read) == len(table) and read["reached_target"].all()
    with pytest.raises(FileNotFoundError, match="equalized.py"):
        equalized_study.read_equalized(tmp_path, "gat")


@pytest.mark.notebook
@pytest.mark.slow
def test_tiny_fcnn_run_writes_equalized(tmp_path: Path, data_root: Path) -> None:
    results = tmp_path / "results"
    record, table = progress_record([0, 1, 2, 3, 4, 5], target_loss=0.6)
    (results / "fcnn").mkdir(parents=True)
    (results / "fcnn" / "progress.json").write_text(json.dumps(record))
    table.to_csv(results / "fcnn" / "progress.csv", index=False)
    nb = run_notebook("equalized", tmp_path, data_root, arch="fcnn", profile="quick", n_resamples=99, device="cpu",
                      results_dir=str(results))
    written, models = equalized_study.read_equalized(results, "fcnn")
    grid = PROFILES["quick"]["equalized"]["fcnn"]["grid"]
    assert written["pools"]["seed"]["n_models"] == 6 and written["pools"]["varied"]["n_models"] == len(grid.cells("fcnn")) * grid.n_seeds
    assert written["seeds"] == [0, 1, 2, 3, 4, 5] and written["target_loss"] == 0.6 and written["provenance"]["device"] == "cpu"
    reached = models["reached_target"].astype(bool)
    assert (models.loc[reached, "train_loss"] < 0.7).all(), "a model at L* = 0.6 (epoch loss) has a training loss near it"
    assert (reached | (models["epochs"] >= 10)).all(), "a model short of L* ran to its cap"
    assert {"sharpness_adaptive", "hessian_trace", "generalization_gap"} <= set(models.columns)
    assert "For FCNN" in markdown_shown(nb)
