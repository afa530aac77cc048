"""The teaching notebook (notebooks/teaching_sharpness.py) runs end to end and shows what it teaches."""
from __future__ import annotations

import math
import sys
from pathlib import Path

import jupytext
import nbformat
import pandas as pd
import papermill
import pytest
from jupyter_client.manager import KernelManager

from sharplib.task import resolve_device
from sharplib.teaching import TeachingParams
from tests.notebook_runner import NOTEBOOKS, check_parameters, parameters_cell, printed, run_notebook

VARIANTS = {"standard, gradient", "standard, steepest", "adaptive, gradient (report)", "adaptive, steepest"}


def execute(tmp: Path, data_root: Path, **parameters) -> nbformat.NotebookNode:
    """Run the notebook with `parameters` (results in `tmp`) and return the executed notebook."""
    return run_notebook("teaching_sharpness", tmp, data_root, results_dir=str(tmp / "results"), **parameters)


def test_python3_kernel_is_this_interpreter(monkeypatch):
    # Without this, papermill could run the notebook in another Python that lacks sharplib.
    monkeypatch.setenv("JUPYTER_PREFER_ENV_PATH", "1")
    command = KernelManager(kernel_name="python3").format_kernel_cmd()
    assert Path(command[0]).resolve() == Path(sys.executable).resolve(), (
        f"the 'python3' kernel starts {command[0]}, not {sys.executable}: is ipykernel installed in this venv?")


def test_notebook_has_one_literal_parameters_cell():
    parameters_cell("teaching_sharpness")


@pytest.fixture(scope="module")
def default_run(tmp_path_factory, data_root):
    tmp = tmp_path_factory.mktemp("teaching")
    return execute(tmp, data_root), tmp


@pytest.mark.slow
def test_defaults_show_invariance(default_run):
    nb, tmp = default_run
    table = pd.read_csv(tmp / "results" / "invariance.csv")
    factors = sorted(table.factor.unique())
    assert set(table.variant) == VARIANTS and 1.0 in factors and len(table) == len(factors) * len(VARIANTS)
    assert (table.max_output_change < 1e-5).all(), "a rescaled copy computes a different function"
    steepest = table[table.variant == "adaptive, steepest"]
    assert (steepest.rel_change_vs_factor_1 < 1e-4).all(), steepest
    farthest = max(factors, key=lambda r: abs(math.log(r)))
    for variant in ("standard, gradient", "standard, steepest"):
        change = table[(table.variant == variant) & (table.factor == farthest)].rel_change_vs_factor_1.item()
        assert change > 0.10, f"{variant} changed by only {change:.1%} at r = {farthest}"
    # the exercises are skipped (answers still None) by default, and say so
    assert printed(nb).count("no answer yet") == 3


@pytest.mark.slow
def test_solutions_pass_their_checks(tmp_path, data_root):
    nb = execute(tmp_path, data_root, show_solutions=True, n_restarts=8, factors=[1.0, 10.0], rho_grid=[0.001, 0.003])
    out = printed(nb)
    for exercise in (1, 2, 3):
        assert f"Exercise {exercise}: correct!" in out


def run_parameter_check(**overrides):
    """The notebook's parameters cell, `overrides` and its check cell, with the names the check needs."""
    setup = {"TeachingParams": TeachingParams, "resolve_device": resolve_device}  # what the setup cell imports
    setup["_names_before_parameters"] = set(setup)
    return check_parameters("teaching_sharpness", setup, **overrides)


def test_default_parameters_pass_the_check():
    namespace = run_parameter_check()
    assert namespace["DEVICE"] == "cpu" and namespace["RESULTS"].name == "teaching"
    assert namespace["params"] == TeachingParams(), "the parameters cell and TeachingParams' defaults differ"
    assert namespace["factors"] == (0.1, 0.3, 1.0, 3.0, 10.0)


def test_grids_come_out_sorted_without_repeats():
    namespace = run_parameter_check(factors=[10, 1, 1.0, 0.5], rho_grid=[0.1, 0.01])
    assert namespace["factors"] == (0.5, 1.0, 10.0) and namespace["rho_grid"] == (0.01, 0.1)


@pytest.mark.parametrize("overrides, message", [
    ({"rhoo": 0.1}, "unknown field(s) ['rhoo']"),
    ({"n_restarts": "50"}, "parameter.n_restarts must be an integer, got '50'"),
    ({"n_restarts": 1}, "parameter.n_restarts must be >= 2, got 1"),
    ({"seed": True}, "parameter.seed must be an integer, got True"),
    ({"rho": -0.1}, "parameter.rho must be > 0, got -0.1"),
    ({"factors": [2.0, 3.0]}, "parameter.factors must be a list of at least two distinct numbers > 0 that contains 1"),
    ({"factors": [1.0, 1]}, "parameter.factors must be a list of at least two distinct numbers"),
    ({"rescale_layer": 3}, "parameter.rescale_layer must be 1 or 2"),
    ({"rho_grid": [0.01]}, "parameter.rho_grid must be a list of at least two distinct numbers > 0, got [0.01]"),
    ({"rho_grid": [[0.01], 0.1]}, "parameter.rho_grid must be a list"),
    ({"rho_grid": [0.01, float("nan")]}, "parameter.rho_grid must be a list"),
    ({"device": None}, "parameter.device must be a non-empty string, got None"),
    ({"show_solutions": "yes"}, "parameter.show_solutions must be True or False, got 'yes'"),
    ({"device": "gpu"}, "parameter.device: device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got 'gpu'"),
    ({"results_dir": ""}, "parameter.results_dir must be a non-empty string"),
])
def test_bad_parameters_are_named(overrides, message):
    with pytest.raises(ValueError) as err:
        run_parameter_check(**overrides)
    assert message in str(err.value)


def test_rerunning_the_check_after_later_cells_checks_values_only():
    # In JupyterLab a student may rerun the check cell after later cells defined more names.
    namespace = run_parameter_check()
    namespace.update(task=object(), model=object())
    cells = [c for c in jupytext.read(NOTEBOOKS / "teaching_sharpness.py").cells if c.cell_type == "code"]
    check = next(c for i, c in enumerate(cells) if "parameters" in cells[i - 1].metadata.get("tags", []))
    exec(check.source, namespace)
    namespace["rho"] = -1.0
    with pytest.raises(ValueError, match="parameter.rho must be > 0"):
        exec(check.source, namespace)


@pytest.mark.slow
def test_papermill_unknown_parameter_stops_the_run(tmp_path, data_root):
    # papermill only warns about a parameter the notebook does not define; the notebook stops
    with pytest.raises(papermill.PapermillExecutionError) as err:
        execute(tmp_path, data_root, n_restart=5)
    assert "unknown field(s) ['n_restart']" in str(err.value)
    assert not (tmp_path / "results").exists(), "the notebook did work before checking its parameters"
