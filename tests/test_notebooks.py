"""The three study notebooks run under papermill with tiny parameters and write their results files.

LeNet-5 on the full FashionMNIST is too slow for a tiny run here (about 40 s per epoch per core);
its notebook runs end to end in tests/test_make.py (`make paper PROFILE=quick`), and here only
its parameter checks run.
"""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import papermill
import pytest
from scipy import stats

from tests.notebook_runner import parameters_cell, run_notebook

STUDIES = {"fcnn": "fcnn_abalone", "lenet5": "lenet5_fashionmnist", "gat": "gat_cora"}
TINY = dict(profile="quick", n_models=3, n_restarts=2, n_resamples=99, device="cpu")


@pytest.mark.parametrize("arch", sorted(STUDIES))
def test_parameters_cell_holds_literals_only(arch: str) -> None:
    source = parameters_cell(STUDIES[arch])
    for name in ("profile", "n_models", "n_restarts", "rho", "device", "results_dir"):
        assert f"{name} =" in source, f"{STUDIES[arch]}: parameter {name} missing"


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["fcnn", "gat"])
def test_tiny_run_writes_results(arch: str, tmp_path: Path, data_root: Path) -> None:
    run_notebook(STUDIES[arch], tmp_path, data_root, results_dir=str(tmp_path / "results"), **TINY)
    out = tmp_path / "results" / arch
    summary = json.loads((out / "results.json").read_text())
    models = pd.read_csv(out / "models.csv")
    assert {"tau", "p_value", "tau_ci", "n_models", "n_diverged", "train_config", "sharpness_config", "profile",
            "seconds", "provenance"} <= set(summary)
    assert summary["profile"] == "quick" and summary["n_models"] == 3 and summary["sharpness_config"]["n_restarts"] == 2
    assert {"git_commit", "torch", "device"} <= set(summary["provenance"])
    assert list(models["seed"]) == [0, 1, 2] and len(list((out / "pool").glob("seed*.pt"))) == 3
    assert {"epochs", "train_loss", "test_loss", "sharpness", "frac_below", "train_seconds", "sharpness_seconds"} <= set(models.columns)
    assert (models["sharpness"] > 0).all() and (models["epochs"] >= 1).all()
    if arch == "gat":
        assert models["test_accuracy"].between(0, 1).all()
    # the τ in results.json is Kendall's τ-b of the table beside it
    expected = stats.kendalltau(models["sharpness"], models["test_loss"])
    assert summary["tau"] == pytest.approx(expected.statistic) and summary["p_value"] == pytest.approx(expected.pvalue)
    assert summary["tau_ci"][0] <= summary["tau"] <= summary["tau_ci"][1]


@pytest.mark.slow
@pytest.mark.parametrize("arch, bad, message", [
    ("fcnn", {"n_modles": 3}, "n_modles"),
    ("lenet5", {"n_models": 0}, "n_models"),
    ("gat", {"n_restarts": "50"}, "n_restarts"),
])
def test_bad_parameter_stops_before_any_work(arch: str, bad: dict, message: str, tmp_path: Path, data_root: Path) -> None:
    with pytest.raises(papermill.PapermillExecutionError) as err:
        run_notebook(STUDIES[arch], tmp_path, data_root, results_dir=str(tmp_path / "results"), **bad)
    assert message in str(err.value)
    assert not (tmp_path / "results").exists(), "the notebook did work before checking its parameters"
