"""A step's hash covers the code that computes its numbers, its parameters and its data: not rendering, tooling or file times."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from sharplib.core.archs import ARCHS
from sharplib.pipeline import deps, stephash
from sharplib.experiments.protocol import spec

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    """A copy of what the hash reads, so that tests can edit it."""
    for folder in ("sharplib", "notebooks"):
        shutil.copytree(REPO / folder, tmp_path / folder, ignore=shutil.ignore_patterns("__pycache__", "*.ipynb"))
    return tmp_path


def hashes(root: Path, profile: str = "full", backend: str = "auto") -> dict[tuple[str, str], str]:
    return {
        (step, arch): stephash.fingerprint(step, arch, profile, backend, root)["hash"] for step in stephash.STEPS for arch in ARCHS
    }


def append(path: Path, text: str) -> None:
    path.write_text(path.read_text() + text)


def test_data_folders_follow_the_protocol() -> None:
    assert {arch: spec(arch).dataset.replace("_", "-") + "/" for arch in ARCHS} == stephash.DATA_FOLDERS


@pytest.mark.slow
def test_rendering_and_tooling_leave_every_hash_alone(checkout: Path) -> None:
    before = hashes(checkout)
    assert len(set(before.values())) == 15, "each step (5) of each arch (3) has its own hash"
    for path in [*checkout.glob("sharplib/**/*.py"), *checkout.glob("notebooks/*.py")]:
        os.utime(path, (1, 1))  # file times alone
    for name in ("paper/report", "paper/measures_report", "paper/progress_report", "paper/equalized_report", "pipeline/fingerprint",
                 "pipeline/lockfile",
                 "pipeline/evidence", "pipeline/deps", "experiments/teaching"):
        append(checkout / "sharplib" / f"{name}.py", "\nWORDING = 'a statement, not only a comment'\n")
    assert hashes(checkout) == before


@pytest.mark.slow
def test_code_that_computes_changes_the_hashes_of_the_steps_that_run_it(checkout: Path) -> None:
    before = hashes(checkout)
    append(checkout / "sharplib" / "panel" / "measures.py", "\nEDITED = True\n")  # the panel: the measures and equalized steps only
    after = hashes(checkout)
    assert {key for key in before if after[key] != before[key]} == {(step, arch) for step in ("measures", "equalized") for arch in ARCHS}
    append(checkout / "notebooks" / "ablation.py", "\nEDITED = True\n")
    again = hashes(checkout)
    assert {key for key in after if again[key] != after[key]} == {("ablation", arch) for arch in ARCHS}
    append(checkout / "sharplib" / "core" / "train.py", "\nUNUSED = 1\n")  # training: every step, through the study's hash too
    assert all(a != b for a, b in zip(hashes(checkout).values(), again.values()))


@pytest.mark.slow
def test_docstrings_comments_and_layout_of_computing_code_leave_every_hash_alone(checkout: Path) -> None:
    before = hashes(checkout)
    train = checkout / "sharplib" / "core" / "train.py"
    source = train.read_text()
    docstring = source.split('"""')[1]
    source = source.replace(docstring, "One line now.", 1)  # the module's docstring
    source = source.replace("def should_stop(", "# why the rule is what it is\ndef should_stop(", 1)
    source = source.replace("    epoch = len(epoch_losses)\n", "    epoch = len(\n        epoch_losses\n    )  # rewrapped\n", 1)
    train.write_text(source)
    notebook = checkout / "notebooks" / "study.py"
    notebook.write_text(notebook.read_text().replace("# %% [markdown]\n", "# %% [markdown]\n# A new sentence in the lab report.\n", 1))
    assert hashes(checkout) == before
    train.write_text(source.replace("epoch = len(", "epoch = 1 + len(", 1))  # one number: every step
    assert all(a != b for a, b in zip(hashes(checkout).values(), before.values()))


def test_code_digest_names_a_file_that_does_not_parse(tmp_path: Path) -> None:
    broken = tmp_path / "broken.py"
    broken.write_text("def f(:\n")
    with pytest.raises(ValueError, match="broken.py: not valid Python"):
        stephash.code_digest(broken)


