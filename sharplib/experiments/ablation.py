"""How much each of the reference notebooks' deviations moves τ, and τ across ρ.

`run_ablation` measures τ for the report's method, for the notebook's procedure (every switch of
`reference.DEVIATIONS` that the notebook used, on) and for each switch alone. Variants that change only the
sharpness estimate reuse the study's pool `<pool_root>/pool`; variants that retrain get `<pool_root>/pool_<switches>`,
trained by `pool.train_pool`. Per-model sharpness is cached (`cached_sharpness`), so a rerun recomputes nothing.
`rho_sweep` measures the study's estimator over a grid of ρ (adaptive and standard), `tau_by_rho` gives τ(ρ).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Mapping, Sequence

import numpy as np
import pandas as pd

from . import protocol
from ..core.config import config_hash
from ..core.data import load_task
from ..pools.pool import PoolEntry, checkpoint_path, estimate_pool_sharpness, load_model, train_pool
from .reference import DEVIATIONS, applicable, notebook_estimator, notebook_switches, setup
from ..core.sharpness import Estimator, SharpnessConfig, ascent
from ..core.stats import kendall
from .params import StepParams
from .profiles import RHO_FACTORS
from .study import read_results, write_json_atomic
from ..core.task import Task, resolve_device

CACHE_VERSION = "2"  # bump when an estimator changes what it returns, so old cache entries are ignored


@dataclass(frozen=True)
class Variant:
    """One row of the ablation: a name and the switches it turns on."""

    name: str
    switches: tuple[str, ...]


def default_variants(arch: str) -> list[Variant]:
    """The report's method, the notebook's procedure (all its switches on), then each switch alone."""
    singles = [Variant(name, (name,)) for name in applicable(arch)]
    return [Variant("report", ()), Variant("reference code", notebook_switches(arch)), *singles]


# ---------------------------------------------------------------- the per-model cache

def file_digest(path: str | Path) -> str:
    """SHA-256 of a checkpoint's bytes (first 16 hex): the cache follows the weights, not the file name."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]


def cached_sharpness(checkpoints: Mapping[int, Path], task: Task, cfg: SharpnessConfig, cache_dir: Path | None,
                     estimator: Estimator = ascent, backend: str = "auto") -> list[dict[str, Any]]:
    """One sharpness record per model (seed -> checkpoint), in order; the missing ones run as one pool call
    (on Ray tasks when backend is "ray", else here)."""
    settings = {k: v for k, v in dataclasses.asdict(cfg).items() if k != "device"}  # the device does not change the estimate's meaning
    # the task's fingerprint: the same weights measured on another training set (a cut of it) are another estimate
    keys = [config_hash(CACHE_VERSION, file_digest(path), task.fingerprint, settings, estimator.__name__) for path in checkpoints.values()]
    paths = [None if cache_dir is None else Path(cache_dir) / f"{key}.json" for key in keys]
    records = [json.loads(p.read_text()) if p is not None and p.exists() else None for p in paths]
    missing = [i for i, r in enumerate(records) if r is None]
    if missing:
        seeds, files = list(checkpoints), list(checkpoints.values())
        models = [load_model(files[i], task.device)[0] for i in missing]
        for i, result in zip(missing, estimate_pool_sharpness(models, task, cfg, backend=backend, estimator=estimator)):
            records[i] = {"seed": seeds[i], "sharpness": result.mean, "frac_below": result.frac_below,
                          "unperturbed": float(np.mean(result.unperturbed)), "seconds": result.seconds, "checkpoint": str(files[i])}
            if paths[i] is not None:
                write_json_atomic(paths[i], records[i])
    return records  # type: ignore[return-value]


# ---------------------------------------------------------------- the ablation

