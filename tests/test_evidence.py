"""Accept on evidence, end to end in a git repository of its own: a refactor is accepted, a changed number is refused."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from sharplib import evidence, fingerprint, lockfile, stephash

REPO = Path(__file__).resolve().parents[1]


def git(root: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=True).stdout.strip()


def commit_all(root: Path, message: str) -> str:
    git(root, "add", "-A")
    git(root, "-c", "user.name=test", "-c", "user.email=test@example.org", "commit", "-qm", message)
    return git(root, "rev-parse", "HEAD")


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new))


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A repository with the project's code at one commit, and FCNN study results locked to that commit."""
    root = tmp_path / "repo"
    for folder in ("sharplib", "notebooks"):
        shutil.copytree(REPO / folder, root / folder, ignore=shutil.ignore_patterns("__pycache__", "*.ipynb"))
    (root / ".gitignore").write_text("results/\nbuild/\n__pycache__/\n")
    git(root, "init", "-q")
    base = commit_all(root, "base")
    folder = root / "results" / "fcnn"
    folder.mkdir(parents=True)
    for name in ("models.csv", "notebook.ipynb"):
        (folder / name).write_text("the canonical run's file\n")
    (folder / "results.json").write_text(json.dumps({"params": stephash.make_parameters("study", "fcnn", "full", "auto")}))
    assert fingerprint.main(["lock", "study", "fcnn", "--results", str(root / "results"), "--root", str(root),
                             "--commit", base, "--device", "test"]) == 0
    return root


def accept(root: Path) -> int:
    return evidence.accept("a test", root / "results", "full", "auto", archs=("fcnn",), steps=("study",), root=root, work=root.parent / "work")


@pytest.mark.slow
def test_a_refactor_is_accepted_and_a_changed_number_refused(repo: Path, capsys: pytest.CaptureFixture) -> None:
    state = lambda: lockfile.state("study", "fcnn", "full", "auto", repo / "results", repo)  # noqa: E731
    assert state().state == "current"
    sharpness = repo / "sharplib" / "sharpness.py"
    edit(sharpness, "moved", "shifted")  # a local variable renamed, in two functions
    assert state().state == "stale"
    assert accept(repo) == 1 and "commit your changes first" in capsys.readouterr().out
    refactor = commit_all(repo, "rename a local variable")
    assert accept(repo) == 0, capsys.readouterr().out
    found = state()
    assert found.state == "accepted", found.detail
    entry = found.lock["accepted"][-1]
    assert entry["to_commit"] == refactor and entry["n_models"] == 3 and entry["reason"] == "a test"
    assert entry["compared"] == ["models.csv", "results.json"]
    assert (repo / "results" / "fcnn" / "models.csv").read_text() == "the canonical run's file\n", "an accept touches no result"
    assert not list((repo.parent / "work").glob("*")), "the worktrees are removed"

    edit(sharpness, "shifted = delta + cfg.lr * grad", "shifted = delta + 1.5 * cfg.lr * grad")  # a constant of the ascent
    commit_all(repo, "a longer ascent step")
    before = (repo / "results" / "fcnn" / "study.lock").read_text()
    capsys.readouterr()
    assert accept(repo) == 1
    out = capsys.readouterr().out
    assert "refused: the numbers differ" in out and "models.csv row 0, sharpness:" in out, out
    assert (repo / "results" / "fcnn" / "study.lock").read_text() == before
    assert state().state == "stale"


@pytest.mark.slow
def test_after_an_accept_make_runs_no_notebook(repo: Path, tmp_path: Path) -> None:
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    (repo / "sharplib" / "train.py").write_text((repo / "sharplib" / "train.py").read_text() + "\nUNUSED_CONSTANT = 1\n")
    commit_all(repo, "a statement in train.py")
    assert accept(repo) == 0
    for name in ("Makefile", "pyproject.toml"):
        shutil.copy2(REPO / name, repo / name)
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / ".installed").touch()
    for tool in ("jupytext", "papermill"):
        (venv / "bin" / tool).write_text("#!/bin/sh\necho ran >> ran.log\nexit 1\n")
        (venv / "bin" / tool).chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MAKELEVEL")}
    done = subprocess.run(["make", "results/fcnn/study.lock", f"VENV={venv}", f"PYTHON={sys.executable}"], cwd=repo,
                          capture_output=True, text=True, env=env)
    assert done.returncode == 0 and "study accepted" in done.stdout, done.stdout + done.stderr
    assert not (repo / "ran.log").exists()
