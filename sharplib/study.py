"""One architecture's study, as a notebook runs it: its parameters, its table of models, its results files.

The notebook's papermill `parameters` cell holds literals; `StudyParams.from_namespace` turns them
into a validated frozen config before anything is trained. The results a study writes,

    <results_dir>/<arch>/results.json   τ, p, CI, counts, configs, provenance
    <results_dir>/<arch>/models.csv     one row per model

are the only input of `report.py`, so every number in the paper can be traced to them.
"""
from __future__ import annotations

import dataclasses
import json
import os
import platform
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from .config import check_choice, check_device, check_number, check_writable_dir, config_from_dict
from .pool import PoolEntry
from .protocol import TABLE1, sharpness_config, spec, train_config
from .sharpness import SharpnessConfig, SharpnessResult
from .stats import KendallResult
from .task import resolve_device
from .train import TrainConfig

# Per profile: how many models, restarts and bootstrap resamples; quick also caps LeNet-5's epochs.
PROFILES: dict[str, dict[str, dict[str, Any]]] = {
    "full": {arch: dict(n_models=50, n_restarts=50, max_epochs=None, n_resamples=9999) for arch in TABLE1},
    "quick": {
        "fcnn": dict(n_models=10, n_restarts=10, max_epochs=None, n_resamples=999),
        "lenet5": dict(n_models=6, n_restarts=10, max_epochs=1, n_resamples=999),
        "gat": dict(n_models=10, n_restarts=10, max_epochs=None, n_resamples=999),
    },
}


@dataclass(frozen=True)
class StudyParams:
    """A notebook's parameters. None means: the profile's value (n_models, n_restarts, max_epochs, n_resamples)
    or the report's (rho, from Table I)."""

    arch: str
    profile: str = "full"
    n_models: int | None = None
    first_seed: int = 0
    rho: float | None = None
    n_restarts: int | None = None
    max_epochs: int | None = None
    n_resamples: int | None = None
    sharpness_seed: int = 0
    device: str = "auto"
    n_workers: int | None = None
    results_dir: str = "results"
    data_root: str | None = None

    def __post_init__(self) -> None:
        name = "parameter"
        check_choice(name, "arch", self.arch, tuple(TABLE1))
        check_choice(name, "profile", self.profile, tuple(PROFILES))
        for field, minimum in (("n_models", 3), ("n_restarts", 1), ("max_epochs", 1), ("n_resamples", 1), ("n_workers", 1)):
            if getattr(self, field) is not None:
                check_number(name, field, getattr(self, field), minimum=minimum, integer=True)
        check_number(name, "first_seed", self.first_seed, minimum=0, integer=True)
        check_number(name, "sharpness_seed", self.sharpness_seed, minimum=0, integer=True)
        if self.rho is not None:
            check_number(name, "rho", self.rho, minimum=0, strict=True)
        for field in ("results_dir", "device") + (("data_root",) if self.data_root is not None else ()):
            if not isinstance(getattr(self, field), str) or not getattr(self, field):
                raise ValueError(f"{name}.{field} must be a non-empty string, got {getattr(self, field)!r}")
        check_device(name, "device", self.device)
        check_writable_dir(name, "results_dir", self.results_dir)  # here, in the parameters cell, not after training

    @classmethod
    def from_namespace(cls, namespace: dict[str, Any], before: set[str], arch: str) -> "StudyParams":
        """The parameters a notebook defined after `before` was taken (papermill's injected ones included).

        A misspelt name would otherwise become an unused variable (papermill only warns): here it
        is an error naming it.
        """
        names = {k for k in namespace if not k.startswith("_") and k not in before}
        return config_from_dict(cls, {"arch": arch, **{k: namespace[k] for k in names}})

    def resolved(self, field: str) -> Any:
        """A field's value, with None replaced by the profile's default."""
        value = getattr(self, field)
        return PROFILES[self.profile][self.arch][field] if value is None else value

    @property
    def seeds(self) -> list[int]:
        return list(range(self.first_seed, self.first_seed + self.resolved("n_models")))

    @property
    def out_dir(self) -> Path:
        return Path(self.results_dir) / self.arch

    def train_config(self) -> TrainConfig:
        overrides = {"device": self.device}
        if self.resolved("max_epochs") is not None:
            max_epochs = self.resolved("max_epochs")
            overrides.update(max_epochs=max_epochs, min_epochs=min(spec(self.arch).min_epochs, max_epochs))
        return train_config(self.arch, **overrides)

    def sharpness_config(self) -> SharpnessConfig:
        return sharpness_config(self.arch, rho=self.rho or spec(self.arch).rho, n_restarts=self.resolved("n_restarts"),
                                seed=self.sharpness_seed, device=self.device)


