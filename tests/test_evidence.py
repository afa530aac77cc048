"""Accept on evidence, end to end in a git repository of its own: a refactor is accepted, a changed number is refused."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from sharplib.pipeline import evidence, fingerprint, lockfile, stephash

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


def make_runs_no_notebook(repo: Path) -> bool:
    """`make results/fcnn/study.lock` in `repo`, with a jupytext and papermill that leave a trace if called."""
    for name in ("Makefile", "pyproject.toml"):
        shutil.copy2(REPO / name, repo / name)
    venv = repo.parent / "venv"
    (venv / "bin").mkdir(parents=True, exist_ok=True)
    (venv / ".installed").touch()
    for tool in ("jupytext", "papermill"):
        (venv / "bin" / tool).write_text("#!/bin/sh\necho ran >> ran.log\nexit 1\n")
        (venv / "bin" / tool).chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MAKELEVEL")}
    done = subprocess.run(["make", "results/fcnn/study.lock", f"VENV={venv}", f"PYTHON={sys.executable}"], cwd=repo,
                          capture_output=True, text=True, env=env)
    assert done.returncode == 0 and "study accepted" in done.stdout, done.stdout + done.stderr
    return not (repo / "ran.log").exists()


def accept(root: Path) -> int:
    return evidence.accept(
        "a test", root / "results", "full", "auto", archs=("fcnn",), steps=("study",), root=root, work=root.parent / "work"
    )


@pytest.mark.slow
def test_a_refactor_is_accepted_and_a_changed_number_refused(repo: Path, capsys: pytest.CaptureFixture) -> None:
    state = lambda: lockfile.state("study", "fcnn", "full", "auto", repo / "results", repo)  # noqa: E731
    assert state().state == "current"
    sharpness = repo / "sharplib" / "core" / "sharpness.py"
    edit(sharpness, "moved", "shifted")  # a local variable renamed, in two functions
    train = repo / "sharplib" / "core" / "train.py"
    train.write_text(train.read_text() + "\nUNUSED_CONSTANT = 1  # a statement that moves no number\n")
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
    assert make_runs_no_notebook(repo), "make ran a notebook for accepted results"

    edit(sharpness, "shifted = delta + cfg.lr * grad", "shifted = delta + 1.5 * cfg.lr * grad")  # a constant of the ascent
    commit_all(repo, "a longer ascent step")
    before = (repo / "results" / "fcnn" / "study.lock").read_text()
    capsys.readouterr()
    assert accept(repo) == 1
    out = capsys.readouterr().out
    assert "refused: the numbers differ" in out and "models.csv row 0, sharpness:" in out, out
    # the refactor's numbers, HEAD's side of the first accept, were not computed again
    assert f"{refactor[:10]}: study fcnn: the numbers of an earlier run" in out, out
    assert "study fcnn (n_models=3" in out, "the new commit's side ran"
    assert (repo / "results" / "fcnn" / "study.lock").read_text() == before
    assert state().state == "stale"


def _write_step(results: Path, summary: dict, rows: str, cache: dict[str, dict]) -> Path:
    folder = results / "fcnn"
    (folder / "ablation_cache").mkdir(parents=True, exist_ok=True)
    (folder / "ablation.json").write_text(json.dumps(summary))
    (folder / "ablation.csv").write_text(rows)
    (folder / "rho.csv").write_text("rho,tau\n0.1,0.5\n")
    for name, record in cache.items():
        (folder / "ablation_cache" / name).write_text(json.dumps(record))
    return results


def test_evidence_compares_numbers_not_settings_names_or_timings(tmp_path: Path) -> None:
    summary = {
        "tau": 0.25,
        "undefined": float("nan"),
        "seeds": [0, 1, 2],
        "seconds": {"total": 3.0},
        "train_config": {"lr": 0.1, "device": "cpu"},
    }
    old = evidence.numbers(_write_step(tmp_path / "old", summary, "variant,tau,seconds\nreport,0.25,1.0\n",
                                       {"aa.json": {"seed": 0, "sharpness": 0.5, "seconds": 1.0}}), "fcnn", "ablation")
    renamed = {**summary, "seconds": {"total": 9.0}, "train_config": {"lr": 0.1, "device": "cpu", "target_loss": None}, "train_rows": None}
    new = evidence.numbers(
        _write_step(
            tmp_path / "new",
            renamed,
            "variant,tau,seconds,new_column\nreport,0.25,7.0,\n",
            {"bb.json": {"seed": 0, "sharpness": 0.5, "seconds": 2.0, "checkpoint": "/elsewhere/seed0000.pt"}},
        ),
        "fcnn",
        "ablation",
    )
    assert evidence.differences(old, new) == [], "timings, cache names, unset settings, empty new columns, NaN as NaN: no change"
    moved = evidence.numbers(_write_step(tmp_path / "moved", {**summary, "tau": 0.2500001}, "variant,tau,seconds\nreport,0.25,1.0\n",
                                         {"cc.json": {"seed": 0, "sharpness": 0.51, "seconds": 1.0}}), "fcnn", "ablation")
    assert evidence.differences(old, moved) == ["ablation.json, tau: 0.25 then 0.2500001",
                                                "ablation_cache/*.json row 0, sharpness: 0.5 then 0.51"]
    assert evidence.digest(new) != evidence.digest(moved)


def test_a_rerun_study_with_the_same_numbers_is_what_its_downstream_step_read(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    folder = root / "results" / "fcnn"
    folder.mkdir(parents=True)
    git(root, "init", "-q")
    rows = "seed,test_loss,train_seconds\n0,0.5,1.25\n1,0.6,1.5\n"
    (folder / "models.csv").write_text(rows)
    (folder / "results.json").write_text(json.dumps({"tau": -0.3, "seconds": {"train": 3.0}}))
    (folder / "notebook.ipynb").write_text("{}")
    lock = {"upstream_outputs": lockfile.output_hashes(root / "results", "fcnn", "study")}  # what the ablation read
    read_at = commit_all(root, "the study")
    # the study rerun: other timings, the same numbers
    (folder / "models.csv").write_text(rows.replace("1.25", "2.5"))
    (folder / "results.json").write_text(json.dumps({"tau": -0.3, "seconds": {"train": 9.0}}))
    found = evidence.upstream_reproduced(root / "results", "fcnn", "ablation", lock, root, tmp_path / "read1")
    assert isinstance(found, dict) and (found["step"], found["read_at_commit"]) == ("study", read_at)
    # a number moved: refused, naming it
    (folder / "models.csv").write_text(rows.replace("0.6", "0.7"))
    found = evidence.upstream_reproduced(root / "results", "fcnn", "ablation", lock, root, tmp_path / "read2")
    assert isinstance(found, str) and "test_loss: 0.6 then 0.7" in found
    # files git never held
    forged = {"upstream_outputs": {"results.json": "0" * 64}}
    assert "no commit holds" in evidence.upstream_reproduced(root / "results", "fcnn", "ablation", forged, root, tmp_path / "read3")


def test_a_commits_hash_is_taken_over_code_and_over_bytes_for_locks_written_before_that(repo: Path) -> None:
    base = git(repo, "rev-parse", "HEAD")
    over_code, over_bytes = (stephash.fingerprint("study", "fcnn", "full", "auto", repo, digest)["hash"]
                             for digest in (stephash.code_digest, stephash.sha256_file))
    assert over_code != over_bytes
    assert lockfile.hashes_at_commit("study", "fcnn", "full", "auto", base, repo) == {over_code, over_bytes}
    assert lockfile.hashes_at_commit("study", "fcnn", "full", "auto", "0" * 40, repo) is None


def test_a_lock_is_dirty_only_when_the_code_that_computes_is_not_its_commits(repo: Path) -> None:
    # A run in place rewrites tracked results while it runs: the notebook's own git status then reads dirty.
    base = git(repo, "rev-parse", "HEAD")
    summary = repo / "results" / "fcnn" / "results.json"
    record = json.loads(summary.read_text())
    summary.write_text(json.dumps({**record, "provenance": {"git_commit": base, "git_dirty": True}}))
    lock = repo / "results" / "fcnn" / "study.lock"

    def locked_dirty() -> bool:
        assert fingerprint.main(["lock", "study", "fcnn", "--results", str(repo / "results"), "--root", str(repo), "--device", "test"]) == 0
        return json.loads(lock.read_text())["computed"]["dirty"]

    assert locked_dirty() is False
    edit(repo / "sharplib" / "core" / "train.py", "\ndef should_stop(", "\nEDITED = True\n\n\ndef should_stop(")
    assert locked_dirty() is True


def test_a_changed_profile_row_is_refused_before_any_evidence_runs(repo: Path, capsys: pytest.CaptureFixture) -> None:
    # The evidence runs 3 models whatever the profile says, so it would find a larger full pool "unchanged".
    profiles = repo / "sharplib" / "experiments" / "profiles.py"
    edit(profiles, '"study": _each(n_models=50,', '"study": _each(n_models=40,')
    commit_all(repo, "a smaller full study pool")
    before = (repo / "results" / "fcnn" / "study.lock").read_text()
    assert accept(repo) == 1
    out = capsys.readouterr().out
    assert "study fcnn: refused: the full profile's settings for it changed (n_models 50 -> 40)" in out, out
    assert "running the evidence" not in out and not (repo / "build" / "evidence").exists(), "the evidence ran"
    assert (repo / "results" / "fcnn" / "study.lock").read_text() == before


def test_profile_row_changes_names_each_setting_that_moved() -> None:
    old = {"n_models": 24, "grid": "Grid(n_seeds=3)", "trajectory_epochs": [1, 2], "max_epochs": 12}
    new = {"n_models": 50, "grid": "Grid(n_seeds=5)", "trajectory_epochs": [1, 2], "n_restarts": None}
    assert evidence.profile_row_changes(old, new) == [
        'grid "Grid(n_seeds=3)" -> "Grid(n_seeds=5)"', "max_epochs 12 -> null", "n_models 24 -> 50"]
    assert evidence.profile_row_changes(old, dict(old)) == [] and evidence.profile_row_changes(None, None) == []


def test_profile_rows_are_those_of_the_code_in_a_folder(repo: Path) -> None:
    rows = evidence.profile_rows(repo, "full")
    assert rows["study"]["fcnn"]["n_models"] == 50
    assert rows.get("no-such-step") is None and evidence.profile_rows(repo, "no-such-profile") == {}
    (repo / "sharplib" / "experiments" / "profiles.py").write_text("PROFILES = {\n")  # a syntax error
    with pytest.raises(evidence.EvidenceError, match="cannot read the full profile in") as error:
        evidence.profile_rows(repo, "full")
    assert "SyntaxError" in str(error.value)


def test_a_step_runs_its_upstream_here_even_when_the_cache_holds_the_upstreams_numbers(
    repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A later accept finds the study's numbers in the cache, but the ablation's notebook reads the study's files.
    head = git(repo, "rev-parse", "HEAD")
    cache = repo.parent / "cache"
    cache.mkdir()
    (cache / f"{evidence.evidence_key(head, 'study', 'fcnn', 'full', 'auto')}.json").write_text("{}")
    side = evidence.Side(head, repo.parent / "work" / "side", "full", "auto", repo.parent / "work" / "side.log", repo, cache)
    ran: list[tuple[str, str]] = []
    monkeypatch.setattr(side, "_papermill", lambda step, arch: ran.append((step, arch)))
    monkeypatch.setattr(evidence, "numbers", lambda results, arch, step: {"step": step})
    try:
        assert side.run("study", "fcnn") == {} and ran == [], "the study's own numbers come from the cache"
        assert side.run("ablation", "fcnn") == {"step": "ablation"}
        assert ran == [("study", "fcnn"), ("ablation", "fcnn")]
        side.run("measures", "fcnn")  # the study's files are there now: not run twice
        assert ran == [("study", "fcnn"), ("ablation", "fcnn"), ("measures", "fcnn")]
    finally:
        side.close()


@pytest.mark.slow
def test_a_failed_notebook_shows_the_end_of_its_log(repo: Path) -> None:
    # The log lies in the worktrees' folder, which the accept removes on its way out: the error carries its end.
    notebook = repo / "notebooks" / "study.py"
    notebook.write_text(notebook.read_text().replace("\n# %%\n", "\n# %%\nraise RuntimeError('a broken cell')\n", 1))
    broken = commit_all(repo, "a broken notebook")
    side = evidence.Side(broken, repo.parent / "work" / "side", "full", "auto", repo.parent / "work" / "side.log", repo)
    try:
        with pytest.raises(evidence.EvidenceError, match="study fcnn failed at") as error:
            side.run("study", "fcnn")
    finally:
        side.close()
    assert "a broken cell" in str(error.value)


def test_a_module_moved_to_a_folder_is_accepted_without_running_anything(repo: Path, capsys: pytest.CaptureFixture) -> None:
    # stats.py from core/ into a folder of its own, every import of it rewritten: the same code wherever it lies.
    (repo / "sharplib" / "statistics").mkdir()
    (repo / "sharplib" / "statistics" / "__init__.py").touch()
    git(repo, "mv", "sharplib/core/stats.py", "sharplib/statistics/stats.py")
    for path in [*repo.glob("sharplib/*/*.py"), *repo.glob("notebooks/*.py")]:
        text = path.read_text()
        for old, new in (("from .stats import", "from ..statistics.stats import"),
                         ("from ..core.stats import", "from ..statistics.stats import"),
                         ("from sharplib.core.stats import", "from sharplib.statistics.stats import")):
            text = text.replace(old, new)
        path.write_text(text)
    state = lambda: lockfile.state("study", "fcnn", "full", "auto", repo / "results", repo)  # noqa: E731
    assert state().state == "stale"
    moved = commit_all(repo, "stats into core/")
    assert accept(repo) == 0, capsys.readouterr().out
    assert "only modules moved" in capsys.readouterr().out
    found = state()
    assert found.state == "accepted" and found.lock["accepted"][-1]["to_commit"] == moved and "moved" in found.lock["accepted"][-1]
    assert not (repo.parent / "work").exists() or not list((repo.parent / "work").glob("*/sharplib")), "no worktree ran a notebook"
    # a move with a change of code is not a move
    edit(repo / "sharplib" / "statistics" / "stats.py", "def kendall(", "UNUSED = 1\n\n\ndef kendall(")
    commit_all(repo, "a statement")
    assert stephash.relocatable_fingerprint("study", "fcnn", "full", "auto", repo) != found.lock["accepted"][-1]["moved"]


def test_a_commits_evidence_is_kept_under_what_it_depends_on(monkeypatch: pytest.MonkeyPatch) -> None:
    key = evidence.evidence_key("a" * 40, "ablation", "fcnn", "full", "auto")
    assert key == evidence.evidence_key("a" * 40, "ablation", "fcnn", "full", "auto")
    others = [evidence.evidence_key("b" * 40, "ablation", "fcnn", "full", "auto"),
              evidence.evidence_key("a" * 40, "ablation", "gat", "full", "auto"),
              evidence.evidence_key("a" * 40, "ablation", "fcnn", "quick", "auto")]
    monkeypatch.setitem(evidence.EVIDENCE, "study", {**evidence.EVIDENCE["study"], "n_models": 4})  # the upstream's settings
    others.append(evidence.evidence_key("a" * 40, "ablation", "fcnn", "full", "auto"))
    monkeypatch.setattr(evidence, "_version", lambda package: "0.0")  # another torch
    others.append(evidence.evidence_key("a" * 40, "ablation", "fcnn", "full", "auto"))
    assert len({key, *others}) == 1 + len(others)


def test_the_evidence_key_holds_the_settings_of_the_whole_chain() -> None:
    """The equalized step runs on the progress step, which runs on the study: a change to the study's evidence settings
    must change the equalized step's key too; a step on the study alone keeps the two-step settings it always had."""
    assert list(evidence.chain_settings("equalized", "fcnn")) == ["equalized", "progress", "study"]
    assert evidence.chain_settings("ablation", "gat") == {"ablation": evidence.evidence_settings("ablation", "gat"),
                                                         "study": evidence.evidence_settings("study", "gat")}
    before = evidence.evidence_key("a" * 40, "equalized", "fcnn", "full", "auto")
    original = evidence.EVIDENCE["study"]
    try:
        evidence.EVIDENCE["study"] = {**original, "n_models": 4}
        assert evidence.evidence_key("a" * 40, "equalized", "fcnn", "full", "auto") != before
    finally:
        evidence.EVIDENCE["study"] = original
