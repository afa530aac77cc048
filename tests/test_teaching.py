"""The teaching notebook (notebooks/teaching_sharpness.py) runs end to end, teaches, and survives a classroom:
edits and a second Run All, cells rerun or run out of order, wrong answers, and its two handouts."""
from __future__ import annotations

import math
import sys
from pathlib import Path

import jupytext
import nbformat
import pandas as pd
import papermill
import pytest
import torch
from jupyter_client.manager import KernelManager

from sharplib.paper import handout
from sharplib.core.task import resolve_device
from sharplib.experiments.teaching import Exercises, TeachingParams
from tests.kernel_session import code_cells, edit, session
from tests.notebook_runner import NOTEBOOKS, check_parameters, parameters_cell, printed, run_notebook

VARIANTS = {"standard, gradient", "standard, steepest", "adaptive, gradient (report)", "adaptive, steepest"}
SOURCE = NOTEBOOKS / "teaching_sharpness.py"
EXERCISES = 5
SMALL = dict(n_restarts=4, rho_grid=[0.001, 0.003])  # a classroom-sized run, in a few seconds


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


def test_course_framing_is_there():
    text = SOURCE.read_text()
    for words in ("Learning objectives", "Prerequisites", "**Time.**", "## Discussion questions", "## References",
                  "Dinh", "Kwon", "Andriushchenko", "Hammoud"):
        assert words in text, words
    assert text.index("## Discussion questions") > text.index("## 5. Exercises") and text.index("## References") > text.index(
        "## Discussion"
    )


@pytest.fixture(scope="module")
def default_run(tmp_path_factory, data_root):
    tmp = tmp_path_factory.mktemp("teaching")
    return execute(tmp, data_root), tmp


@pytest.mark.slow
def test_defaults_show_invariance_and_the_solutions_pass(default_run):
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
    # the source is the instructor's version: every exercise is answered and passes its check
    out = printed(nb)
    for exercise in (1, 2, 3):
        assert f"Exercise {exercise}: correct." in out
    assert f"{EXERCISES} of {EXERCISES} exercises done" in out


def run_parameter_check(**overrides):
    """The notebook's parameters cell, `overrides` and its check cell, with the names the check needs."""
    setup = {"TeachingParams": TeachingParams, "resolve_device": resolve_device, "Exercises": Exercises}  # what the setup cell imports
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
    ({"grading": "yes"}, "parameter.grading must be True or False, got 'yes'"),
    ({"device": "gpu"}, "parameter.device: device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got 'gpu'"),
    ({"results_dir": ""}, "parameter.results_dir must be a non-empty string"),
])
def test_bad_parameters_are_named(overrides, message):
    with pytest.raises(ValueError) as err:
        run_parameter_check(**overrides)
    assert message in str(err.value)


@pytest.mark.notebook
@pytest.mark.slow
def test_papermill_unknown_parameter_stops_the_run(tmp_path, data_root):
    # papermill only warns about a parameter the notebook does not define; the notebook stops
    with pytest.raises(papermill.PapermillExecutionError) as err:
        execute(tmp_path, data_root, n_restart=5)
    assert "unknown field(s) ['n_restart']" in str(err.value)
    assert not (tmp_path / "results").exists(), "the notebook did work before checking its parameters"


# ---------------------------------------------------------------- the exercises' checks
def test_checks_print_one_or_two_lines_and_never_raise(capsys):
    exercises = Exercises()
    exercises.box_radius(None)
    exercises.box_radius(0.025)
    exercises.box_radius("a lot")
    exercises.box_radius(0.01)
    exercises.written(4, "  ")
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "Exercise 1: no answer yet."
    assert lines[1].startswith("Exercise 1: not yet (0.025).") and lines[2].startswith("  Hint:")
    assert lines[3].startswith("Exercise 1: not yet ('a lot').") and lines[5] == "Exercise 1: correct."
    assert lines[6] == "Exercise 4: no answer yet."
    assert "0.01" not in "".join(lines[:5]), "a hint must not give the answer away"
    exercises.summary()
    assert capsys.readouterr().out.strip() == "1 of 2 exercises done; unanswered: 4"


def test_grading_turns_an_open_exercise_into_an_error():
    Exercises().require(3)  # not grading: nothing
    graded = Exercises(grading=True)
    graded.box_radius(0.01)
    graded.require(1)
    graded.box_radius(0.02)
    with pytest.raises(AssertionError, match="exercise 1: not yet"):
        graded.require(1)


