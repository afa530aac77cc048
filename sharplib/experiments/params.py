"""The notebooks' parameters: a frozen dataclass per notebook, built from the values its papermill cell set."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Mapping, TypeVar

from ..core.archs import ARCHS
from ..core.config import check_choice, check_device, check_number, check_text, params_from_namespace
from ..core.notebook import results_path
from ..pools.pool import BACKENDS
from .profiles import PROFILES, profile_default

P = TypeVar("P", bound="NotebookParams")
OWNER = "parameter"  # how an error names the notebook's parameters: "parameter.n_models must be ..."


class NotebookParams:
    """Read from a notebook's namespace; results go under `results_dir` (a subclass holds that field)."""

    results_dir: str | None

    @classmethod
    def from_namespace(cls: type[P], namespace: Mapping[str, Any]) -> P:
        """The parameters the notebook defined (papermill's injected ones included); a misspelt name is an error
        naming it (see `config.params_from_namespace`)."""
        return params_from_namespace(cls, namespace)

    @property
    def results_path(self) -> Path:
        """`results_dir` resolved: None is the git-ignored scratch folder, a relative path is taken from the repository root."""
        return results_path(self.results_dir)


@dataclass(frozen=True)
class StepParams(NotebookParams):
    """A pipeline step's notebook, run for one architecture. A field left at None takes the profile's value
    (`profiles.PROFILES[profile][STEP][arch]`, through `resolved`)."""

    arch: str
    profile: str = "full"
    device: str = "auto"
    backend: str = "auto"  # where pools train and sharpness runs (pool.BACKENDS; "ray": cluster.py)
    n_workers: int | None = None
    results_dir: str | None = None  # None: <repository root>/build/scratch (notebook.results_path)
    data_root: str | None = None

    STEP: ClassVar[str] = ""
    COUNTS: ClassVar[tuple[tuple[str, int], ...]] = ()  # the step's optional integer fields and their least values

    def __post_init__(self) -> None:
        check_choice(OWNER, "arch", self.arch, ARCHS)
        check_choice(OWNER, "profile", self.profile, tuple(PROFILES))
        check_choice(OWNER, "backend", self.backend, BACKENDS)
        for field, minimum in (*self.COUNTS, ("n_workers", 1)):
            if getattr(self, field) is not None:
                check_number(OWNER, field, getattr(self, field), minimum=minimum, integer=True)
        for field in ("results_dir", "data_root"):
            if getattr(self, field) is not None:
                check_text(OWNER, field, getattr(self, field))
        check_device(OWNER, "device", self.device)
        self.check()

    def check(self) -> None:
        """The step's own checks, after the shared ones (a subclass adds them here)."""

    def default(self, field: str) -> Any:
        """The profile's value of `field` for this step and architecture."""
        return profile_default(self.profile, self.STEP, self.arch, field)

    def resolved(self, field: str) -> Any:
        """A field's value, with None replaced by the profile's."""
        value = getattr(self, field)
        return self.default(field) if value is None else value

    @property
    def out_dir(self) -> Path:
        return self.results_path / self.arch