def _tau_stats(sharpness: Sequence[float], test_loss: Sequence[float], n_resamples: int) -> dict[str, float]:
    """τ, p and the bootstrap CI; all NaN where τ is undefined (fewer than 3 models, or a constant sharpness)."""
    try:
        k = kendall(sharpness, test_loss, n_resamples=n_resamples)
    except ValueError:
        return dict.fromkeys(("tau", "p_value", "ci_low", "ci_high"), math.nan)
    return {"tau": k.tau, "p_value": k.p_value, "ci_low": k.ci_low, "ci_high": k.ci_high}


def _tau_row(sharpness: list[float], entries: Sequence[PoolEntry], n_resamples: int) -> dict[str, Any]:
    """τ over the models that trained without diverging and have a finite sharpness."""
    ok = [not e.result.diverged and math.isfinite(s) and math.isfinite(e.result.test_loss) for s, e in zip(sharpness, entries)]
    s = [v for v, keep in zip(sharpness, ok) if keep]
    t = [e.result.test_loss for e, keep in zip(entries, ok) if keep]
    return {"n_models": len(s), "n_diverged": len(ok) - len(s), **_tau_stats(s, t, n_resamples)}


def run_ablation(arch: str, task: Task, seeds: Sequence[int], pool_root: str | Path, *, variants: Sequence[Variant] | None = None,
                 n_restarts: int | None = None, sharpness_overrides: Mapping[str, Any] | None = None,
                 train_overrides: Mapping[str, Any] | None = None, cache_dir: str | Path | None = None, n_resamples: int = 9999,
                 n_workers: int | None = None, backend: str = "auto", data_root: str | None = None, train_rows: int | None = None,
                 progress: bool = True) -> pd.DataFrame:
    """τ for each variant (default: `default_variants(arch)`), one row each, on the models of `seeds`.

    n_restarts overrides the study's restarts (GAT's five_restarts still means 5). cache_dir defaults
    to `<pool_root>/ablation_cache`; n_workers and backend go to `train_pool` (and "ray" runs the
    sharpness on Ray too). A variant that loads its own data (a loader option) keeps only the first
    `train_rows` training rows, like `task` (the study's cut, `StudyInputs.train_rows`; None: all).
    seconds = train_seconds (the variant's own pool only) + sharpness_seconds, read from the
    checkpoints and the cache, so a rerun reports what the work cost.
    """
    pool_root = Path(pool_root)
    cache_dir = Path(cache_dir) if cache_dir is not None else pool_root / "ablation_cache"
    base = protocol.sharpness_config(arch, **(sharpness_overrides or {}), **({"n_restarts": n_restarts} if n_restarts else {}))
    rows, pools, tasks = [], {}, {(): task}
    for variant in variants or default_variants(arch):
        start = time.perf_counter()
        plan = setup(arch, variant.switches)
        options = tuple(sorted(plan.data.items()))
        if options not in tasks:
            tasks[options] = load_task(protocol.spec(arch).dataset, root=data_root, device=task.device, **plan.data).first_train_rows(
                train_rows
            )
        where = pool_root / ("pool_" + "+".join(plan.retrains) if plan.retrains else "pool")
        if where not in pools:
            cfg = protocol.train_config(arch, **{**plan.train, **(train_overrides or {})})
            pools[where] = train_pool(
                arch, tasks[options], cfg, list(seeds), where, variant=plan.variant, backend=backend, n_workers=n_workers, progress=progress
            )
        entries = pools[where]
        cfg = dataclasses.replace(base, **plan.sharpness)
        estimator = notebook_estimator(arch) if plan.full_set_ascent else ascent
        records = cached_sharpness({e.seed: e.checkpoint for e in entries}, tasks[options], cfg, cache_dir, estimator, backend)
        sharpness = [r["sharpness"] for r in records]
        train_seconds = sum(e.result.seconds for e in entries) if plan.retrains else 0.0
        sharpness_seconds = sum(r["seconds"] for r in records)
        label = variant.name if variant.name in ("report", "reference code") else ", ".join(DEVIATIONS[s].label for s in variant.switches)
        rows.append(
            {
                "arch": arch,
                "variant": variant.name,
                "label": label,
                "switches": ",".join(variant.switches) or "none",
                **_tau_row(sharpness, entries, n_resamples),
                "seconds": train_seconds + sharpness_seconds,
                "train_seconds": train_seconds,
                "sharpness_seconds": sharpness_seconds,
                "frac_below": float(np.mean([r["frac_below"] for r in records])),
                "pool": where.name,
                "wall_seconds": time.perf_counter() - start,
            }
        )
    return pd.DataFrame(rows)


