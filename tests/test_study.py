"""Notebook parameters become a validated StudyParams; results files round-trip."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from sharplib.core.config import check_device, check_text, parameter_names, params_from_namespace
from sharplib.core.notebook import RunEarlierCell
from sharplib.core.stats import KendallResult
from sharplib.experiments.protocol import TABLE1
from sharplib.experiments.study import StudyParams, introduction, read_results, write_results
from tests.test_report import fake_table


def test_profile_defaults_and_overrides() -> None:
    full, quick = StudyParams("lenet5"), StudyParams("lenet5", profile="quick", n_models=4)
    assert full.seeds == list(range(50)) and full.sharpness_config().n_restarts == 50
    assert full.train_config().max_epochs == 10 and full.sharpness_config().rho == 1e-4
    assert quick.seeds == [0, 1, 2, 3] and quick.train_config().max_epochs == 1
    assert StudyParams("gat", rho=0.5).sharpness_config().rho == 0.5


def test_the_quick_profile_trains_lenet5_on_its_first_6000_images() -> None:
    assert StudyParams("lenet5", profile="quick").resolved("train_rows") == 6000
    assert StudyParams("lenet5", profile="quick", train_rows=100).resolved("train_rows") == 100
    assert [
        StudyParams(arch, profile=p).resolved("train_rows")
        for arch in TABLE1
        for p in ("full", "quick")
        if (arch, p) != ("lenet5", "quick")
    ] == [None] * 5
    assert "training on the first 6000 training images only" in introduction(StudyParams("lenet5", profile="quick"))
    assert "training on the first" not in introduction(StudyParams("lenet5"))


def test_namespace_with_an_unknown_parameter_is_refused() -> None:
    # `In`: the kernel's input history, the check cell last, the parameters and papermill's cell before it
    history = ["import x", 'arch = "fcnn"\nprofile = "quick"', "# Parameters\nn_modles = 3\n", "check"]
    with pytest.raises(ValueError, match="n_modles"):
        StudyParams.from_namespace({"In": history, "arch": "fcnn", "profile": "quick", "n_modles": 3})
    params = StudyParams.from_namespace({"In": history[:2] + history[3:], "x": 1, "arch": "gat", "profile": "quick"})
    assert (params.arch, params.profile) == ("gat", "quick")
    with pytest.raises(ValueError, match=r"parameter\.arch must be one of \['fcnn', 'lenet5', 'gat'\], got 'resnet'"):
        StudyParams.from_namespace({"arch": "resnet"})


@pytest.mark.parametrize("arch, title, words", [
    ("fcnn", "FCNN on Abalone", ["10 → 64 → 64 → 1", "4177", "training rows", "mean squared error", "at most 10 epochs"]),
    ("lenet5", "LeNet-5 on FashionMNIST", ["BatchNorm", "0.2860", "training images", "weight decay 0.005", "running statistics"]),
    ("gat", "GAT on Cora", ["GAT(1433, 8, num_layers=2, out_channels=7, dropout=0.6", "binary", "not row-normalized",
                            "attention coefficients", "training nodes", "at least 10 and at most 20 epochs"]),
])
def test_introduction_is_the_architectures_own(arch: str, title: str, words: list[str]) -> None:
    text = introduction(StudyParams(arch, n_models=7, rho=0.5, results_dir="results"))
    assert text.startswith(f"# Does adaptive sharpness predict test loss? {title}\n")
    for word in words + ["pool of 7", "ρ = 0.5", f"results/{arch}/"]:
        assert word in text, f"{arch}: {word!r} missing"
    others = [s.dataset_name for a, s in TABLE1.items() if a != arch]
    assert not any(name in text for name in others), "another architecture's words"


def test_introduction_follows_the_profile() -> None:
    assert "at most 1 epoch," in introduction(StudyParams("lenet5", profile="quick"))


def test_params_from_namespace_reads_fields_and_checks_the_parameter_cells_names() -> None:
    namespace = {"x": 1, "_private": 2, "arch": "gat", "n_models": 4, "table": object()}
    params = params_from_namespace(StudyParams, namespace)  # no history (plain exec): the fields only
    assert (params.arch, params.n_models) == ("gat", 4)
    # a second Run All: the history holds the first run's cells too, only the run before the check counts
    first_run = ["import sharplib", 'arch = "gat"\nn_models = 4', "params = check()", "table = 1"]
    assert params_from_namespace(StudyParams, {**namespace, "In": first_run * 2}) == params
    with pytest.raises(ValueError, match=r"unknown field\(s\) \['x'\]"):
        params_from_namespace(StudyParams, {**namespace, "In": ["import sharplib", 'arch = "gat"', "x = 1", "check"]})
    assert parameter_names(["a = 1", "b = f()", "c = [1, 2]  # note", "# Parameters\nd = 'x'\n", "check"]) == {"c", "d"}


def test_a_check_run_before_the_parameters_says_which_cell_to_run() -> None:
    with pytest.raises(RunEarlierCell, match="run the cell tagged `parameters`"):
        params_from_namespace(StudyParams, {"In": ["check"]})


@pytest.mark.parametrize("value", [None, "", "  ", 3])
def test_check_text_names_the_field(value: object) -> None:
    with pytest.raises(ValueError, match=r"owner\.name must be a non-empty string"):
        check_text("owner", "name", value)


@pytest.mark.parametrize("value, message", [("gpu", "must be 'auto', 'cpu', 'cuda' or 'cuda:N', got 'gpu'"), (None, "non-empty string")])
def test_check_device_names_the_field(value: object, message: str) -> None:
    for good in ("auto", "cpu", *(("cuda", "cuda:0") if torch.cuda.is_available() else ())):  # a GPU only where there is one
        check_device("owner", "device", good)
    with pytest.raises(ValueError, match=r"owner\.device") as err:
        check_device("owner", "device", value)
    assert message in str(err.value)


@pytest.mark.parametrize(
    "field, value",
    [
        ("n_models", 0),
        ("n_models", "50"),
        ("rho", -1.0),
        ("profile", "huge"),
        ("device", "gpu0"),
        ("n_restarts", 2.5),
        ("rho", math.inf),
        ("device", "cuda:99"),
        ("train_rows", 0),
        ("train_rows", 60.5),
    ],
)
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
    assert summary["train_rows"] is None and summary["params"]["train_rows"] is None  # FCNN trains on every row
    assert list(loaded["seed"]) == list(table["seed"])


def test_missing_results_say_what_to_run(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="gat notebook"):
        read_results(tmp_path, "gat")
