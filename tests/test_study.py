"""Notebook parameters become a validated StudyParams; results files round-trip."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from sharplib.stats import KendallResult
from sharplib.study import StudyParams, read_results, write_results
from tests.test_report import fake_table


def test_profile_defaults_and_overrides() -> None:
    full, quick = StudyParams("lenet5"), StudyParams("lenet5", profile="quick", n_models=4)
    assert full.seeds == list(range(50)) and full.sharpness_config().n_restarts == 50
    assert full.train_config().max_epochs == 10 and full.sharpness_config().rho == 1e-4
    assert quick.seeds == [0, 1, 2, 3] and quick.train_config().max_epochs == 1
    assert StudyParams("gat", rho=0.5).sharpness_config().rho == 0.5


def test_namespace_with_an_unknown_parameter_is_refused() -> None:
    before = {"x"}
    namespace = {"x": 1, "profile": "quick", "n_modles": 3, "_private": 0}
    with pytest.raises(ValueError, match="n_modles"):
        StudyParams.from_namespace(namespace, before, arch="fcnn")
    assert StudyParams.from_namespace({"x": 1, "profile": "quick"}, before, arch="fcnn").profile == "quick"


@pytest.mark.parametrize("field, value", [("n_models", 0), ("n_models", "50"), ("rho", -1.0), ("profile", "huge"), ("device", "gpu0"), ("n_restarts", 2.5),
                                          ("rho", math.inf), ("device", "cuda:99")])
def test_bad_values_name_the_parameter(field: str, value: object) -> None:
    with pytest.raises(ValueError, match=field if field != "device" else "device"):
        StudyParams("fcnn", **{field: value})


# Issue #12, rows 6 and 8: checked in the notebook's parameters cell, not when training reaches them.
def test_a_gpu_that_is_not_there_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="parameter.device: device 'cuda' asked for"):
        StudyParams("fcnn", device="cuda")


def test_a_results_dir_that_cannot_be_created_is_refused(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("")
    with pytest.raises(ValueError, match="parameter.results_dir .* cannot be created: .*a-file is not a folder"):
        StudyParams("fcnn", results_dir=str(tmp_path / "a-file" / "results"))
    assert StudyParams("fcnn", results_dir=str(tmp_path / "new" / "results")).results_dir  # creatable: fine, and not created yet
    assert not (tmp_path / "new").exists()


def test_results_round_trip(tmp_path: Path) -> None:
    params = StudyParams("fcnn", profile="quick", results_dir=str(tmp_path))
    table = fake_table(6, slope=1.0)
    tau = KendallResult(0.5, 0.1, 0.1, 0.9, 6)
    path = write_results(params, table, tau, {"training": 1.0, "sharpness": 2.0})
    summary, loaded = read_results(tmp_path, "fcnn")
    assert path == tmp_path / "fcnn" / "results.json" and json.loads(path.read_text()) == summary
    assert summary["tau"] == 0.5 and summary["tau_ci"] == [0.1, 0.9] and summary["n_models"] == 6
    assert summary["train_config"]["lr"] == 0.014 and summary["provenance"]["torch"]
    assert list(loaded["seed"]) == list(table["seed"])


def test_missing_results_say_what_to_run(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="gat notebook"):
        read_results(tmp_path, "gat")
