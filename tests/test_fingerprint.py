"""Results are reused by content: the hash changes with the code on a notebook's path, its parameters and data, never with file times."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from sharplib import fingerprint
from sharplib.protocol import spec

REPO = Path(__file__).resolve().parents[1]
ARCHS = ("fcnn", "lenet5", "gat")


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    """A copy of what the hash reads (and what make needs), so that tests can edit it."""
    for name in ("Makefile", "pyproject.toml"):
        shutil.copy2(REPO / name, tmp_path / name)
    for folder in ("sharplib", "notebooks"):
        shutil.copytree(REPO / folder, tmp_path / folder, ignore=shutil.ignore_patterns("__pycache__", "*.ipynb"))
    return tmp_path


def _hashes(root: Path, profile: str = "full", backend: str = "auto") -> dict[tuple[str, str], str]:
    return {(step, arch): fingerprint.fingerprint(step, arch, profile, backend, root)["hash"] for step in fingerprint.STEPS for arch in ARCHS}


def _edit(path: Path) -> None:
    path.write_text(path.read_text() + "\n# an edit\n")


def test_data_folders_follow_the_protocol() -> None:
    assert {arch: spec(arch).dataset.replace("_", "-") + "/" for arch in ARCHS} == fingerprint.DATA_FOLDERS


def test_hash_covers_the_notebooks_modules_and_nothing_else(checkout: Path) -> None:
    before = _hashes(checkout)
    assert len(set(before.values())) == 6, "each step of each arch has its own hash"
    for path in [*checkout.glob("sharplib/*.py"), *checkout.glob("notebooks/*.py")]:
        os.utime(path, (1, 1))  # file times alone
    assert _hashes(checkout) == before
    _edit(checkout / "sharplib" / "teaching.py")  # on no study's path
    assert _hashes(checkout) == before
    _edit(checkout / "notebooks" / "ablation.py")
    after = _hashes(checkout)
    assert [key for key in before if after[key] != before[key]] == [("ablation", a) for a in ARCHS]
    _edit(checkout / "sharplib" / "sharpness.py")
    assert all(a != b for a, b in zip(_hashes(checkout).values(), after.values()))


def test_parameters_and_data_are_covered(checkout: Path) -> None:
    base = fingerprint.fingerprint("study", "gat", "full", "auto", checkout)
    assert fingerprint.fingerprint("study", "gat", "quick", "auto", checkout)["hash"] != base["hash"]
    assert fingerprint.fingerprint("study", "gat", "full", "ray", checkout)["hash"] != base["hash"]
    assert sorted(base["data"]) == sorted(k for k in fingerprint.checksums.RAW if k.startswith("cora/"))
    ablation = fingerprint.fingerprint("ablation", "gat", "full", "auto", checkout)
    assert ablation["study"] == base["hash"]


def test_stale_reason_names_what_changed(checkout: Path, tmp_path: Path) -> None:
    current = fingerprint.fingerprint("study", "fcnn", "full", "auto", checkout)
    results = tmp_path / "results.json"
    assert "does not exist" in fingerprint.stale_reason(results, current)
    results.write_text(json.dumps({"tau": 0.1}))
    assert "records no input hash" in fingerprint.stale_reason(results, current)
    results.write_text(json.dumps({"made_from": current}))
    assert fingerprint.stale_reason(results, current) is None
    _edit(checkout / "sharplib" / "train.py")
    reason = fingerprint.stale_reason(results, fingerprint.fingerprint("study", "fcnn", "full", "auto", checkout))
    assert reason is not None and "sharplib/train.py" in reason and "sharplib/stats.py" not in reason
    results.write_text("{not json")
    assert "not a readable results file" in fingerprint.stale_reason(results, current)
    with pytest.raises(ValueError, match="arch"):
        fingerprint.fingerprint("study", "resnet", "full", "auto", checkout)


# Stands in for papermill: records the run and writes the results file a notebook would, with the hash of its inputs.
FAKE_PAPERMILL = """#!{python}
import json, sys
from pathlib import Path
sys.path.insert(0, str(Path.cwd()))
from sharplib import fingerprint
args = sys.argv[1:]
values = dict(zip(args[args.index("-p") + 1::3], args[args.index("-p") + 2::3]))
step = "ablation" if "ablation" in Path(args[args.index("--cwd") + 2]).name else "study"
made_from = fingerprint.fingerprint(step, values["arch"], values["profile"], values["backend"], Path.cwd())
out = Path(values["results_dir"]) / values["arch"] / fingerprint.STEPS[step][1]
out.parent.mkdir(parents=True, exist_ok=True)
out.write_text(json.dumps({{"made_from": made_from}}))
with open("runs.log", "a") as log:
    log.write(f"{{step}} {{values['arch']}}\\n")
"""


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_make_reruns_exactly_the_notebooks_whose_inputs_changed(checkout: Path) -> None:
    venv = checkout / "fake-venv"
    (venv / "bin").mkdir(parents=True)
    (venv / ".installed").touch()
    (venv / "bin" / "jupytext").write_text("#!/bin/sh\nexit 0\n")
    (venv / "bin" / "papermill").write_text(FAKE_PAPERMILL.format(python=sys.executable))
    for tool in ("jupytext", "papermill"):
        (venv / "bin" / tool).chmod(0o755)

    def make_results(*extra: str) -> list[str]:
        log = checkout / "runs.log"
        log.unlink(missing_ok=True)
        done = subprocess.run(["make", "results", "PROFILE=quick", f"VENV={venv}", f"PYTHON={sys.executable}", *extra],
                              cwd=checkout, capture_output=True, text=True)
        assert done.returncode == 0, done.stdout + done.stderr
        return sorted(log.read_text().split("\n")[:-1]) if log.exists() else []

    everything = sorted(f"{step} {arch}" for step in ("study", "ablation") for arch in ARCHS)
    assert make_results() == everything
    assert make_results() == []
    for path in checkout.rglob("*"):
        os.utime(path)  # a fresh clone's file times: everything newer than the results
    assert make_results() == []
    _edit(checkout / "notebooks" / "ablation.py")
    assert make_results() == sorted(f"ablation {arch}" for arch in ARCHS)
    _edit(checkout / "sharplib" / "sharpness.py")
    assert make_results() == everything
    assert make_results("RERUN=1") == everything


@pytest.mark.parametrize("step", sorted(fingerprint.STEPS))
@pytest.mark.parametrize("arch", ARCHS)
def test_tracked_results_belong_to_this_checkout(step: str, arch: str) -> None:
    """The tracked results/ are the full profile's at the code as it is: a change on a notebook's path ships with its rerun."""
    current = fingerprint.fingerprint(step, arch, "full", "auto")
    reason = fingerprint.stale_reason(REPO / "results" / arch / fingerprint.STEPS[step][1], current)
    assert reason is None, f"{reason}: rerun it (make paper; on a GPU scripts/gpu-canonical-run.sh) and commit results/"
