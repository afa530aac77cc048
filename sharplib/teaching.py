"""The teaching notebook's parameters (notebooks/teaching_sharpness.py), checked as the studies' are.

`TeachingParams.from_namespace` turns the notebook's papermill `parameters` cell into a validated
frozen config, through the same `config.params_from_namespace` as `StudyParams` and
`AblationParams`: a misspelt name or a value of the wrong kind stops the notebook before any work,
with an error that names the parameter.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from .config import check_device, check_number, check_text, params_from_namespace

OWNER = "parameter"


@dataclass(frozen=True)
class TeachingParams:
    """The lesson's knobs. `factors` and `rho_grid` come out sorted, as floats, without repeats."""

    seed: int = 0
    max_epochs: int = 10
    n_restarts: int = 50
    rho: float = 0.025
    factors: tuple[float, ...] = (0.1, 0.3, 1.0, 3.0, 10.0)
    rescale_layer: int = 1
    rho_grid: tuple[float, ...] = (0.001, 0.003, 0.01, 0.025, 0.05, 0.1)
    show_solutions: bool = False
    results_dir: str = "results/teaching"
    device: str = "cpu"

    def __post_init__(self) -> None:
        check_number(OWNER, "seed", self.seed, minimum=0, integer=True)
        check_number(OWNER, "max_epochs", self.max_epochs, minimum=1, integer=True)
        check_number(OWNER, "n_restarts", self.n_restarts, minimum=2, integer=True)  # part 3 shows a spread over restarts
        check_number(OWNER, "rho", self.rho, minimum=0, strict=True)
        object.__setattr__(self, "factors", _positive_grid("factors", self.factors, "that contains 1 (the model itself)", must_hold=1))
        if self.rescale_layer not in (1, 2) or isinstance(self.rescale_layer, bool):
            raise ValueError(f"{OWNER}.rescale_layer must be 1 or 2 (the FCNN's hidden layers), got {self.rescale_layer!r}")
        object.__setattr__(self, "rho_grid", _positive_grid("rho_grid", self.rho_grid))
        if not isinstance(self.show_solutions, bool):
            raise ValueError(f"{OWNER}.show_solutions must be True or False, got {self.show_solutions!r}")
        check_text(OWNER, "results_dir", self.results_dir)
        check_device(OWNER, "device", self.device)

    @classmethod
    def from_namespace(cls, namespace: Mapping[str, Any], before: set[str] | None) -> "TeachingParams":
        """The parameters the notebook defined after `before` was taken (see `config.params_from_namespace`)."""
        return params_from_namespace(cls, namespace, before)

    @property
    def results_path(self) -> Path:
        """Where invariance.csv goes: `results_dir`, a relative one taken from the repository root."""
        path = Path(self.results_dir)
        return path if path.is_absolute() else repository_root() / path

    @property
    def data_root(self) -> Path:
        """$SHARPLIB_DATA, else the repository's data/ (the notebook may run from notebooks/, where ./data is not)."""
        return Path(os.environ.get("SHARPLIB_DATA") or repository_root() / "data")


def repository_root() -> Path:
    """The folder holding pyproject.toml and sharplib/ at or above the working directory, else the working directory."""
    here = Path.cwd().resolve()
    for folder in (here, *here.parents):
        if (folder / "pyproject.toml").exists() and (folder / "sharplib").is_dir():
            return folder
    return here


def _positive_grid(name: str, values: Any, extra: str = "", must_hold: float | None = None) -> tuple[float, ...]:
    """`values` as a sorted tuple of distinct floats, or a ValueError naming `name` and what it must be."""
    ok = isinstance(values, (list, tuple)) and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0 for v in values)
    if ok:
        grid = tuple(sorted({float(v) for v in values}))
        ok = len(grid) >= 2 and (must_hold is None or must_hold in grid)
    if not ok:
        what = " ".join(filter(None, ["a list of at least two distinct numbers > 0", extra]))
        raise ValueError(f"{OWNER}.{name} must be {what}, got {values!r}")
    return grid
