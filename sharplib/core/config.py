"""Validation shared by the frozen configuration dataclasses (TrainConfig, SharpnessConfig, the notebooks' parameters).

Configs are filled from a notebook's papermill `parameters` cell (`params_from_namespace`), so a typo or a
string where a number belongs must stop the run, before any work, with an error that names the field.
Types are refused, never converted: an integer field takes an `int` (not 2.0, not True), a switch a `bool`
(not 1), a choice the listed value of the listed type (`p=2`, not 2.0). A converted value would also hash
differently (2.0 vs 2 in JSON), so a pool could not resume. Numbers must be finite: an infinite ρ or learning
rate only ever gives NaN.
"""
from __future__ import annotations

import ast
import dataclasses
import hashlib
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any, Mapping, Sequence, TypeVar

from .task import resolve_device

C = TypeVar("C")


def config_from_dict(cls: type[C], values: dict[str, Any]) -> C:
    """Build `cls` from a dict, rejecting unknown fields by name."""
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"{cls.__name__}: unknown field(s) {unknown}; known fields are {sorted(known)}")
    return cls(**values)


def params_from_namespace(cls: type[C], namespace: Mapping[str, Any]) -> C:
    """The frozen config `cls` built from a notebook's namespace, by field name (absent fields keep their defaults).

    The check cell comes right after the papermill `parameters` cell. A misspelt parameter, there or
    in the cell papermill injects after it, would otherwise be a variable nobody reads (papermill only
    warns): the names those cells assigned are read from the kernel's input history (`In`, see
    `parameter_names`), and one that is not a field is an error naming it. Values are always read
    by field name, so Run All after an edit, or a second Run All, checks the values as they are now.
    """
    from .notebook import RunEarlierCell

    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(parameter_names(namespace.get("In") or []) - known)
    if unknown:
        raise ValueError(f"{cls.__name__}: unknown field(s) {unknown} (a misspelt parameter?); known fields are {sorted(known)}")
    values = {k: namespace[k] for k in known if k in namespace}
    required = {f.name for f in dataclasses.fields(cls)
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING}
    if not values or required - set(values):
        raise RunEarlierCell("the parameters are not set yet: run the cell tagged `parameters` (under the imports) first")
    return cls(**values)


def parameter_names(history: Sequence[str]) -> set[str]:
    """The names assigned by the cells run just before the current one (the last entry of IPython's `In`)
    that hold nothing but `name = literal` lines: the parameters cell and the cell papermill injects.

    Only that unbroken run counts, so rerunning the check cell after later cells defined more names
    checks values only, as does a kernel without history (plain `exec`).
    """
    names: set[str] = set()
    for source in reversed(history[:-1]):
        assigned = _literal_assignments(source)
        if not assigned:
            break
        names |= assigned
    return names


def _literal_assignments(source: str) -> set[str]:
    """The names of a cell made only of `name = literal` statements; empty for any other cell."""
    try:
        body = ast.parse(source).body
    except SyntaxError:
        return set()
    names = set()
    for node in body:
        if not (isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name)):
            return set()
        try:
            ast.literal_eval(node.value)
        except ValueError:
            return set()
        names.add(node.targets[0].id)
    return names


def check_number(owner: str, name: str, value: Any, *, minimum: float | None = None, strict: bool = False, integer: bool = False) -> None:
    """Raise a ValueError naming `owner.name` unless `value` is a (bounded) int/float, not a bool or str."""
    kinds = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds):
        kind = "an integer" if integer else "a number"
        raise ValueError(f"{owner}.{name} must be {kind}, got {value!r} ({type(value).__name__})")
    if not math.isfinite(value):
        raise ValueError(f"{owner}.{name} must be a finite number, got {value!r}")
    if minimum is not None and (value <= minimum if strict else value < minimum):
        bound = f"> {minimum}" if strict else f">= {minimum}"
        raise ValueError(f"{owner}.{name} must be {bound}, got {value!r}")


def check_choice(owner: str, name: str, value: Any, choices: tuple) -> None:
    """Raise a ValueError naming `owner.name` unless `value` is one of `choices`, of the same type (1 is not True, 2.0 not 2)."""
    if not any(type(value) is type(c) and value == c for c in choices):
        raise ValueError(f"{owner}.{name} must be one of {list(choices)}, got {value!r} ({type(value).__name__})")


def check_device(owner: str, name: str, value: Any) -> None:
    """Raise a ValueError naming `owner.name` unless `value` is 'auto' or a device this machine has."""
    check_text(owner, name, value)
    try:
        resolve_device(value)
    except ValueError as err:
        raise ValueError(f"{owner}.{name}: {err}") from None


def check_writable_dir(owner: str, name: str, path: str | os.PathLike) -> Path:
    """`path` as a Path if it is a folder this process can write, or one it can create; else a ValueError naming
    `owner.name`. The check runs before any work, so a bad folder never costs a training run. It writes for real
    (os.access says yes to root everywhere, /proc included): it creates the missing folders and a file, then removes
    them, so nothing is left behind."""
    path = Path(path)
    existing = path
    while not os.path.exists(existing) and existing != existing.parent:  # os.path: a name too long is missing, not an error
        existing = existing.parent
    if not existing.is_dir():
        raise ValueError(f"{owner}.{name} = {str(path)!r} cannot be created: {existing} is not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ValueError(f"{owner}.{name} = {str(path)!r} cannot be written: no write permission on {existing}")
    try:
        _try_writing(existing, path)
    except OSError as err:
        raise ValueError(f"{owner}.{name} = {str(path)!r} cannot be written: {err.strerror or err} ({err.filename or existing})") from None
    return path


def _try_writing(existing: Path, path: Path) -> None:
    """Create the folders from `existing` down to `path` and a file in `path`, then remove what was created."""
    below = path.relative_to(existing)
    missing = [existing / part for part in reversed(below.parents[:-1])] + ([path] if below.parts else [])
    created = []
    try:
        for folder in missing:
            os.mkdir(folder)
            created.append(folder)
        with tempfile.TemporaryFile(dir=path):
            pass
    finally:
        for folder in reversed(created):
            os.rmdir(folder)


def check_text(owner: str, name: str, value: Any) -> None:
    """Raise a ValueError naming `owner.name` unless `value` is a string with something in it."""
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{owner}.{name} must be a non-empty string, got {value!r}")


def config_hash(*parts: Any) -> str:
    """Short stable hash of JSON-serializable parts (dataclasses are turned into dicts)."""
    plain = [dataclasses.asdict(p) if dataclasses.is_dataclass(p) else p for p in parts]
    return hashlib.sha256(json.dumps(plain, sort_keys=True, default=str).encode()).hexdigest()[:16]
