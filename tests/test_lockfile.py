"""A step's lock: current while code, parameters, data and files are as it records; anything else is named."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from sharplib.core.archs import ARCHS
from sharplib.pipeline import fingerprint, lockfile, stephash

REPO = Path(__file__).resolve().parents[1]
COMMIT = "0" * 40  # not in this repository: the lock's commit is then not checked against git


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    root = tmp_path / "checkout"
    for folder in ("sharplib", "notebooks"):
        shutil.copytree(REPO / folder, root / folder, ignore=shutil.ignore_patterns("__pycache__", "*.ipynb"))
    return root


def write_outputs(results: Path, step: str, arch: str, **params: object) -> None:
    """What a notebook run by make writes: its files, the summary recording make's parameters."""
    folder = results / arch
    folder.mkdir(parents=True, exist_ok=True)
    recorded = {**stephash.make_parameters(step, arch, "full", "auto"), "results_dir": str(results), **params}
    for name in stephash.STEPS[step].outputs[1:]:
        (folder / name).write_text(f"{step} {arch} {name}\n")
    (folder / stephash.STEPS[step].summary).write_text(json.dumps({"tau": 0.5, "params": recorded}))


def lock(results: Path, step: str, arch: str, root: Path) -> int:
    return fingerprint.main(["lock", step, arch, "--results", str(results), "--root", str(root), "--commit", COMMIT, "--device", "test"])


def state(results: Path, step: str, arch: str, root: Path) -> lockfile.StepState:
    return lockfile.state(step, arch, "full", "auto", results, root)


def test_a_fresh_lock_is_current_and_its_files_are_watched(tmp_path: Path, checkout: Path) -> None:
    results = tmp_path / "results"
    assert state(results, "study", "fcnn", checkout).state == "missing"
    write_outputs(results, "study", "fcnn")
    assert "not made by make" in state(results, "study", "fcnn", checkout).detail
    assert lock(results, "study", "fcnn", checkout) == 0
    assert state(results, "study", "fcnn", checkout).state == "current"
    summary = results / "fcnn" / "results.json"
    summary.write_text(summary.read_text().replace("0.5", "0.9"))  # a τ edited by hand
    found = state(results, "study", "fcnn", checkout)
    assert (found.state, found.detail) == ("modified", f"{summary} differs from the one its lock records")
    write_outputs(results, "study", "fcnn")
    assert state(results, "study", "fcnn", checkout).state == "current"
    (results / "fcnn" / "models.csv").unlink()
    assert state(results, "study", "fcnn", checkout).detail.endswith("models.csv is missing")


def test_an_edit_that_computes_makes_the_step_stale_and_names_the_file(tmp_path: Path, checkout: Path) -> None:
    results = tmp_path / "results"
    write_outputs(results, "study", "gat")
    lock(results, "study", "gat", checkout)
    report = checkout / "sharplib" / "paper" / "report.py"
    report.write_text(report.read_text() + "\n# a comment\n")
    assert state(results, "study", "gat", checkout).state == "current"
    (checkout / "sharplib" / "core" / "train.py").write_text((checkout / "sharplib" / "core" / "train.py").read_text() + "\nUNUSED = 1\n")
    found = state(results, "study", "gat", checkout)
    assert found.state == "stale" and "sharplib/core/train.py" in found.detail


def test_a_rerun_study_makes_its_ablation_stale(tmp_path: Path, checkout: Path) -> None:
    results = tmp_path / "results"
    write_outputs(results, "study", "fcnn")
    lock(results, "study", "fcnn", checkout)
    write_outputs(results, "ablation", "fcnn")
    assert lock(results, "ablation", "fcnn", checkout) == 0
    assert state(results, "ablation", "fcnn", checkout).state == "current"
    (results / "fcnn" / "models.csv").write_text("another pool\n")
    lock(results, "study", "fcnn", checkout)
    found = state(results, "ablation", "fcnn", checkout)
    assert found.state == "stale" and "study's results changed" in found.detail