def test_parameters_data_and_the_upstream_step_are_covered(checkout: Path) -> None:
    base = stephash.fingerprint("study", "gat", "full", "auto", checkout)
    assert stephash.fingerprint("study", "gat", "quick", "auto", checkout)["hash"] != base["hash"]
    assert stephash.fingerprint("study", "gat", "full", "ray", checkout)["hash"] != base["hash"]
    assert sorted(base["data"]) == sorted(k for k in stephash.checksums.RAW if k.startswith("cora/"))
    assert stephash.fingerprint("ablation", "gat", "full", "auto", checkout)["upstream"] == {"study": base["hash"]}
    with pytest.raises(ValueError, match="arch"):
        stephash.fingerprint("study", "resnet", "full", "auto", checkout)


def test_changed_inputs_names_them(checkout: Path) -> None:
    old = stephash.fingerprint("ablation", "fcnn", "full", "auto", checkout)
    append(checkout / "sharplib" / "core" / "sharpness.py", "\nEDITED = True\n")
    new = stephash.fingerprint("ablation", "fcnn", "full", "auto", checkout)
    assert stephash.changed_inputs(old, new) == ["sharplib/core/sharpness.py", "upstream:study"]


def test_no_module_that_computes_imports_one_that_renders() -> None:
    """Rendering and tooling are left out of the hash with what only they import: a computing module that
    imported them would hide code that moves numbers from the hash."""
    left_out = stephash.RENDERING | stephash.TOOLING
    for step in stephash.STEPS:
        for path in stephash.compute_files(step):
            if path.is_relative_to(stephash.REPO / "sharplib"):
                assert not deps.imported_names(path) & left_out, f"{path.name} imports {deps.imported_names(path) & left_out}"


def test_notebook_defaults_are_the_parameters_cell() -> None:
    defaults = stephash.notebook_defaults("study")
    assert defaults["arch"] == "fcnn" and defaults["n_models"] is None and "backend" in defaults


def test_a_module_moved_to_a_folder_keeps_its_relocatable_digest(tmp_path: Path) -> None:
    def module(root: Path, where: str, source: str) -> Path:
        path = root / "sharplib" / where
        path.parent.mkdir(parents=True, exist_ok=True)
        for folder in (root / "sharplib", path.parent):
            (folder / "__init__.py").touch()
        (root / "sharplib" / "b.py").write_text("def f():\n    return 2\n\n\ndef g():\n    return 3\n")
        path.write_text(f'"""Docstring."""\nfrom pathlib import Path\n{source}\nX = f()\n')
        return path

    flat = module(tmp_path / "flat", "a.py", "from .b import f\nROOT = Path(__file__).resolve().parents[1]")
    moved = module(tmp_path / "moved", "core/a.py", "from ..b import f\nROOT = Path(__file__).resolve().parents[2]")
    absolute = module(tmp_path / "absolute", "core/a.py", "from sharplib.b import f\nROOT = Path(__file__).resolve().parents[2]")
    for path, first in ((flat, "from .b import f"), (moved, "from ..b import f"), (absolute, "from sharplib.b import f")):
        split = first.replace(" f", " g") + "\n" + first  # `from x import g, f` in one place, two statements in another
        path.write_text(path.read_text().replace(first, first.replace(" f", " g, f") if path is flat else split))
    digests = {stephash.relocatable_digest(path, root) for path, root in
               ((flat, tmp_path / "flat"), (moved, tmp_path / "moved"), (absolute, tmp_path / "absolute"))}
    assert len(digests) == 1
    assert stephash.code_digest(flat) != stephash.code_digest(moved)  # the plain digest sees the move
    moved.write_text(moved.read_text().replace("X = f()", "X = f() + 1"))  # code, not place: another digest
    assert stephash.relocatable_digest(moved, tmp_path / "moved") not in digests
    assert stephash.relocatable_digest(moved.parent / "__init__.py", tmp_path / "moved") is None  # an empty package file


@pytest.mark.slow
def test_the_relocatable_hash_sees_every_step_and_not_prose(checkout: Path) -> None:
    keys = [(step, arch) for step in stephash.STEPS for arch in ARCHS]
    before = {key: stephash.relocatable_fingerprint(*key, "full", "auto", checkout) for key in keys}
    assert len(set(before.values())) == 15
    append(checkout / "sharplib" / "core" / "train.py", "\n# a comment\n")
    assert {k: stephash.relocatable_fingerprint(*k, "full", "auto", checkout) for k in before} == before
    append(checkout / "sharplib" / "core" / "train.py", "\nEDITED = True\n")
    assert all(stephash.relocatable_fingerprint(*k, "full", "auto", checkout) != v for k, v in before.items())
