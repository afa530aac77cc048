"""make reruns a step exactly when its lock no longer holds; `make status` says so without running anything."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from sharplib.core.archs import ARCHS
from sharplib.pipeline import fingerprint, stephash

REPO = Path(__file__).resolve().parents[1]
# What the quick chain runs: every step of every architecture but LeNet-5's measures, progress and equalized (MEASURES_ARCHS, ...)
IN_QUICK = [f"{step} {arch}" for arch in ARCHS for step in stephash.STEPS if arch != "lenet5" or step in ("study", "ablation")]
EVERYTHING = sorted(IN_QUICK)

# Stands in for papermill: records the run, waits a little (so that two makes overlap), writes the step's files.
FAKE_PAPERMILL = """#!{python}
import json, sys, time
from pathlib import Path
args = sys.argv[1:]
flags = [i for i, a in enumerate(args) if a == "-p"]
values = {{args[i + 1]: args[i + 2] for i in flags}}
source, executed = [a for i, a in enumerate(args) if a.endswith(".ipynb")][:2]
step = Path(source).name.split("-")[0]
outputs = {{"study": ["results.json", "models.csv"], "ablation": ["ablation.json", "ablation.csv", "rho.csv"],
           "measures": ["measures.json", "measures.csv"], "progress": ["progress.json", "progress.csv"],
           "equalized": ["equalized.json", "equalized.csv"]}}[step]
folder = Path(values["results_dir"]) / values["arch"]
folder.mkdir(parents=True, exist_ok=True)
time.sleep(0.3)
for name in outputs[1:]:
    (folder / name).write_text(f"{{step}} {{values['arch']}} {{time.time()}}\\n")
(folder / outputs[0]).write_text(json.dumps({{"params": values}}))
Path(executed).write_text("{{}}")
with open("runs.log", "a") as log:
    log.write(f"{{step}} {{values['arch']}}\\n")