def model_table(entries: list[PoolEntry], sharpness: list[SharpnessResult]) -> pd.DataFrame:
    """One row per model: training outcome and sharpness with its diagnostics."""
    rows = []
    for entry, result in zip(entries, sharpness):
        r = entry.result
        rows.append({
            "seed": r.seed, "epochs": r.epochs, "train_loss": r.train_loss, "test_loss": r.test_loss,
            "test_accuracy": r.test_accuracy, "diverged": r.diverged, "trained_by": r.trained_by,
            "sharpness": result.mean, "sharpness_std": float(pd.Series(result.values).std()),
            "frac_below": result.frac_below, "train_seconds": r.seconds, "sharpness_seconds": result.seconds,
        })
    return pd.DataFrame(rows)


def git_commit(repo: Path) -> tuple[str, bool]:
    """(commit, dirty) of the checkout holding the code, or ("unknown", True) outside git."""
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, check=True).stdout.strip()
        dirty = bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=repo, capture_output=True, text=True).stdout.strip())
        return commit, dirty
    except (OSError, subprocess.CalledProcessError):
        return "unknown", True


def provenance(device: str) -> dict[str, Any]:
    """Where and with what the numbers were computed."""
    import scipy

    commit, dirty = git_commit(Path(__file__).resolve().parents[1])
    resolved = resolve_device(device)
    return {
        "git_commit": commit, "git_dirty": dirty, "torch": torch.__version__, "scipy": scipy.__version__,
        "python": platform.python_version(), "device": str(resolved),
        "device_name": torch.cuda.get_device_name(resolved) if resolved.type == "cuda" else platform.processor() or platform.machine(),
        "machine": f"{platform.system()} {platform.machine()}, {os.cpu_count()} cores",
    }


def write_results(params: StudyParams, table: pd.DataFrame, kendall: KendallResult, seconds: dict[str, float]) -> Path:
    """Write models.csv and results.json (last, atomically: its presence means the study finished)."""
    out = params.out_dir
    out.mkdir(parents=True, exist_ok=True)
    table.to_csv(out / "models.csv", index=False)
    summary = {
        "arch": params.arch, "profile": params.profile,
        "tau": kendall.tau, "p_value": kendall.p_value, "tau_ci": [kendall.ci_low, kendall.ci_high],
        "ci_method": kendall.ci_method, "confidence": kendall.confidence,
        "n_models": int(len(table)), "n_used": kendall.n, "n_diverged": int(table["diverged"].sum()),
        "frac_below_mean": float(table["frac_below"].mean()),
        "params": dataclasses.asdict(params), "train_config": dataclasses.asdict(params.train_config()),
        "sharpness_config": dataclasses.asdict(params.sharpness_config()),
        "seconds": seconds, "provenance": provenance(params.device),
    }
    tmp = out / "results.json.tmp"
    tmp.write_text(json.dumps(summary, indent=2))
    os.replace(tmp, out / "results.json")
    return out / "results.json"


def read_results(results_dir: str | Path, arch: str) -> tuple[dict[str, Any], pd.DataFrame]:
    """results.json and models.csv of one architecture; a clear error when the study has not run."""
    folder = Path(results_dir) / arch
    path = folder / "results.json"
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: run the {arch} notebook first (make paper runs all three)")
    return json.loads(path.read_text()), pd.read_csv(folder / "models.csv")
