"""The sharplib modules a notebook (or module) runs, read from the code: what `make` must treat as its prerequisites.

    python -m sharplib.pipeline.deps notebooks/study.py      ->  sharplib/__init__.py sharplib/experiments/ablation.py ...
    python -m sharplib.pipeline.deps --make STUDY_MODULES=notebooks/study.py ...   ->  STUDY_MODULES := sharplib/...

The Makefile includes such assignments, so a module that joins a study's import chain becomes its
prerequisite without anyone remembering it. Imports are read with `ast`, nothing imported, so this runs
before the venv exists; every `import` counts (also one inside a function), the closure over sharplib's own
imports is taken, and the package's `__init__.py` counts whenever a module of it does.
"""
from __future__ import annotations

import ast
import functools
import sys
from pathlib import Path

PACKAGE = "sharplib"
ROOT = Path(__file__).resolve().parents[1]  # sharplib/


def module_file(name: str, root: Path = ROOT) -> Path | None:
    """sharplib/<x>.py (or <x>/__init__.py) for the dotted `name` ("sharplib.x"), None if not in the package."""
    parts = name.split(".")
    if parts[0] != PACKAGE:
        return None
    base = root.joinpath(*parts[1:])
    for candidate in (base.with_suffix(".py") if len(parts) > 1 else None, base / "__init__.py"):
        if candidate is not None and candidate.is_file():
            return candidate
    return None


def module_name(path: Path, root: Path) -> str | None:
    """The dotted name of `path` if it lies in the package, else None (a notebook)."""
    try:
        rel = path.resolve().relative_to(root)
    except ValueError:
        return None
    parts = [PACKAGE, *rel.with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def package_of(path: Path, root: Path = ROOT) -> str | None:
    """The dotted package a relative import in `path` starts from; None for a file outside the package (a notebook)."""
    own = module_name(path, root)
    return None if own is None else own if path.name == "__init__.py" else own.rpartition(".")[0]


def import_base(node: ast.ImportFrom, package: str | None) -> str | None:
    """The dotted module a `from ... import` statement reads from; None for a relative one outside the package."""
    if not node.level:
        return node.module or ""
    if package is None:
        return None
    # from .x import y, from ..core import x: each dot past the first goes one package up
    anchor = package.split(".")
    return ".".join(anchor[: len(anchor) - (node.level - 1)] + ([node.module] if node.module else []))


def imported_names(path: Path, root: Path = ROOT) -> set[str]:
    """The dotted names of the sharplib modules `path` imports directly (submodules named in `from sharplib import x` too)."""
    try:
        names = _import_candidates(path.read_text(), package_of(path, root))
    except SyntaxError as error:
        error.filename = str(path)
        raise
    return {n for n in names if module_file(n, root) is not None}


# `make status` walks the same files once per step and once more per lock's commit: parse each text once a process
@functools.lru_cache(maxsize=None)
def _import_candidates(source: str, package: str | None) -> frozenset[str]:
    """Every dotted name the source's imports could mean a module by (`from a import b`: a and a.b)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = import_base(node, package)
            if base is None:
                continue
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)  # kept only where it is a module
    return frozenset(names)


def module_files(paths: list[Path], root: Path = ROOT, skip: frozenset[str] = frozenset()) -> list[Path]:
    """The files of every sharplib module that running `paths` imports, transitively, `paths`' own package files included.

    Modules named in `skip` ("sharplib.paper.report") are left out, and so is what only they import."""
    seen: set[Path] = set()
    todo = [Path(p).resolve() for p in paths]
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        names = imported_names(path, root) - skip
        for name in names:
            # importing sharplib.a.b runs sharplib/__init__.py and sharplib/a/__init__.py first
            parts = name.split(".")
            todo.extend(f for f in (module_file(".".join(parts[:i]), root) for i in range(1, len(parts) + 1)) if f)
    return sorted(p for p in seen if module_name(p, root) is not None)


def main(argv: list[str]) -> int:
    """`FILE...`: the modules, on one line. `--make VAR=FILE[,FILE...] ...`: one make assignment per VAR."""
    make = argv[:1] == ["--make"]
    args = argv[1:] if make else argv
    if not args or (make and not all("=" in a for a in args)):
        command = f"python -m {PACKAGE}.pipeline.deps"
        print(f"usage: {command} FILE.py...  or  {command} --make VAR=FILE.py[,FILE.py] ...\n"
              "  prints the sharplib modules the files import, transitively", file=sys.stderr)
        return 2
    cwd = Path.cwd().resolve()

    def listed(files: list[str]) -> str:
        return " ".join(str(p.relative_to(cwd)) if p.is_relative_to(cwd) else str(p) for p in module_files([Path(f) for f in files]))

    if not make:
        print(listed(args))
        return 0
    print(f"# Written by `python -m {PACKAGE}.pipeline.deps` from the imports in the code; make rewrites it when a module changes.")
    for arg in args:
        var, _, files = arg.partition("=")
        print(f"{var} := {listed(files.split(','))}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