# ---------------------------------------------------------------- τ across ρ

def default_rho_grid(arch: str, factors: Sequence[float] = RHO_FACTORS, rho: float | None = None) -> tuple[float, ...]:
    """ρ·factors around `rho` (default: the report's ρ of `arch`, Table I), that ρ included when 1 is a factor."""
    rho = protocol.spec(arch).rho if rho is None else rho
    return tuple(float(f"{rho * f:.12g}") for f in factors)  # 0.025·0.1 = 0.0025, not 0.0025000000000000005


def rho_sweep(checkpoints: Mapping[int, str | Path], task: Task, base_cfg: SharpnessConfig, rhos: Sequence[float],
              adaptive_values: Sequence[bool] = (True, False), cache_dir: str | Path | None = None, backend: str = "auto") -> pd.DataFrame:
    """The study's estimator for every model (seed -> checkpoint) at every (ρ, adaptive): columns seed, rho,
    adaptive, sharpness, frac_below, seconds. The same batches at every ρ (they come from cfg.seed), cached."""
    if not rhos or any(not isinstance(r, (int, float)) or r <= 0 for r in rhos):
        raise ValueError(f"rhos must be a non-empty list of positive numbers, got {rhos!r}")
    checkpoints = {seed: Path(path) for seed, path in checkpoints.items()}
    rows = []
    for rho in rhos:
        for adaptive in adaptive_values:
            cfg = dataclasses.replace(base_cfg, rho=float(rho), adaptive=bool(adaptive))
            rows += [
                {
                    "seed": r["seed"],
                    "rho": float(rho),
                    "adaptive": bool(adaptive),
                    "sharpness": r["sharpness"],
                    "frac_below": r["frac_below"],
                    "seconds": r["seconds"],
                }
                for r in cached_sharpness(checkpoints, task, cfg, None if cache_dir is None else Path(cache_dir), backend=backend)
            ]
    return pd.DataFrame(rows)


def tau_by_rho(df: pd.DataFrame, test_loss_by_seed: Mapping[int, float], n_resamples: int = 9999) -> pd.DataFrame:
    """Kendall τ between sharpness and test loss at each (ρ, adaptive) of a `rho_sweep` frame."""
    rows = []
    for (rho, adaptive), group in df.groupby(["rho", "adaptive"], sort=True):
        pairs = [(s, test_loss_by_seed[seed]) for seed, s in zip(group["seed"], group["sharpness"])
                 if seed in test_loss_by_seed and math.isfinite(s) and math.isfinite(test_loss_by_seed[seed])]
        stats = _tau_stats([p[0] for p in pairs], [p[1] for p in pairs], n_resamples)
        rows.append({"rho": rho, "adaptive": bool(adaptive), **stats, "n_models": len(pairs)})
    return pd.DataFrame(rows)


# ---------------------------------------------------------------- the ablation notebook: parameters, inputs, files

# The full profile uses the whole pool; on a CPU, LeNet-5's rows (each retrained pool about 2 h for 50 models)
# stop at the pool's first 20 models, which the table and captions report (docs/ablation-cost.md).
CPU_MODEL_CAP: dict[str, int] = {"lenet5": 20}