def test_the_rescaling_exercise_measures_the_students_network(abalone_task, capsys):
    from sharplib.pools.pool import init_model
    from sharplib.experiments.protocol import train_config
    from sharplib.core.reparam import rescale

    model = init_model("fcnn", train_config("fcnn"))
    x = abalone_task.x_train[:200]
    sharpness_of = lambda net, variant: (
        float(sum(p.detach().abs().sum() for p in net.parameters())) if variant.startswith("standard") else 1.0
    )
    mine = rescale(model, 3.0, layer=1)
    expected = abs(sharpness_of(mine, "standard") - sharpness_of(model, "standard")) / sharpness_of(model, "standard")
    exercises = Exercises()
    exercises.rescaled((1, 0), mine, model, x, sharpness_of)  # any pair is not enough
    exercises.rescaled((expected, 0.0), model, model, x, sharpness_of)  # the model itself is no rescaling
    broken = rescale(model, 3.0, layer=1)
    with torch.no_grad():
        broken.fc1.bias.add_(1.0)
    exercises.rescaled((expected, 0.0), broken, model, x, sharpness_of)  # another function
    exercises.rescaled((expected, 0.0), mine, model, x, sharpness_of)
    out = capsys.readouterr().out.splitlines()
    verdicts = [line for line in out if line.startswith("Exercise 2:")]
    assert [v.split(":")[1].split()[0] for v in verdicts] == ["not", "not", "not", "correct."], out
    assert "model`'s weights" in verdicts[1] and "another function" in verdicts[2]


# ---------------------------------------------------------------- a live kernel: reruns, edits, order
def verdicts(shown) -> str:
    return "".join(s.stdout for s in shown)


@pytest.mark.notebook
@pytest.mark.slow
def test_run_all_twice_after_edits_uses_the_edited_values(tmp_path, data_root):
    cells = edit(code_cells("teaching_sharpness"), results_dir=str(tmp_path / "results"), **SMALL)
    table = tmp_path / "results" / "invariance.csv"
    with session(tmp_path, data_root, "teaching_sharpness") as kernel:
        first = kernel.run_all(cells)
        assert all(s.ok for s in first) and len(first) == len(cells), first[-1].error
        assert sorted(pd.read_csv(table).factor.unique()) == [0.1, 0.3, 1.0, 3.0, 10.0]
        edited = edit(cells, factors=[1.0, 2.0, 4.0])
        second = kernel.run_all(edited)  # Run All again, no restart
        assert all(s.ok for s in second) and len(second) == len(cells), second[-1].error
        assert sorted(pd.read_csv(table).factor.unique()) == [1.0, 2.0, 4.0], "the second Run All ignored the edit"
        assert f"{EXERCISES} of {EXERCISES} exercises done" in verdicts(second)
        for source in edited:  # every cell once more, each twice in a row
            assert kernel.run(source).ok and kernel.run(source).ok, source[:80]
        at = next(i for i, c in enumerate(edited) if c.startswith("seed = "))  # the parameters cell
        shown = kernel.run_all([edited[at].replace("\nrho = ", "\nrhoo = "), edited[at + 1]])  # a typo, then its check
        assert not shown[-1].ok and "unknown field(s) ['rhoo']" in shown[-1].error[-1]


@pytest.mark.notebook
@pytest.mark.slow
def test_a_cell_run_too_early_says_which_cell_to_run(tmp_path, data_root):
    cells = code_cells("teaching_sharpness")
    train = next(c for c in cells if c.startswith("task = load_task"))
    check = next(c for c in cells if "TeachingParams.from_namespace" in c)
    parameters = next(c for c in cells if c.startswith("seed = "))
    with session(tmp_path, data_root, "teaching_sharpness") as kernel:  # as after a restart in the lab
        for source, says in [(train, "`load_task` is not defined yet: run the cell under"),
                             (check, "`TeachingParams` is not defined yet: run the cell under"),
                             ("print(modle)", "`modle` is not defined and no cell of this notebook defines it")]:
            shown = kernel.run(source)
            assert len(shown.error) == 1 and says in shown.error[0], shown.error
        imports = next(c for c in cells if c.startswith("from sharplib.core import notebook"))
        assert kernel.run(imports).ok
        shown = kernel.run(check)  # the parameters are not set yet
        assert shown.error == ["RunEarlierCell: the parameters are not set yet: run the cell tagged `parameters` (under the imports) first"]
        assert kernel.run(parameters).ok and kernel.run(check).ok
        shown = kernel.run(train.replace("task = ", "task_ = "))
        assert not shown.ok and len(shown.error) == 1
    with session(tmp_path, data_root, kernel_config=False) as kernel:  # no lab config, no notebook path: still one line
        assert kernel.run(cells[1]).ok
        shown = kernel.run(train)
        assert shown.error == [
            "NameError: `DATA_ROOT` is not defined yet: run the cells above this one first (Run → Run All Above Selected Cell)"
        ]


