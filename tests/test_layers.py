"""sharplib's layers are folders, and an import only goes to the same or an earlier layer (issue #22):

    core < pools < panel < experiments < pipeline < paper

Imports are read with `ast` (relative and absolute, also inside a function), nothing imported. Every `__init__.py`
is empty: a re-export would widen the hash of every step that imports the package (sharplib/pipeline/stephash.py).
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

from sharplib.pipeline import deps

PACKAGE = Path(__file__).resolve().parents[1] / "sharplib"
LAYERS = ("core", "pools", "panel", "experiments", "pipeline", "paper")
MODULES = sorted(PACKAGE.rglob("*.py"))


def module_name(path: Path) -> str:
    name = deps.module_name(path, PACKAGE)
    assert name is not None, path
    return name


def imported(path: Path, source: str | None = None) -> set[str]:
    """The dotted names `path` (or `source`, read as if it were `path`) imports from sharplib (the submodules named
    in `from sharplib.x import y` too), resolved as the pipeline resolves them (`deps.import_base`)."""
    package = deps.package_of(path, PACKAGE)
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text() if source is None else source, str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = deps.import_base(node, package)
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return {n for n in names if n.split(".")[0] == "sharplib"}


def layer(name: str) -> int | None:
    """The rank of the layer a dotted sharplib name lies in; None for the package itself."""
    parts = name.split(".")
    return LAYERS.index(parts[1]) if len(parts) > 1 and parts[1] in LAYERS else None


def test_every_layer_is_a_folder_and_the_package_holds_nothing_else() -> None:
    assert {p.name for p in PACKAGE.iterdir() if p.is_dir() and p.name != "__pycache__"} == set(LAYERS)
    loose = sorted(p.name for p in PACKAGE.glob("*.py") if p.name != "__init__.py")
    assert not loose, f"modules directly in sharplib/ (move each into its layer's folder): {loose}"
    assert all(len(p.relative_to(PACKAGE).parts) == 2 for p in MODULES if p.name != "__init__.py" or p.parent != PACKAGE)


@pytest.mark.parametrize("path", [p for p in MODULES if p.name == "__init__.py"], ids=lambda p: str(p.relative_to(PACKAGE)))
def test_init_files_are_empty(path: Path) -> None:
    assert path.read_text() == "", f"{path.relative_to(PACKAGE.parent)}: a package's __init__.py stays empty (no re-exports)"


@pytest.mark.parametrize("path", [p for p in MODULES if p.name != "__init__.py"], ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_go_to_the_same_or_an_earlier_layer(path: Path) -> None:
    own = layer(module_name(path))
    assert own is not None
    later = sorted(n for n in imported(path) if (layer(n) or 0) > own)
    assert not later, f"{module_name(path)} ({LAYERS[own]}) imports a later layer: {later}"


def test_the_import_reader_sees_relative_and_function_level_imports() -> None:
    source = "import os\nfrom ..pools import pool\nfrom .train import x\n\n\ndef f():\n    from sharplib.paper.report import y\n"
    names = imported(PACKAGE / "core" / "probe.py", source)  # the path only places the module: nothing is read or written
    assert {"sharplib.pools.pool", "sharplib.core.train", "sharplib.paper.report"} <= names and "os" not in names
    assert sorted(LAYERS[layer(n)] for n in names if layer(n) is not None and n.count(".") == 2) == ["core", "paper", "pools"]