@dataclass(frozen=True)
class StudyInputs:
    """What the ablation takes over from the main study (`<results_dir>/<arch>/results.json`, `models.csv`)."""

    profile: str
    seeds: tuple[int, ...]  # the pool's seeds, in the study's order
    test_loss: dict[int, float]  # seed -> test loss, models that did not diverge
    train_overrides: dict[str, Any]  # what the study changed in Table I's training config (so its pool is reused)
    sharpness_overrides: dict[str, Any]  # the study's ρ, batch seed and device
    n_restarts: int
    train_rows: int | None = None  # the study trained on the first that many training rows (None: all): load the task with the same cut


def study_inputs(results_dir: str | Path, arch: str) -> StudyInputs:
    """The main study's pool and configs; a clear error when it has not run."""
    summary, table = read_results(results_dir, arch)
    train, sharp = summary["train_config"], summary["sharpness_config"]
    ok = table[~table["diverged"].astype(bool)]
    return StudyInputs(
        profile=summary["profile"], seeds=tuple(int(s) for s in table["seed"]),
        test_loss={int(s): float(t) for s, t in zip(ok["seed"], ok["test_loss"])},
        # StudyParams changes only these training fields; lr and init stay out so a switch can set them
        train_overrides={k: train[k] for k in ("max_epochs", "min_epochs", "device")},
        sharpness_overrides={k: sharp[k] for k in ("rho", "seed", "device")}, n_restarts=int(sharp["n_restarts"]),
        train_rows=summary.get("train_rows"),  # absent from results written before the cut existed: those used every row
    )


@dataclass(frozen=True)
class AblationParams(StepParams):
    """The ablation notebook's parameters. None means the profile's value (`profiles.PROFILES`), and
    None there means the main study's (its whole pool, its restarts)."""

    n_models: int | None = None
    n_restarts: int | None = None
    rho_factors: tuple[float, ...] | None = None
    variants: tuple[str, ...] | None = None
    n_resamples: int | None = None

    STEP: ClassVar[str] = "ablation"
    COUNTS: ClassVar[tuple[tuple[str, int], ...]] = (("n_models", 3), ("n_restarts", 1), ("n_resamples", 1))  # τ needs 3 models

    def check(self) -> None:
        if self.rho_factors is not None:
            object.__setattr__(self, "rho_factors", _check_factors(self.rho_factors))
        if self.variants is not None:
            object.__setattr__(self, "variants", _check_variants(self.arch, self.variants))

    def inputs(self) -> StudyInputs:
        """The main study's inputs, checked against these parameters (same profile, enough models)."""
        found = study_inputs(self.results_path, self.arch)
        if found.profile != self.profile:
            raise ValueError(f"parameter.profile = {self.profile!r}, but the {self.arch} study in {self.results_path} ran with "
                             f"profile {found.profile!r}: rerun one of them")
        if self.n_models is not None and self.n_models > len(found.seeds):
            raise ValueError(f"parameter.n_models = {self.n_models} exceeds the {len(found.seeds)} models of the study's pool")
        return found

    def models_used(self, inputs: StudyInputs) -> int:
        """How many of the pool's first models every row and the ρ sweep use (a profile's cap stops at the pool;
        the full profile on a CPU stops at CPU_MODEL_CAP where there is one)."""
        wanted = self.resolved("n_models") or len(inputs.seeds)
        if self.n_models is None and self.profile == "full" and resolve_device(self.device).type == "cpu":
            wanted = min(wanted, CPU_MODEL_CAP.get(self.arch, wanted))
        return min(wanted, len(inputs.seeds))

    def restarts(self, inputs: StudyInputs) -> int:
        return self.resolved("n_restarts") or inputs.n_restarts

    def variant_list(self) -> list[Variant]:
        chosen = self.resolved("variants")
        return [v for v in default_variants(self.arch) if chosen is None or v.name in chosen]

    def sharpness_config(self, inputs: StudyInputs) -> SharpnessConfig:
        """The report row's estimator (the study's ρ and batches) with this run's restarts: the ρ sweep's base."""
        return protocol.sharpness_config(self.arch, **inputs.sharpness_overrides, n_restarts=self.restarts(inputs))

    def rho_grid(self, inputs: StudyInputs) -> tuple[float, ...]:
        return default_rho_grid(self.arch, self.resolved("rho_factors"), rho=inputs.sharpness_overrides["rho"])