@pytest.mark.notebook
@pytest.mark.slow
def test_a_wrong_answer_gets_a_hint_and_run_all_goes_on(tmp_path, data_root):
    cells = edit(code_cells("teaching_sharpness"), results_dir=str(tmp_path / "results"), **SMALL)
    cells = [c.replace("answer_1 = 0.025 * abs(-0.4)", "answer_1 = 0.025") for c in cells]
    with session(tmp_path, data_root, "teaching_sharpness") as kernel:
        shown = kernel.run_all(cells)
    assert all(s.ok for s in shown) and len(shown) == len(cells)
    check = next(s for s in shown if s.source.startswith("exercises.box_radius"))
    assert check.stdout.splitlines() == [
        "Exercise 1: not yet (0.025).",
        "  Hint: the adaptive box is |δ_i| <= ρ |w_i|; a size is never negative.",
    ]
    assert shown[-1].stdout.strip() == f"{EXERCISES - 1} of {EXERCISES} exercises done; not yet right: 1"
    assert not any(s.stderr for s in shown), [s.stderr for s in shown if s.stderr]


# ---------------------------------------------------------------- the handouts
@pytest.mark.notebook
def test_student_version_has_no_solution_and_no_hidden_test():
    student = handout.student_version(jupytext.read(SOURCE))
    text = "\n".join(c.source for c in student.cells)
    assert not handout.leaks(student)
    for answer in ("0.025 * abs(-0.4)", "Model answer", "exercises.require", "math.log(s_2 / s_1)"):
        assert answer not in text, answer
    graded = [c for c in student.cells if c.metadata.get("nbgrader", {}).get("grade")]
    solutions = [c for c in student.cells if c.metadata.get("nbgrader", {}).get("solution")]
    assert len(graded) == len(solutions) == EXERCISES
    assert all("# YOUR CODE HERE" in c.source for c in solutions)


def test_strip_region_keeps_the_indentation_and_the_rest():
    source = "x = None\nif True:\n    ### BEGIN SOLUTION\n    x = 1\n    ### END SOLUTION\ny = 2"
    assert handout.strip_region(source, handout.SOLUTION, "# YOUR CODE HERE") == "x = None\nif True:\n    # YOUR CODE HERE\ny = 2"
    assert handout.strip_region(source, handout.SOLUTION, None) == "x = None\nif True:\ny = 2"


@pytest.mark.notebook
@pytest.mark.slow
def test_both_handouts_run(tmp_path, data_root, monkeypatch):
    monkeypatch.setenv("SHARPLIB_DATA", str(data_root))
    monkeypatch.setenv("JUPYTER_PREFER_ENV_PATH", "1")
    student, instructor = handout.build(SOURCE, tmp_path / "handout", results_dir=str(tmp_path / "instructor"), **SMALL)
    done = nbformat.read(instructor, as_version=4)  # grading=True: a solution failing its check would have raised
    assert f"{EXERCISES} of {EXERCISES} exercises done" in printed(done)
    assert all(not c.get("outputs") for c in nbformat.read(student, as_version=4).cells if c.cell_type == "code")
    out = tmp_path / "student-run.ipynb"
    papermill.execute_notebook(str(student), str(out), parameters={"results_dir": str(tmp_path / "student"), **SMALL},
                               kernel_name="python3", cwd=str(tmp_path), progress_bar=False)
    text = printed(nbformat.read(out, as_version=4))
    assert text.count("no answer yet") == EXERCISES
    assert text.strip().endswith(f"0 of {EXERCISES} exercises done; unanswered: 1, 2, 3, 4, 5")
