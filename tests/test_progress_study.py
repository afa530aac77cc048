"""The progress study: its parameters, its τ set on synthetic pools, the writer, and the notebook end to end on a tiny FCNN pool."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from sharplib.experiments.profiles import PROFILES
from sharplib.experiments import progress_study
from sharplib.experiments.progress_study import ProgressParams, counted, pool_summary, tau_set
from sharplib.core.stats import KendallResult
from sharplib.experiments.study import StudyParams, write_results
from tests.notebook_runner import check_parameters, parameters_cell, run_notebook
from tests.test_notebooks import markdown_shown


def synthetic_pool(n: int = 40, seed: int = 0, pool: str = "protocol", beyond: bool = False) -> pd.DataFrame:
    """A pool whose test loss follows the training loss; sharpness follows the training loss too, and (beyond=True) the rest of
    test loss."""
    rng = np.random.default_rng(seed)
    train = rng.uniform(0.4, 0.6, n)
    test = train + rng.normal(0, 0.02, n)
    sharp = (test - train) * 50 + rng.normal(0, 0.1, n) if beyond else train * 10 + rng.normal(0, 0.5, n)
    return pd.DataFrame({"seed": range(n), "epochs": rng.integers(3, 6, n), "train_loss": train, "test_loss": test, "test_accuracy": np.nan,
                         "diverged": False, "sharpness": sharp, "pool": pool, "epoch": np.nan, "reached_target": None})


def test_params_resolve_the_profile_and_the_architecture() -> None:
    full = ProgressParams("gat")
    cap = PROFILES["full"]["progress"]["gat"]["max_epochs"]
    assert (full.n, full.L_star, full.cap, full.resamples) == (50, progress_study.TARGET_LOSS["gat"], cap, 999)
    quick = ProgressParams("lenet5", profile="quick", target_loss=0.3, max_epochs=4)
    assert (quick.n, quick.L_star, quick.cap) == (PROFILES["quick"]["progress"]["lenet5"]["n_models"], 0.3, 4)
    assert quick.trajectory_models <= quick.n and quick.trajectory_epochs


@pytest.mark.parametrize(
    "bad, message",
    [
        ({"arch": "resnet"}, "arch"),
        ({"arch": "fcnn", "profile": "medium"}, "profile"),
        ({"arch": "fcnn", "n_models": 2}, "n_models"),
        ({"arch": "fcnn", "target_loss": 0}, "target_loss"),
        ({"arch": "fcnn", "target_loss": "low"}, "target_loss"),
        ({"arch": "fcnn", "max_epochs": 0}, "max_epochs"),
        ({"arch": "fcnn", "device": "tpu"}, "device"),
        ({"arch": "fcnn", "backend": "mpi"}, "backend"),
    ],
)
def test_bad_parameters_are_named(bad: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ProgressParams(**bad)


def test_equalized_config_trains_to_L_star_from_the_first_epoch() -> None:
    study_train = {"lr": 0.236, "max_epochs": 20, "min_epochs": 10, "device": "auto"}
    cfg = ProgressParams("gat", device="cpu").equalized_config(study_train)
    assert (cfg.target_loss, cfg.max_epochs, cfg.min_epochs, cfg.lr, cfg.device) == (
        progress_study.TARGET_LOSS["gat"],
        PROFILES["full"]["progress"]["gat"]["max_epochs"],
        1,
        0.236,
        "cpu",
    )
    assert ProgressParams("gat").trajectory_config(study_train).target_loss is None


def test_tau_set_matches_scipy_and_reads_training_progress() -> None:
    table = synthetic_pool()
    taus = tau_set(table, n_resamples=199)
    assert set(taus) == {"test_loss", "generalization_gap"}, "a regression has no test error"
    expected = stats.kendalltau(table["sharpness"], table["test_loss"]).statistic
    assert taus["test_loss"]["tau"]["tau"] == pytest.approx(expected) and expected > 0.3
    partial = taus["test_loss"]["partial"]
    # sharpness knows only the training loss: its partial τ stays near its null value, far from its plain τ
    assert partial["ci_low"] <= partial["null_tau"] <= partial["ci_high"] and partial["tau"] < expected
    beyond = tau_set(synthetic_pool(beyond=True), n_resamples=199)["test_loss"]
    assert beyond["stratified"]["ci_low"] > 0 and beyond["partial"]["ci_low"] > beyond["partial"]["null_tau"]


def test_models_that_missed_L_star_are_counted_named_and_left_out() -> None:
    table = synthetic_pool(12, pool="equalized").assign(reached_target=True)
    table.loc[[2, 7], "reached_target"] = False
    table.loc[5, "diverged"] = True
    summary = pool_summary(table, n_resamples=99)
    assert (summary["n_models"], summary["n_used"], summary["n_missed_target"], summary["missed_target_seeds"], summary["n_diverged"]) == (
        12,
        9,
        2,
        [2, 7],
        1,
    )
    assert summary["taus"]["test_loss"]["tau"]["n"] == 9 and len(counted(table)) == 9


def test_writer_round_trips(tmp_path: Path) -> None:
    table = progress_study.with_targets(
        pd.concat([synthetic_pool(10), synthetic_pool(10, 1, "equalized").assign(reached_target=True)], ignore_index=True)
    )
    trajectory = pd.DataFrame([{"epoch": 1, "tau": 0.1}])
    summary = progress_study.summarize(table, trajectory, table["epochs"], n_resamples=99)
    path = progress_study.write_progress(tmp_path / "fcnn", table, summary, {"arch": "fcnn", "target_loss": 0.51})
    record, read = progress_study.read_progress(tmp_path, "fcnn")
    assert path.name == "progress.json" and record["target_loss"] == 0.51 and set(record["pools"]) == {"protocol", "equalized"}
    assert len(read) == 20 and {"pool", "seed", "sharpness", "generalization_gap", "reached_target"} <= set(read.columns)
    assert progress_study.pool_summary(read[read["pool"] == "equalized"], 99)["n_used"] == 10, "reached_target survives the CSV"
    with pytest.raises(FileNotFoundError, match="progress.py"):
        progress_study.read_progress(tmp_path, "gat")


def test_parameters_cell_is_literals_and_is_checked() -> None:
    assert "target_loss" in parameters_cell("progress")
    with pytest.raises(ValueError, match="n_modles"):
        check_parameters("progress", setup={"progress_study": progress_study, "__builtins__": __builtins__, "_before": set()}, n_modles=3)


def tiny_study(results_dir: Path, n: int = 6) -> None:
    """A study's results for the FCNN as notebooks/study.py writes them, with made-up per-model numbers."""
    params = StudyParams("fcnn", profile="quick", n_models=n, n_restarts=2, n_resamples=99, device="cpu", results_dir=str(results_dir))
    pool = synthetic_pool(n)
    table = pool[["seed", "epochs", "train_loss", "test_loss", "test_accuracy", "diverged", "sharpness"]].assign(
        trained_by="batched", sharpness_std=0.0, frac_below=0.0, train_seconds=0.0, sharpness_seconds=0.0)
    write_results(params, table, KendallResult(0.1, 0.5, -0.2, 0.4, n), {"training": 0.0})


@pytest.mark.notebook
@pytest.mark.slow
def test_tiny_fcnn_run_writes_progress(tmp_path: Path, data_root: Path) -> None:
    results = tmp_path / "results"
    tiny_study(results)
    nb = run_notebook("progress", tmp_path, data_root, arch="fcnn", profile="quick", n_models=6, n_resamples=99, device="cpu",
                      results_dir=str(results))
    record, table = progress_study.read_progress(results, "fcnn")
    assert record["target_loss"] == progress_study.TARGET_LOSS["fcnn"] and record["provenance"]["device"] == "cpu"
    assert set(record["pools"]) == {"protocol", "equalized"} and record["pools"]["equalized"]["n_models"] == 6
    assert [row["epoch"] for row in record["trajectory"]] == list(PROFILES["quick"]["progress"]["fcnn"]["trajectory_epochs"])
    assert (table["pool"].value_counts().to_dict()) == {"protocol": 6, "equalized": 6, "trajectory": 12}
    reached = table[table["pool"] == "equalized"]
    assert all(reached["reached_target"].astype(str) == "True") or record["pools"]["equalized"]["n_missed_target"] > 0
    assert "For FCNN" in markdown_shown(nb)