def _check_factors(factors: Any) -> tuple[float, ...]:
    ok = isinstance(factors, (list, tuple)) and all(isinstance(f, (int, float)) and not isinstance(f, bool) and f > 0 for f in factors)
    if not ok or len(set(factors)) < 2 or 1 not in factors:
        raise ValueError(f"parameter.rho_factors must be a list of at least two distinct numbers > 0 that contains 1 "
                         f"(the report's ρ), got {factors!r}")
    return tuple(sorted(float(f) for f in set(factors)))


def _check_variants(arch: str, variants: Any) -> tuple[str, ...]:
    known = [v.name for v in default_variants(arch)]
    if not isinstance(variants, (list, tuple)) or not all(isinstance(v, str) for v in variants):
        raise ValueError(f"parameter.variants must be a list of names from {known}, got {variants!r}")
    unknown = [v for v in variants if v not in known]
    if unknown or "report" not in variants:
        raise ValueError(f"parameter.variants must name only {known} and include 'report' (the row the others are compared with), "
                         f"got {list(variants)!r}")
    return tuple(variants)


def pool_checkpoints(out_dir: str | Path, seeds: Sequence[int]) -> dict[int, Path]:
    """seed -> the main pool's checkpoint (`<out_dir>/pool/seedNNNN.pt`)."""
    return {s: checkpoint_path(Path(out_dir) / "pool", s) for s in seeds}


def ablation_record(params: AblationParams, inputs: StudyInputs, table: pd.DataFrame, sweep: pd.DataFrame,
                    seconds: dict[str, float], provenance: dict[str, Any]) -> dict[str, Any]:
    """ablation.json's record: the run's settings and pool, its times (`table`: the rows, `sweep`: the ρ sweep's)."""
    n_used = params.models_used(inputs)
    return {
        "arch": params.arch, "profile": params.profile, "n_models": n_used, "n_models_pool": len(inputs.seeds),
        "seeds": list(inputs.seeds)[:n_used], "n_restarts": params.restarts(inputs), "rho": inputs.sharpness_overrides["rho"],
        "rho_grid": list(params.rho_grid(inputs)), "variants": list(table["variant"]), "params": dataclasses.asdict(params),
        "train_rows": inputs.train_rows, "seconds": seconds, "work_seconds": float(table["seconds"].sum() + sweep["seconds"].sum()),
        "provenance": provenance,
    }


def write_ablation(out_dir: str | Path, table: pd.DataFrame, rho_tau: pd.DataFrame, summary: dict[str, Any]) -> Path:
    """ablation.csv and rho.csv, then ablation.json (last, atomically: its presence means the run finished)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    table.to_csv(out / "ablation.csv", index=False)
    rho_tau.to_csv(out / "rho.csv", index=False)
    write_json_atomic(out / "ablation.json", summary)
    return out / "ablation.json"


def read_ablation(results_dir: str | Path, arch: str) -> tuple[dict[str, Any], pd.DataFrame, pd.DataFrame]:
    """(ablation.json, ablation.csv, rho.csv) of one arch; a clear error when the ablation has not run."""
    folder = Path(results_dir) / arch
    if not (folder / "ablation.json").exists():
        raise FileNotFoundError(f"{folder / 'ablation.json'} not found: run notebooks/ablation.py for {arch} (make paper runs it)")
    return json.loads((folder / "ablation.json").read_text()), pd.read_csv(folder / "ablation.csv"), pd.read_csv(folder / "rho.csv")
