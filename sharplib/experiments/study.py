"""One architecture's study, as a notebook runs it: its parameters, its table of models, its results files.

notebooks/study.py is the one study notebook; papermill runs it once per architecture (`-p arch gat`).
`StudyParams.from_namespace` turns its `parameters` cell into a validated frozen config before anything is
trained, and `introduction` writes the notebook's opening from the protocol's row for the architecture.

    <results_dir>/<arch>/results.json   τ, p, CI, counts, configs, provenance
    <results_dir>/<arch>/models.csv     one row per model

These two files are the only input of `report.py`, so every number in the paper can be traced to them.
"""
from __future__ import annotations

import dataclasses
import json
import os
import platform
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import pandas as pd
import torch

from ..core.config import check_number, check_writable_dir
from ..pools.pool import PoolEntry
from .params import OWNER, StepParams
from .protocol import sharpness_config, spec, train_config
from ..core.sharpness import SharpnessConfig, SharpnessResult
from ..core.stats import KendallResult
from ..core.task import Task, resolve_device
from ..core.train import TrainConfig


@dataclass(frozen=True)
class StudyParams(StepParams):
    """The study notebook's parameters. None means: the profile's value (n_models, n_restarts, max_epochs,
    n_resamples, train_rows) or the report's (rho, from Table I). train_rows: train on the first that many training
    rows (`Task.first_train_rows`, which checks it against the data)."""

    n_models: int | None = None
    first_seed: int = 0
    rho: float | None = None
    n_restarts: int | None = None
    max_epochs: int | None = None
    n_resamples: int | None = None
    sharpness_seed: int = 0
    train_rows: int | None = None

    STEP: ClassVar[str] = "study"
    COUNTS: ClassVar[tuple[tuple[str, int], ...]] = (
        ("n_models", 3), ("n_restarts", 1), ("max_epochs", 1), ("n_resamples", 1), ("train_rows", 1),
    )

    def check(self) -> None:
        check_number(OWNER, "first_seed", self.first_seed, minimum=0, integer=True)
        check_number(OWNER, "sharpness_seed", self.sharpness_seed, minimum=0, integer=True)
        if self.rho is not None:
            check_number(OWNER, "rho", self.rho, minimum=0, strict=True)
        check_writable_dir(OWNER, "results_dir", self.results_path)  # here, in the parameters cell, not after training

    @property
    def seeds(self) -> list[int]:
        return list(range(self.first_seed, self.first_seed + self.resolved("n_models")))

    def train_config(self) -> TrainConfig:
        overrides = {"device": self.device}
        if self.resolved("max_epochs") is not None:
            max_epochs = self.resolved("max_epochs")
            overrides.update(max_epochs=max_epochs, min_epochs=min(spec(self.arch).min_epochs, max_epochs))
        return train_config(self.arch, **overrides)

    def sharpness_config(self) -> SharpnessConfig:
        return sharpness_config(self.arch, rho=self.rho or spec(self.arch).rho, n_restarts=self.resolved("n_restarts"),
                                seed=self.sharpness_seed, device=self.device)


def introduction(params: StudyParams) -> str:
    """The study notebook's title and opening in Markdown: the protocol's words for `params.arch`, with
    the settings this run uses, so that each executed notebook reads on its own."""
    s, train, sharp = spec(params.arch), params.train_config(), params.sharpness_config()
    epochs = (f"at most {train.max_epochs} epoch{'s' * (train.max_epochs > 1)}" if train.min_epochs == 1
              else f"at least {train.min_epochs} and at most {train.max_epochs} epochs")
    decay = f", weight decay {train.weight_decay:g}" if train.weight_decay else ""
    init = "Xavier-uniform weights and zero biases" if train.init == "xavier" else "the layers' default initialization"
    return f"""# Does adaptive sharpness predict test loss? {s.model_name} on {s.dataset_name}

We train a pool of {len(params.seeds)} {s.model_name} models on {s.dataset_name}, each from its own seed, with
the report's protocol: {init}, then plain SGD on batches of {train.batch_size}
training {s.unit}, learning rate {train.lr:g}{decay}, {epochs}, stopping once the mean training loss of an
epoch changes by less than {train.tol * 100:g} %; the loss is the {s.loss_name.lower()}. For each model we
estimate its adaptive worst-case m-sharpness

$$S(w) = \\mathbb{{E}}_{{S \\sim P^m}} \\max_{{\\|\\delta \\oslash |w|\\|_\\infty \\le \\rho}} L_S(w + \\delta) - L_S(w)$$

with ρ = {sharp.rho:g}, and ask, with Kendall's τ over the pool, whether sharper models have higher test loss.

**The network.** {s.network}

**The data.** {s.data_prose}

**The sharpness.** Projected gradient ascent, {sharp.n_steps} steps of size η = the training learning rate,
{sharp.n_restarts} restarts on fresh batches of m = {sharp.batch_size} training {s.unit}, in {sharp.mode} mode: {s.eval_prose}.

Profile `{params.profile}`{_cut(params)}; the results go to `{params.out_dir.as_posix()}/`."""


