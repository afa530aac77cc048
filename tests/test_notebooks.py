"""The study notebook (notebooks/study.py) runs under papermill, once per architecture, with tiny
parameters, and writes its results files and a lab report that reads on its own.

LeNet-5 on the full FashionMNIST is too slow for a tiny run here (about 40 s per epoch per core);
it runs end to end in tests/test_make.py (`make paper PROFILE=quick`), and here only its parameter
checks run.
"""
from __future__ import annotations

import json
from pathlib import Path

import nbformat
import pandas as pd
import papermill
import pytest
from scipy import stats

from sharplib.experiments import study
from sharplib.experiments.protocol import spec
from sharplib.experiments.study import StudyParams, introduction
from tests.notebook_runner import check_parameters, parameters_cell, run_notebook

TINY = dict(profile="quick", n_models=3, n_restarts=2, n_resamples=99, device="cpu")
TITLES = {"fcnn": "FCNN on Abalone", "lenet5": "LeNet-5 on FashionMNIST", "gat": "GAT on Cora"}


def markdown_shown(nb: nbformat.NotebookNode) -> str:
    """The Markdown the notebook's code cells displayed."""
    return "".join(o.get("data", {}).get("text/markdown", "") for c in nb.cells if c.cell_type == "code"
                   for o in c.get("outputs", []) if o.output_type == "display_data")


def test_parameters_cell_holds_literals_only() -> None:
    source = parameters_cell("study")
    for name in ("arch", "profile", "n_models", "n_restarts", "rho", "device", "results_dir"):
        assert f"{name} =" in source, f"study: parameter {name} missing"


def test_one_study_notebook_for_all_architectures() -> None:
    notebooks = Path(__file__).resolve().parents[1] / "notebooks"
    assert (notebooks / "study.py").is_file()
    assert not [name for name in ("fcnn_abalone.py", "lenet5_fashionmnist.py", "gat_cora.py") if (notebooks / name).exists()]


@pytest.mark.parametrize("arch", sorted(TITLES))
def test_check_cell_builds_the_params_of_the_arch(arch: str) -> None:
    setup = {"study": study, "spec": spec}  # what the imports cell gives the check cell
    namespace = check_parameters("study", setup, arch=arch, profile="quick")
    assert namespace["params"] == StudyParams(arch, profile="quick")
    assert namespace["arch_spec"].arch == arch and namespace["train_cfg"] == namespace["params"].train_config()


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["fcnn", "gat"])
def test_tiny_run_writes_results(arch: str, tmp_path: Path, data_root: Path) -> None:
    nb = run_notebook("study", tmp_path, data_root, arch=arch, results_dir=str(tmp_path / "results"), **TINY)
    out = tmp_path / "results" / arch
    summary = json.loads((out / "results.json").read_text())
    models = pd.read_csv(out / "models.csv")
    assert {"tau", "p_value", "tau_ci", "n_models", "n_diverged", "train_config", "sharpness_config", "profile",
            "seconds", "provenance"} <= set(summary)
    assert summary["arch"] == arch and summary["params"]["arch"] == arch
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
    # the executed notebook reads on its own: its architecture's title and words, the run's settings
    shown = markdown_shown(nb)
    params = StudyParams(arch, results_dir=str(tmp_path / "results"), **TINY)
    assert shown.strip() == introduction(params).strip()
    assert f"# Does adaptive sharpness predict test loss? {TITLES[arch]}" in shown and "pool of 3" in shown
    assert not any(title in shown for other, title in TITLES.items() if other != arch)


@pytest.mark.parametrize("arch, bad, message", [
    ("fcnn", {"n_modles": 3}, "unknown field(s) ['n_modles']"),
    ("lenet5", {"n_models": 0}, "parameter.n_models must be >= 3"),
    ("gat", {"n_restarts": "50"}, "parameter.n_restarts must be an integer"),
    ("resnet", {}, "parameter.arch must be one of ['fcnn', 'lenet5', 'gat'], got 'resnet'"),
])
def test_bad_parameter_is_named_by_the_check_cell(arch: str, bad: dict, message: str) -> None:
    setup = {"study": study, "spec": spec}
    with pytest.raises(ValueError) as err:
        check_parameters("study", setup, arch=arch, **bad)
    assert message in str(err.value)


@pytest.mark.slow
def test_bad_parameter_stops_the_papermill_run_before_any_work(tmp_path: Path, data_root: Path) -> None:
    with pytest.raises(papermill.PapermillExecutionError) as err:
        run_notebook("study", tmp_path, data_root, arch="fcnn", results_dir=str(tmp_path / "results"), n_modles=3)
    assert "unknown field(s) ['n_modles']" in str(err.value)
    assert not (tmp_path / "results").exists(), "the notebook did work before checking its parameters"


# ---------------------------------------------------------------- a live kernel, as in JupyterLab
@pytest.mark.slow
def test_study_survives_edits_reruns_and_cells_run_too_early(tmp_path: Path, data_root: Path) -> None:
    from tests.kernel_session import code_cells, edit, session

    results = tmp_path / "results"
    cells = edit(code_cells("study"), results_dir=str(results), n_models=3, n_restarts=2, device="cpu")
    at = next(i for i, c in enumerate(cells) if c.startswith("arch = "))
    cells.insert(at + 1, "# Parameters\nn_resamples = 99\n")  # as papermill injects a parameter the cell lacks
    with session(tmp_path, data_root, "study") as kernel:
        first = kernel.run_all(cells)
        assert all(s.ok for s in first) and len(first) == len(cells), first[-1].error
        assert not any(s.stderr for s in first), [s.stderr for s in first if s.stderr]  # no warning noise
        assert sum(s.images for s in first) == 2, "the training curves and the scatter plot are not shown"  # no forced Agg
        cells[at] = cells[at].replace("n_models = 3", "n_models = 4")
        second = kernel.run_all(cells)  # Run All again after the edit, no restart
        assert all(s.ok for s in second) and len(second) == len(cells), second[-1].error
        assert json.loads((results / "fcnn" / "results.json").read_text())["params"]["n_models"] == 4
        for source in cells[at:]:  # rerunning any cell is harmless
            assert kernel.run(source).ok, source[:80]
    with session(tmp_path, data_root, "study") as kernel:  # a restart, then a cell from the middle
        training = next(c for c in cells if c.startswith("seconds = {}"))
        shown = kernel.run(training)
        assert (
            len(shown.error) == 1
            and "`load_task` is not defined yet: run the cell that starts `from sharplib.core import notebook`" in shown.error[0]
        )