@pytest.mark.parametrize("forge", ["hash", "accept", "resealed"])
def test_a_lock_edited_by_hand_is_caught(tmp_path: Path, checkout: Path, forge: str) -> None:
    results = tmp_path / "results"
    write_outputs(results, "study", "fcnn")
    lock(results, "study", "fcnn", checkout)
    path = lockfile.lock_path(results, "fcnn", "study")
    record = json.loads(path.read_text())
    if forge == "hash":
        record["hash"] = "f" * 64
    elif forge == "accept":  # an accept nobody ran, claiming the results carry over to edited code
        record["accepted"].append({"from_commit": COMMIT, "to_commit": COMMIT, "n_models": 3, "digest": "0" * 64})
    else:  # a forger who knows the seal: the hash no longer is that of the inputs it lists
        record["hash"] = "f" * 64
        record["seal"] = lockfile.seal(record)
    path.write_text(json.dumps(record))
    found = state(results, "study", "fcnn", checkout)
    assert found.state == "invalid" and "edited by hand" in found.detail


def test_lock_refuses_results_made_with_other_parameters(tmp_path: Path, checkout: Path, capsys: pytest.CaptureFixture) -> None:
    results = tmp_path / "results"
    write_outputs(results, "study", "gat", n_models=10)  # a hand-run into results/
    assert lock(results, "study", "gat", checkout) == 1
    assert "n_models=10 (make passes None)" in capsys.readouterr().err
    assert not lockfile.lock_path(results, "gat", "study").exists()


@pytest.mark.parametrize("content", ['{"params": "arch=gat"}', "{not json", '["a list"]'])
def test_lock_refuses_an_unreadable_results_file(tmp_path: Path, checkout: Path, content: str, capsys: pytest.CaptureFixture) -> None:
    results = tmp_path / "results"
    write_outputs(results, "study", "gat")
    (results / "gat" / "results.json").write_text(content)
    assert lock(results, "study", "gat", checkout) == 1
    assert "not a readable results file" in capsys.readouterr().err


def test_an_unreadable_lock_is_invalid_not_a_crash(tmp_path: Path, checkout: Path) -> None:
    results = tmp_path / "results"
    write_outputs(results, "study", "gat")
    lockfile.lock_path(results, "gat", "study").write_text('{"made_from": "a string"}')
    found = state(results, "study", "gat", checkout)
    assert found.state == "invalid" and "lock file of format" in found.detail


# Steps make paper leaves out until they have run (the Makefile's MEASURES_ARCHS, PROGRESS_ARCHS, EQUALIZED_ARCHS).
NOT_YET_RUN = {("measures", "lenet5"), ("progress", "lenet5"), ("equalized", "lenet5")}


def test_the_tracked_results_are_current_or_accepted() -> None:
    """A change that computes ships with its results rerun or accepted on evidence (make accept)."""
    for arch in ARCHS:
        for step in stephash.STEPS:
            found = lockfile.state(step, arch, "full", "auto", REPO / "results")
            if (step, arch) in NOT_YET_RUN and found.state == "missing":
                continue
            assert found.reusable, f"{step} {arch}: {found.state}: {found.detail} (make status; then make accept or a rerun)"


def test_lock_takes_the_checkouts_folder_out_of_the_files(checkout: Path) -> None:
    # An executed notebook prints where it wrote: tracked results must not carry one machine's paths.
    results = checkout / "results"
    write_outputs(results, "study", "fcnn")
    notebook = results / "fcnn" / "notebook.ipynb"
    notebook.write_text(json.dumps({"text": f"the results go to `{checkout.resolve()}/results/fcnn/`", "tau": 0.25}))
    assert lock(results, "study", "fcnn", checkout) == 0
    assert json.loads(notebook.read_text()) == {"text": "the results go to `results/fcnn/`", "tau": 0.25}
    assert state(results, "study", "fcnn", checkout).state == "current"
