"""Validation shared by the frozen configuration dataclasses (TrainConfig, SharpnessConfig, and
the notebooks' parameters: StudyParams, AblationParams, TeachingParams).

Configs are filled from a notebook's papermill `parameters` cell, so a typo or a string where
a number belongs must stop the run, before any work, with an error that names the field.
`params_from_namespace` is the one way a notebook turns its parameters cell into such a config.

Types are refused, never converted: an integer field takes an `int` (not 2.0, not True), a
switch a `bool` (not 1), a choice the listed value of the listed type (`p=2`, not 2.0). A
converted value would also hash differently (2.0 vs 2 in JSON), so a pool could not resume.
Numbers must be finite: an infinite ρ or learning rate only ever gives NaN.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any, Mapping, TypeVar

from .task import resolve_device

C = TypeVar("C")


def config_from_dict(cls: type[C], values: dict[str, Any]) -> C:
    """Build `cls` from a dict, rejecting unknown fields by name."""
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"{cls.__name__}: unknown field(s) {unknown}; known fields are {sorted(known)}")
    return cls(**values)


def params_from_namespace(cls: type[C], namespace: Mapping[str, Any], before: set[str] | None) -> C:
    """The frozen config `cls` built from the names a notebook defined after `before` was taken.

    A notebook takes `before = set(globals())` just above its papermill `parameters` cell and calls
    this just below it (papermill injects its values in between), so the names new since then are
    the parameters, private `_names` aside. A misspelt one would otherwise be a variable nobody
    reads (papermill only warns): here it is an error naming it. `before=None` skips that check and
    reads the fields only, for a cell rerun interactively after later cells defined more names.
    """
    if before is None:
        fields = {f.name for f in dataclasses.fields(cls)}
        return config_from_dict(cls, {k: namespace[k] for k in fields if k in namespace})
    return config_from_dict(cls, {k: v for k, v in namespace.items() if not k.startswith("_") and k not in before})


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
