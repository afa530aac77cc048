"""sharplib/pipeline/deps.py lists every sharplib module a notebook runs: the report's rule depends on that list, the notebooks' hash
(fingerprint.py) on theirs."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import jupytext
import pytest

from sharplib.pipeline.deps import main, module_files

REPO = Path(__file__).resolve().parents[1]


NOTEBOOKS = ("study.py", "ablation.py", "teaching_sharpness.py")


@pytest.fixture(scope="module")
def imported_at_run() -> dict[str, set[Path]]:
    """Per notebook, the sharplib module files in sys.modules after its imports cell ran: one fresh interpreter
    (torch imported once), the sharplib modules dropped from sys.modules before each notebook's cell."""
    script = ["import json, sys", "found = {}"]
    for notebook in NOTEBOOKS:
        cells = [c for c in jupytext.read(REPO / "notebooks" / notebook).cells if c.cell_type == "code"]
        at = next(i for i, c in enumerate(cells) if "parameters" in c.metadata.get("tags", []))
        script += ["for name in [n for n in sys.modules if n.split('.')[0] == 'sharplib']: del sys.modules[name]",
                   f"exec(compile({chr(10).join(c.source for c in cells[:at])!r}, {notebook!r}, 'exec'), {{}})",
                   f"found[{notebook!r}] = sorted(m.__file__ for n, m in sys.modules.items() if n.split('.')[0] == 'sharplib')"]
    script.append("print(json.dumps(found))")
    out = subprocess.run([sys.executable, "-c", "\n".join(script)], cwd=REPO, capture_output=True, text=True, check=True).stdout
    return {name: {Path(f).resolve() for f in files} for name, files in json.loads(out.splitlines()[-1]).items()}


@pytest.mark.parametrize("notebook", NOTEBOOKS)
def test_derived_list_holds_every_module_the_notebook_imports(notebook: str, imported_at_run: dict[str, set[Path]]) -> None:
    derived = set(module_files([REPO / "notebooks" / notebook]))
    loaded = imported_at_run[notebook]
    assert loaded, "the notebook imported no sharplib module?"
    assert loaded <= derived, f"imported by {notebook} but not listed: {sorted(p.name for p in loaded - derived)}"
    assert all(p.is_relative_to(REPO / "sharplib") for p in derived)


def test_a_new_module_on_the_path_is_listed(tmp_path: Path) -> None:
    # a module imported only inside a function, two steps away from the notebook, still counts
    package = tmp_path / "sharplib"
    (package / "sub").mkdir(parents=True)
    files = {
        "__init__.py": "", "a.py": "from . import b\nfrom .sub.d import f\n", "b.py": "def g():\n    from .c import h\n",
        "c.py": "import os\n", "sub/__init__.py": "", "sub/d.py": "from ..c import h\n", "unused.py": "",
    }
    for name, text in files.items():
        (package / name).write_text(text)
    notebook = tmp_path / "nb.py"
    notebook.write_text("import numpy\nfrom sharplib import a\n")
    listed = {p.relative_to(package).as_posix() for p in module_files([notebook], root=package)}
    assert listed == {"__init__.py", "a.py", "b.py", "c.py", "sub/__init__.py", "sub/d.py"}


def test_command_line(capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)
    assert main(["notebooks/study.py"]) == 0
    assert "sharplib/experiments/study.py" in capsys.readouterr().out.split()
    assert main(["--make", "X=notebooks/study.py", "Y=notebooks/teaching_sharpness.py,sharplib/paper/report.py"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].startswith("X := sharplib/__init__.py ")
    assert "sharplib/experiments/teaching.py" in lines[2] and "sharplib/paper/report.py" in lines[2]
    assert main([]) == 2 and main(["--make", "notebooks/study.py"]) == 2


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_makefile_rules_depend_on_the_derived_lists(tmp_path: Path) -> None:
    # In a copy, so that the generated build/deps.mk does not land in the checkout.
    for name in ("Makefile", "pyproject.toml"):
        shutil.copy2(REPO / name, tmp_path / name)
    for folder in ("sharplib", "notebooks"):
        shutil.copytree(REPO / folder, tmp_path / folder, ignore=shutil.ignore_patterns("__pycache__", "*.ipynb"))
    venv = Path(sys.prefix)
    database = subprocess.run(["make", "-pq", "PROFILE=quick", f"VENV={venv}", "-o", f"{venv}/.installed"],
                              cwd=tmp_path, capture_output=True, text=True).stdout
    assert (tmp_path / "build" / "deps.mk").exists()

    def prerequisites(target: str) -> set[str]:
        lines = [line for line in database.splitlines() if line.startswith(f"{target}:")]
        return set(lines[-1].partition(":")[2].partition("|")[0].split())  # the last: after make reread deps.mk

    def derived(source: str) -> set[str]:
        return {p.relative_to(REPO).as_posix() for p in module_files([REPO / source])}

    for arch in ("fcnn", "lenet5", "gat"):  # the notebooks' own inputs are checked by content (tests/test_fingerprint.py)
        assert prerequisites(f"results-quick/{arch}/study.lock") == {"FORCE"}
        for step in ("ablation", "measures", "progress"):
            assert prerequisites(f"results-quick/{arch}/{step}.lock") == {f"results-quick/{arch}/study.lock", "FORCE"}
        assert prerequisites(f"results-quick/{arch}/equalized.lock") == {f"results-quick/{arch}/progress.lock", "FORCE"}
    assert prerequisites("paper/generated/results.tex") >= derived("sharplib/paper/report.py")
    assert prerequisites("paper/generated/equalized.tex") >= derived("sharplib/paper/equalized_report.py")
    assert "sharplib/experiments/study.py" in derived("notebooks/study.py")
