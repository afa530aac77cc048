"""Validation shared by the frozen configuration dataclasses (TrainConfig, SharpnessConfig).

Configs are filled from a notebook's papermill `parameters` cell, so a typo or a string where
a number belongs must stop the run with an error that names the field.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any, TypeVar

C = TypeVar("C")


def config_from_dict(cls: type[C], values: dict[str, Any]) -> C:
    """Build `cls` from a dict, rejecting unknown fields by name."""
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"{cls.__name__}: unknown field(s) {unknown}; known fields are {sorted(known)}")
    return cls(**values)


def check_number(owner: str, name: str, value: Any, *, minimum: float | None = None, strict: bool = False, integer: bool = False) -> None:
    """Raise a ValueError naming `owner.name` unless `value` is a (bounded) int/float, not a bool or str."""
    kinds = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds):
        kind = "an integer" if integer else "a number"
        raise ValueError(f"{owner}.{name} must be {kind}, got {value!r} ({type(value).__name__})")
    if value != value:  # NaN
        raise ValueError(f"{owner}.{name} must be a number, got NaN")
    if minimum is not None and (value <= minimum if strict else value < minimum):
        bound = f"> {minimum}" if strict else f">= {minimum}"
        raise ValueError(f"{owner}.{name} must be {bound}, got {value!r}")


def check_choice(owner: str, name: str, value: Any, choices: tuple) -> None:
    if value not in choices:
        raise ValueError(f"{owner}.{name} must be one of {list(choices)}, got {value!r}")


def config_hash(*parts: Any) -> str:
    """Short stable hash of JSON-serializable parts (dataclasses are turned into dicts)."""
    plain = [dataclasses.asdict(p) if dataclasses.is_dataclass(p) else p for p in parts]
    return hashlib.sha256(json.dumps(plain, sort_keys=True, default=str).encode()).hexdigest()[:16]