def _cut(params: StudyParams) -> str:
    rows = params.resolved("train_rows")
    return "" if rows is None else f", training on the first {rows} training {spec(params.arch).unit} only"


def describe_task(arch: str, task: Task) -> str:
    """One line on the loaded data: its split, and the inputs' shape or the graph's size."""
    unit = spec(arch).unit
    line = f"{task.n_train} training {unit}, {len(task.x_test)} test {unit}"
    if task.node_features is not None:
        return f"{line}; the graph has {task.node_features.shape[0]} nodes with {task.node_features.shape[1]} features each"
    return f"{line}; inputs of shape {tuple(task.x_train.shape[1:])}"


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
        dirty = bool(
            subprocess.run(
                ["git", "status", "--porcelain", "--untracked-files=no"], cwd=repo, capture_output=True, text=True
            ).stdout.strip()
        )
        return commit, dirty
    except (OSError, subprocess.CalledProcessError):
        return "unknown", True


def provenance(device: str) -> dict[str, Any]:
    """Where and with what the numbers were computed."""
    import scipy

    commit, dirty = git_commit(Path(__file__).resolve().parents[2])
    resolved = resolve_device(device)
    return {
        "git_commit": commit, "git_dirty": dirty, "torch": torch.__version__, "scipy": scipy.__version__,
        "python": platform.python_version(), "device": str(resolved),
        "device_name": torch.cuda.get_device_name(resolved) if resolved.type == "cuda" else platform.processor() or platform.machine(),
        "machine": f"{platform.system()} {platform.machine()}, {os.cpu_count()} cores",
    }


def write_results(params: StudyParams, table: pd.DataFrame, kendall: KendallResult, seconds: dict[str, float]) -> Path:
    """Write models.csv and results.json (last, atomically: its presence means the study finished).

    What computed them is recorded by make, in the step's lock (sharplib/pipeline/lockfile.py), not here."""
    out = params.out_dir
    out.mkdir(parents=True, exist_ok=True)
    table.to_csv(out / "models.csv", index=False)
    summary = {
        "arch": params.arch, "profile": params.profile,
        "tau": kendall.tau, "p_value": kendall.p_value, "tau_ci": [kendall.ci_low, kendall.ci_high],
        "ci_method": kendall.ci_method, "confidence": kendall.confidence,
        "n_models": int(len(table)), "n_used": kendall.n, "n_diverged": int(table["diverged"].sum()),
        "frac_below_mean": float(table["frac_below"].mean()),
        "train_rows": params.resolved("train_rows"),  # the training set's cut (None: all of it), as the pool was trained
        "params": dataclasses.asdict(params), "train_config": dataclasses.asdict(params.train_config()),
        "sharpness_config": dataclasses.asdict(params.sharpness_config()),
        "seconds": seconds, "provenance": provenance(params.device),
    }
    write_json_atomic(out / "results.json", summary)
    return out / "results.json"


def read_results(results_dir: str | Path, arch: str) -> tuple[dict[str, Any], pd.DataFrame]:
    """results.json and models.csv of one architecture; a clear error when the study has not run."""
    folder = Path(results_dir) / arch
    path = folder / "results.json"
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: run the {arch} notebook first (make paper runs all three)")
    return json.loads(path.read_text()), pd.read_csv(folder / "models.csv")


def write_json_atomic(path: Path, record: dict[str, Any]) -> None:
    """Write to a temporary name, then rename: a killed run leaves no half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(record, indent=1, default=str))
    os.replace(tmp, path)


def write_step_files(out_dir: str | Path, name: str, table: pd.DataFrame, record: dict[str, Any]) -> Path:
    """<name>.csv, then <name>.json (last, atomically: its presence means the run finished)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    table.to_csv(out / f"{name}.csv", index=False)
    write_json_atomic(out / f"{name}.json", record)
    return out / f"{name}.json"


def read_step_files(results_dir: str | Path, arch: str, name: str) -> tuple[dict[str, Any], pd.DataFrame]:
    """(<name>.json, <name>.csv) of one arch, as `notebooks/<name>.py` wrote them; a clear error when it has not run."""
    folder = Path(results_dir) / arch
    if not (folder / f"{name}.json").exists():
        raise FileNotFoundError(f"{folder / f'{name}.json'} not found: run notebooks/{name}.py for {arch}")
    return json.loads((folder / f"{name}.json").read_text()), pd.read_csv(folder / f"{name}.csv")