"""


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    """A copy of what make and the hash read, with a venv whose papermill is the fake above."""
    for name in ("Makefile", "pyproject.toml"):
        shutil.copy2(REPO / name, tmp_path / name)
    for folder in ("sharplib", "notebooks"):
        shutil.copytree(REPO / folder, tmp_path / folder, ignore=shutil.ignore_patterns("__pycache__", "*.ipynb"))
    venv = tmp_path / "fake-venv"
    (venv / "bin").mkdir(parents=True)
    (venv / ".installed").touch()
    (venv / "bin" / "jupytext").write_text("#!/bin/sh\nexit 0\n")
    (venv / "bin" / "papermill").write_text(FAKE_PAPERMILL.format(python=sys.executable))
    for tool in ("jupytext", "papermill"):
        (venv / "bin" / tool).chmod(0o755)
    return tmp_path


def make(checkout: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MAKELEVEL")}
    done = subprocess.run(["make", *args, "PROFILE=quick", f"VENV={checkout / 'fake-venv'}", f"PYTHON={sys.executable}"],
                          cwd=checkout, capture_output=True, text=True, env=env)
    assert not check or done.returncode == 0, done.stdout + done.stderr
    return done


def runs(checkout: Path, *args: str) -> list[str]:
    """The steps `make results` ran."""
    log = checkout / "runs.log"
    log.unlink(missing_ok=True)
    make(checkout, "results", *args)
    return sorted(log.read_text().split("\n")[:-1]) if log.exists() else []


def append(path: Path, text: str) -> None:
    path.write_text(path.read_text() + text)


pytestmark = pytest.mark.skipif(shutil.which("make") is None or shutil.which("flock") is None, reason="needs make and flock")


@pytest.mark.slow
def test_make_reruns_exactly_the_steps_whose_inputs_changed(checkout: Path) -> None:
    assert runs(checkout) == EVERYTHING
    assert runs(checkout) == []
    for path in checkout.rglob("*"):
        os.utime(path)  # a fresh clone's file times: everything newer than the results
    assert runs(checkout) == []
    append(checkout / "sharplib" / "paper" / "report.py", "\n# a comment on the wording\n")
    assert runs(checkout) == []
    append(checkout / "notebooks" / "ablation.py", "\nEDITED = True\n")
    assert runs(checkout) == sorted(f"ablation {arch}" for arch in ARCHS)
    append(checkout / "sharplib" / "core" / "train.py", "\nUNUSED = 1\n")
    assert runs(checkout) == EVERYTHING
    assert runs(checkout, "RERUN=0") == [] and runs(checkout, "RERUN=no") == []
    assert runs(checkout, "RERUN=1") == EVERYTHING


def test_rerun_takes_only_one_and_zero(checkout: Path) -> None:
    done = make(checkout, "status", "RERUN=maybe", check=False)
    assert done.returncode != 0 and "RERUN must be 1" in done.stderr


@pytest.mark.slow
def test_status_names_every_step_and_what_would_run_and_runs_nothing(checkout: Path) -> None:
    runs(checkout)
    (checkout / "runs.log").unlink()
    append(checkout / "sharplib" / "core" / "sharpness.py", "\nUNUSED = 1\n")
    (checkout / "results-quick" / "gat" / "models.csv").write_text("edited\n")
    out = make(checkout, "-s", "status").stdout
    lines = out.splitlines()
    assert len(lines) == len(stephash.STEPS) * len(ARCHS) + 1, out
    assert all(" stale " in line and "sharplib/core/sharpness.py" in line
               for line in lines if line.startswith("study") and " gat " not in line)
    assert any(line.startswith("study     gat     modified") and "models.csv" in line for line in lines), out
    assert lines[-1] == "make paper PROFILE=quick would run: " + ", ".join(IN_QUICK)
    assert not (checkout / "runs.log").exists(), "make status ran a notebook"


@pytest.mark.slow
def test_a_hand_run_into_results_is_rerun_by_make(checkout: Path) -> None:
    """The README's papermill command with -p n_models 10 -p results_dir results-quick, as a new user might."""
    runs(checkout)
    papermill = checkout / "fake-venv" / "bin" / "papermill"
    subprocess.run([str(papermill), "results-quick/gat/study-source.ipynb", "results-quick/gat/notebook.ipynb",
                    "-p", "arch", "gat", "-p", "n_models", "10", "-p", "results_dir", "results-quick"], cwd=checkout, check=True)
    out = make(checkout, "-s", "status").stdout
    assert "study     gat     modified" in out
    assert runs(checkout) == ["ablation gat", "equalized gat", "measures gat", "progress gat", "study gat"]


@pytest.mark.slow
def test_two_makes_at_once_both_finish_and_run_each_step_once(checkout: Path) -> None:
    """Issue #24, row 1: no shared temporary file, no deleted build file; the second make waits for the first."""
    make(checkout, "-s", "build/deps.mk")
    append(checkout / "sharplib" / "core" / "task.py", "\nEDITED = True\n")
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MAKELEVEL")}
    command = ["make", "-s", "results", "PROFILE=quick", f"VENV={checkout / 'fake-venv'}", f"PYTHON={sys.executable}"]
    both = [subprocess.Popen(command, cwd=checkout, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env) for _ in range(2)]
    outs = [p.communicate(timeout=300)[0] for p in both]
    assert [p.returncode for p in both] == [0, 0], "\n".join(outs)
    assert (checkout / "build" / "deps.mk").is_file()
    assert sorted((checkout / "runs.log").read_text().split("\n")[:-1]) == EVERYTHING
    assert not list((checkout / "build").glob("*.tmp")), "a temporary file was left behind"


def test_args_are_the_parameters_the_hash_covers(capsys: pytest.CaptureFixture) -> None:
    fingerprint.main(["args", "ablation", "lenet5", "--results", "results"])
    assert capsys.readouterr().out.split() == "-p arch lenet5 -p profile full -p backend auto -p results_dir results".split()


def test_the_setup_targets_exist(checkout: Path) -> None:
    """What .ci/run and the README call before anything else: a dry run of each must find its rule."""
    for target in ("venv", "tex", "browser", "test", "test-fast", "status"):
        done = make(checkout, "-n", target, check=False)
        assert done.returncode == 0 and "No rule to make target" not in done.stderr, f"make {target}: {done.stderr}"
