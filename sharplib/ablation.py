"""How much each of the reference notebooks' deviations moves τ, and τ across ρ.

`run_ablation` measures τ for the report's method, for the notebook's procedure (every switch of
`reference.ReferenceSwitches` on) and for each switch alone. Pools are reused: variants that change
only the sharpness estimate use the main pool `<pool_root>/pool`; variants that change training get
`<pool_root>/pool_<switches>`. Every per-model sharpness lands in a small JSON file keyed by the
checkpoint's bytes, the config and the switches, so a rerun recomputes nothing.

`rho_sweep` measures sharpness over a grid of ρ (adaptive and standard) with the main estimator,
and `tau_by_rho` turns it into τ(ρ). The builders at the end write the paper's ablation table,
its paragraph (worded from the numbers) and the τ(ρ) figure.
"""
from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.func import grad_and_value, vmap
from tqdm.auto import tqdm

from . import protocol
from .config import check_choice, check_device, check_number, check_text, config_hash, params_from_namespace
from .functional import batch_loss, split_state
from .models import build_model
from .pool import PoolEntry, checkpoint_path, load_model
from .reference import ModelFactory
from .reference import (LABELS, ReferenceFactory, ReferenceSwitches, applicable, effective_config, reference_sharpness,
                        reference_train_config, run_jobs, train_or_reuse, train_reference_pool)
from .sharpness import SharpnessConfig, SharpnessResult, draw_batches, estimate_sharpness, summarize
from .stats import kendall
from .study import read_results
from .task import Task

CACHE_VERSION = "1"  # bump when an estimator changes what it returns, so old cache entries are ignored
RHO_FACTORS = (0.1, 0.3, 1.0, 3.0, 10.0)  # the default grid: two decades around the report's ρ


@dataclass(frozen=True)
class Variant:
    """One row of the ablation: a name and the switches it turns on."""

    name: str
    switches: ReferenceSwitches


def default_variants(arch: str) -> list[Variant]:
    """The report's method, the notebook's procedure (all switches on), then each switch alone."""
    singles = [Variant(name, ReferenceSwitches.only(name)) for name in applicable(arch)]
    return [Variant("report", ReferenceSwitches()), Variant("reference code", ReferenceSwitches.notebook(arch)), *singles]


def pool_dir_for(pool_root: str | Path, switches: ReferenceSwitches) -> Path:
    """`<pool_root>/pool` when training is the report's, else `<pool_root>/pool_<training switches>`."""
    return Path(pool_root) / ("pool_" + "+".join(sorted(switches.training)) if switches.training else "pool")


# ---------------------------------------------------------------- the per-model cache

def file_digest(path: str | Path) -> str:
    """SHA-256 of a checkpoint's bytes (first 16 hex): the cache follows the weights, not the file name."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]


def _key(*parts: Any) -> str:
    return config_hash(CACHE_VERSION, *parts)


def _config_dict(cfg: SharpnessConfig) -> dict[str, Any]:
    return {k: v for k, v in dataclasses.asdict(cfg).items() if k != "device"}  # the device does not change the estimate's meaning


def cache_read(cache_dir: Path, key: str) -> dict[str, Any] | None:
    path = cache_dir / f"{key}.json"
    return json.loads(path.read_text()) if path.exists() else None


def write_json_atomic(path: Path, record: dict[str, Any]) -> None:
    """Write to a temporary name (per process: workers write side by side), then rename: a killed run
    leaves no half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(record, indent=1, default=str))
    os.replace(tmp, path)


def cache_write(cache_dir: Path, key: str, record: dict[str, Any]) -> None:
    write_json_atomic(cache_dir / f"{key}.json", record)


def _record(result: SharpnessResult, **extra: Any) -> dict[str, Any]:
    return {"sharpness": result.mean, "frac_below": result.frac_below, "unperturbed": float(np.mean(result.unperturbed)),
            "seconds": result.seconds, **extra}


# ---------------------------------------------------------------- the ablation

@dataclass(frozen=True)
class _SharpnessJob:
    checkpoint: str
    key: str
    cfg: SharpnessConfig
    switches: ReferenceSwitches
    cache_dir: str


def _sharpness_job(task: Task, job: _SharpnessJob) -> dict[str, Any]:
    """Load one model, estimate its sharpness the variant's way, cache the record (runs in a worker)."""
    model, payload = load_model(Path(job.checkpoint), ReferenceFactory(job.switches))
    record = _record(reference_sharpness(model, task, job.cfg, job.switches), seed=payload["result"]["seed"],
                     checkpoint=job.checkpoint, switches=list(job.switches.on))
    cache_write(Path(job.cache_dir), job.key, record)
    return record


def variant_sharpness(entries: Sequence[PoolEntry], task: Task, cfg: SharpnessConfig, switches: ReferenceSwitches, cache_dir: str | Path, *,
                      n_workers: int = 1, progress: bool = True) -> list[dict[str, Any]]:
    """One cached sharpness record per pool entry; only the missing ones are computed."""
    cache_dir = Path(cache_dir)
    keys = [_key(file_digest(e.checkpoint), _config_dict(cfg), sorted(switches.on)) for e in entries]
    records = [cache_read(cache_dir, k) for k in keys]
    jobs = [_SharpnessJob(str(e.checkpoint), k, cfg, switches, str(cache_dir)) for e, k, r in zip(entries, keys, records) if r is None]
    fresh = iter(run_jobs(_sharpness_job, task, jobs, n_workers, f"sharpness {'+'.join(switches.on) or 'report'}", progress))
    return [r if r is not None else next(fresh) for r in records]


def _pool(arch: str, task: Task, seeds: list[int], pool_root: Path, switches: ReferenceSwitches, train_overrides: Mapping[str, Any],
          n_workers: int | None, progress: bool) -> list[PoolEntry]:
    if not switches.training:  # the main pool, reused seed by seed
        return train_or_reuse(arch, task, protocol.train_config(arch, **train_overrides), seeds, pool_root / "pool", n_workers=n_workers, progress=progress)
    cfg = reference_train_config(arch, switches, **train_overrides)
    return train_reference_pool(arch, task, cfg, seeds, pool_dir_for(pool_root, switches), switches, n_workers=n_workers, progress=progress)


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
                 n_models: int | None = None, n_restarts: int | None = None, sharpness_overrides: Mapping[str, Any] | None = None,
                 train_overrides: Mapping[str, Any] | None = None, cache_dir: str | Path | None = None, n_resamples: int = 9999,
                 n_workers: int | None = None, progress: bool = True) -> pd.DataFrame:
    """τ for each variant (default: `default_variants(arch)`), one row each.

    n_models: use the first n seeds only; n_restarts: override the main estimator's restarts (a
    quick profile; GAT's five_restarts still means 5). cache_dir defaults to `<pool_root>/ablation_cache`.
    n_workers: processes for training and for sharpness (default: 1 for the FCNN, else one per core).
    seconds = train_seconds (the variant's own pool only) + sharpness_seconds, summed over models
    and read from the checkpoints and the cache, so a rerun reports what the work cost.
    """
    if n_models is not None and (not isinstance(n_models, int) or n_models < 1):
        raise ValueError(f"n_models must be a positive integer or None, got {n_models!r}")
    seeds = list(seeds)[:n_models]
    pool_root = Path(pool_root)
    cache_dir = Path(cache_dir) if cache_dir is not None else pool_root / "ablation_cache"
    n_workers = n_workers or (1 if arch == "fcnn" else os.cpu_count() or 1)
    base = protocol.sharpness_config(arch, **(sharpness_overrides or {}), **({"n_restarts": n_restarts} if n_restarts else {}))
    rows, pools = [], {}
    for variant in variants or default_variants(arch):
        switches = variant.switches.check(arch)
        start = time.perf_counter()
        where = pool_dir_for(pool_root, switches)
        if where not in pools:
            pools[where] = _pool(arch, task, seeds, pool_root, switches, train_overrides or {}, n_workers, progress)
        entries = pools[where]
        cfg = effective_config(arch, base, switches)
        records = variant_sharpness(entries, task, cfg, switches, cache_dir, n_workers=n_workers, progress=progress)
        sharpness = [r["sharpness"] for r in records]
        train_seconds = sum(e.result.seconds for e in entries) if switches.training else 0.0
        sharpness_seconds = sum(r["seconds"] for r in records)
        rows.append({"arch": arch, "variant": variant.name, "switches": ",".join(switches.on) or "none", **_tau_row(sharpness, entries, n_resamples),
                     "seconds": train_seconds + sharpness_seconds, "train_seconds": train_seconds, "sharpness_seconds": sharpness_seconds,
                     "frac_below": float(np.mean([r["frac_below"] for r in records])), "pool": where.name, "wall_seconds": time.perf_counter() - start})
    return pd.DataFrame(rows)


# ---------------------------------------------------------------- τ across ρ

def default_rho_grid(arch: str, factors: Sequence[float] = RHO_FACTORS, rho: float | None = None) -> tuple[float, ...]:
    """ρ·factors around `rho` (default: the report's ρ of `arch`, Table I), that ρ included when 1 is a factor."""
    rho = protocol.spec(arch).rho if rho is None else rho
    return tuple(float(f"{rho * f:.12g}") for f in factors)  # 0.025·0.1 = 0.0025, not 0.0025000000000000005


def _batchable(model: nn.Module, task: Task, cfg: SharpnessConfig) -> bool:
    # The report's rule (ℓ∞, gradient steps, eval mode), for models the main estimator has no faster
    # path for: it runs convolutional models on CPU one restart at a time and cuts a graph down to the
    # training nodes' receptive field, both faster than this stack (measured: GAT 51 s vs 41 s for 10 ρ).
    has_conv = any(isinstance(m, nn.modules.conv._ConvNd) for m in model.modules())
    rule = cfg.mode == "eval" and cfg.kind == "worst" and cfg.step == "gradient" and cfg.p == "inf" and not cfg.random_start
    return rule and not task.is_graph and not (has_conv and task.device.type == "cpu")


def sweep_model(model: nn.Module, task: Task, cfg: SharpnessConfig, combos: Sequence[tuple[float, bool]],
                combos_per_call: int | None = None) -> list[SharpnessResult]:
    """Sharpness of one model at every (ρ, adaptive) in `combos`, as `estimate_sharpness` gives it.

    Where `_batchable`, all combinations run in one vmapped ascent (combinations × restarts) on the
    same batches and one copy of the weights; otherwise one main-estimator call per combination
    (the batches are the same there too: they come from cfg.seed).
    """
    if not _batchable(model, task, cfg):
        return [estimate_sharpness(model, task, dataclasses.replace(cfg, rho=rho, adaptive=a)) for rho, a in combos]
    per_call = combos_per_call or _default_combos_per_call(task, cfg, len(combos))
    return [r for i in range(0, len(combos), per_call) for r in _sweep_batched(model, task, cfg, combos[i : i + per_call])]


def _default_combos_per_call(task: Task, cfg: SharpnessConfig, n_combos: int) -> int:
    # keep combinations × restarts × m input values near 2e6 (FCNN and GAT: all at once)
    per_sample = task.x_train[0].numel()
    return max(1, min(n_combos, int(2e6 // (cfg.n_restarts * cfg.batch_size * per_sample))))


def _sweep_batched(model: nn.Module, task: Task, cfg: SharpnessConfig, combos: Sequence[tuple[float, bool]]) -> list[SharpnessResult]:
    start = time.perf_counter()
    net = copy.deepcopy(model).to(task.device).eval()  # the caller's model keeps its mode
    w, buffers = split_state(net)
    idx = draw_batches(task.n_train, cfg).to(task.device)
    x, y = task.x_train[idx], task.y_train[idx]
    bound = {k: torch.stack([rho * (v.abs() if a else torch.ones_like(v)) for rho, a in combos]).unsqueeze(1) for k, v in w.items()}  # ρc: [K, 1, *shape]

    def loss_at(delta, xb, yb):
        return batch_loss(net, task, {k: w[k] + delta[k] for k in w}, buffers, xb, yb)

    forward = vmap(loss_at)  # over restarts
    grad_and_loss = vmap(vmap(grad_and_value(loss_at)), in_dims=(0, None, None))  # combinations × restarts
    delta = {k: torch.zeros(len(combos), len(idx), *v.shape, dtype=v.dtype, device=v.device) for k, v in w.items()}
    unperturbed, trace = forward({k: d[0] for k, d in delta.items()}, x, y), []
    for _ in range(cfg.n_steps):
        grad, loss = grad_and_loss(delta, x, y)
        trace.append(loss)
        # δ <- clamp(δ + η ∇L, -ρc, ρc), each combination with its own ρc (the main estimator's step)
        delta = {k: torch.clamp(d + cfg.lr * grad[k], -bound[k], bound[k]) for k, d in delta.items()}
    trace.append(vmap(forward, in_dims=(0, None, None))(delta, x, y))
    trace = torch.stack(trace, dim=-1).cpu()  # [combinations, restarts, n_steps + 1]
    seconds = (time.perf_counter() - start) / len(combos)
    return [summarize(unperturbed.cpu(), trace[i], dataclasses.replace(cfg, rho=rho, adaptive=a), seconds) for i, (rho, a) in enumerate(combos)]


def rho_sweep(models: Mapping[int, str | Path], task: Task, base_cfg: SharpnessConfig, rhos: Sequence[float],
              adaptive_values: Sequence[bool] = (True, False), cache_dir: str | Path | None = None, *, factory: ModelFactory = build_model,
              combos_per_call: int | None = None, progress: bool = True) -> pd.DataFrame:
    """Sharpness of every model (seed -> checkpoint) at every (ρ, adaptive): columns seed, rho, adaptive,
    sharpness, frac_below, seconds. Cached per (checkpoint bytes, ρ, adaptive, config); a model is loaded
    only when one of its combinations is missing, and its missing ones run together (`sweep_model`)."""
    if not rhos or any(not isinstance(r, (int, float)) or r <= 0 for r in rhos):
        raise ValueError(f"rhos must be a non-empty list of positive numbers, got {rhos!r}")
    combos = [(float(r), bool(a)) for r in rhos for a in adaptive_values]
    cache_dir = Path(cache_dir) if cache_dir is not None else None
    rows = []
    for seed, path in tqdm(models.items(), desc="rho sweep", disable=not progress):
        digest = file_digest(path)
        keys = [_key("rho-sweep", digest, _config_dict(dataclasses.replace(base_cfg, rho=r, adaptive=a))) for r, a in combos]
        records = [cache_read(cache_dir, k) if cache_dir else None for k in keys]
        missing = [i for i, r in enumerate(records) if r is None]
        if missing:
            model, _ = load_model(Path(path), factory)
            for i, result in zip(missing, sweep_model(model, task, base_cfg, [combos[i] for i in missing], combos_per_call)):
                records[i] = _record(result, seed=seed, rho=combos[i][0], adaptive=combos[i][1], checkpoint=str(path))
                if cache_dir:
                    cache_write(cache_dir, keys[i], records[i])
        rows += [{"seed": seed, "rho": r, "adaptive": a, "sharpness": rec["sharpness"], "frac_below": rec["frac_below"], "seconds": rec["seconds"]}
                 for (r, a), rec in zip(combos, records)]
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


# ---------------------------------------------------------------- the paper's table, paragraph and figure

def _label(variant: str) -> str:
    if variant == "report":
        return "report's method"
    if variant == "reference code":
        return "reference code (all)"
    return "+ " + LABELS.get(variant, variant)


def _report_row(df: pd.DataFrame) -> pd.Series:
    found = df[df["variant"] == "report"]
    if found.empty:
        raise ValueError("the ablation frame has no 'report' row to compare the variants with")
    return found.iloc[0]


def _outside(tau: float, report: pd.Series) -> bool:
    return math.isfinite(tau) and not (report["ci_low"] <= tau <= report["ci_high"])


def _num(value: float) -> str:
    return "--" if not math.isfinite(value) else f"${value:.2f}$"


def _p(value: float) -> str:
    if not math.isfinite(value):
        return "--"
    return "$<0.001$" if value < 0.001 else f"{value:.3f}"


def ablation_table_tex(df_by_arch: Mapping[str, pd.DataFrame]) -> str:
    """A `tabular` (plain \\hline rules, no package needed) with one block per arch: τ, its 95 % CI,
    p and the number of models per variant. $^{*}$ marks a τ outside the report-method CI."""
    lines = [r"\begin{tabular}{llrcrr}", r"\hline", r"Model & Variant & $\tau$ & 95\,\% CI & $p$ & $M$ \\", r"\hline"]
    for arch, df in df_by_arch.items():
        report = _report_row(df)
        for i, row in enumerate(df.itertuples(index=False)):
            mark = "$^{*}$" if row.variant != "report" and _outside(row.tau, report) else ""
            ci = "--" if not math.isfinite(row.ci_low) else f"$[{row.ci_low:.2f}, {row.ci_high:.2f}]$"
            model = protocol.spec(arch).model_name if i == 0 else ""
            lines.append(f"{model} & {_label(row.variant)} & {_num(row.tau)}{mark} & {ci} & {_p(row.p_value)} & {row.n_models} \\\\")
        lines.append(r"\hline")
    lines.append(r"\end{tabular}")
    return "\n".join(lines) + "\n"


def _direction(tau: float, reference: float) -> str:
    return "raises" if tau > reference else "lowers"


def ablation_paragraph(df_by_arch: Mapping[str, pd.DataFrame]) -> str:
    """One sentence group per arch: which switches move τ outside the report-method 95 % CI, and
    where all of the notebook's choices together put it. Worded from the numbers only."""
    parts = []
    for arch, df in df_by_arch.items():
        name, report = protocol.spec(arch).model_name, _report_row(df)
        text = (f"For {name}, the report's method gives $\\tau = {report['tau']:.2f}$ "
                f"(95\\,\\% CI $[{report['ci_low']:.2f}, {report['ci_high']:.2f}]$, {int(report['n_models'])} models).")
        singles = df[~df["variant"].isin(["report", "reference code"])]
        moved = [row for row in singles.itertuples(index=False) if _outside(row.tau, report)]
        undefined = [LABELS.get(row.variant, row.variant) for row in singles.itertuples(index=False) if not math.isfinite(row.tau)]
        if moved:
            said = [f"{LABELS.get(r.variant, r.variant)} alone {_direction(r.tau, report['tau'])} it to ${r.tau:.2f}$" for r in moved]
            text += " Outside that interval: " + "; ".join(said) + "."
            rest = len(singles) - len(moved) - len(undefined)
            if rest:
                text += " The other switch alone leaves $\\tau$ inside it." if rest == 1 else f" The other {rest} switches alone leave $\\tau$ inside it."
        elif len(singles):
            text += " No single switch moves $\\tau$ outside that interval."
        if undefined:
            text += f" $\\tau$ is undefined for {', '.join(undefined)} (fewer than 3 models, or a constant sharpness)."
        together = df[df["variant"] == "reference code"]
        if not together.empty and math.isfinite(together.iloc[0]["tau"]):
            tau = together.iloc[0]["tau"]
            where = f"outside the interval ({_direction(tau, report['tau'])} it)" if _outside(tau, report) else "inside the interval"
            text += f" With all of the notebook's choices together, $\\tau = {tau:.2f}$, {where}."
        parts.append(text)
    return " ".join(parts)


KINDS = ("adaptive", "standard")


def rho_panel(ax: Any, df: pd.DataFrame, arch: str, rho: float | None = None) -> None:
    """One τ(ρ) panel (a `tau_by_rho` frame): adaptive vs standard, the bootstrap CI as a band, the
    report's ρ (or `rho`) as a dotted line."""
    import seaborn as sns

    palette = dict(zip(KINDS, sns.color_palette("colorblind", 2)))
    frame = df.assign(sharpness=np.where(df["adaptive"], "adaptive", "standard")).sort_values("rho")
    sns.lineplot(frame, x="rho", y="tau", hue="sharpness", hue_order=KINDS, palette=palette, marker="o", ax=ax, errorbar=None)
    for kind, group in frame.groupby("sharpness"):
        ax.fill_between(group["rho"], group["ci_low"], group["ci_high"], color=palette[kind], alpha=0.2, linewidth=0)
    ax.axvline(protocol.spec(arch).rho if rho is None else rho, color="0.3", linestyle=":", linewidth=1, label=r"report's $\rho$")
    ax.axhline(0, color="0.5", linewidth=0.6)
    ax.set(xscale="log", xlabel=r"$\rho$", ylabel=r"Kendall $\tau$", title=protocol.spec(arch).model_name, ylim=(-1, 1))
    ax.legend(fontsize="x-small", title=None, loc="lower right")


def rho_figure(df_by_arch: Mapping[str, pd.DataFrame], path_pdf: str | Path, path_png: str | Path,
               report_rho: Mapping[str, float] | None = None) -> None:
    """τ(ρ) per arch (one `rho_panel` each), written to both paths. Drawn without pyplot's global state."""
    import seaborn as sns
    from matplotlib.figure import Figure

    with sns.axes_style("whitegrid"), sns.plotting_context("paper"):
        fig = Figure(figsize=(2.6 * len(df_by_arch), 2.4), layout="constrained")
        axes = fig.subplots(1, len(df_by_arch), squeeze=False, sharey=True)[0]
        for ax, (arch, df) in zip(axes, df_by_arch.items()):
            rho_panel(ax, df, arch, (report_rho or {}).get(arch))
        for path in (path_pdf, path_png):
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            fig.savefig(path, dpi=200)


def _decimal(x: float) -> str:
    return np.format_float_positional(x, trim="-")  # 1e-05 -> 0.00001: a number LaTeX prints as written


def _span(kind: str, tau: pd.Series) -> str:
    low, high = f"{tau.min():.2f}", f"{tau.max():.2f}"
    return f"{kind} sharpness gives $\\tau = {low}$ at every $\\rho$" if low == high else f"{kind} sharpness gives $\\tau$ from ${low}$ to ${high}$"


def rho_sentence(df_by_arch: Mapping[str, pd.DataFrame]) -> str:
    """How far τ moves across the ρ grid, per arch and kind of sharpness (from `tau_by_rho` frames)."""
    parts = []
    for arch, df in df_by_arch.items():
        kinds = df["adaptive"].map({True: "adaptive", False: "standard"})
        spans = [_span(kind, group["tau"].dropna()) for kind, group in df.groupby(kinds, sort=True) if group["tau"].notna().any()]
        if spans:
            parts.append(f"For {protocol.spec(arch).model_name}, over $\\rho \\in [{_decimal(df['rho'].min())}, {_decimal(df['rho'].max())}]$, "
                         + " and ".join(spans) + f" ({int(df['n_models'].max())} models).")
    return " ".join(parts)


# ---------------------------------------------------------------- the ablation notebook: parameters, inputs, files

QUICK_RHO_FACTORS = (0.1, 1.0, 10.0)  # the quick profile's short grid: the report's ρ and a decade each side
LENET_FULL_MODELS = 3  # LeNet-5's models in the full profile, every row and the ρ sweep: τ's minimum (docs/ablation-cost.md)

# Per profile and arch. None: take it from the main study (n_models: its whole pool; n_restarts: its
# restarts, so the report row is the study's estimate) or from run_ablation (n_workers); variants
# None: all of `default_variants`. The full profile's restarts are cut where the cost is (docs/ablation-cost.md):
# GAT's train-mode, all-nodes and sweep estimates scale with them over 50 models, and LeNet-5's three
# retrained pools and two full-set ascents (~17 min a model on one core) leave room for little else.
ABLATION_PROFILES: dict[str, dict[str, dict[str, Any]]] = {
    "full": {
        "fcnn": dict(n_models=None, n_restarts=None, rho_factors=RHO_FACTORS, variants=None, n_resamples=9999, n_workers=2),
        "lenet5": dict(n_models=LENET_FULL_MODELS, n_restarts=10, rho_factors=RHO_FACTORS, variants=None, n_resamples=9999, n_workers=None),
        "gat": dict(n_models=None, n_restarts=10, rho_factors=RHO_FACTORS, variants=None, n_resamples=9999, n_workers=None),
    },
    # Quick checks the chain: per arch a training switch and cheap sharpness switches, in this process
    # (a worker pool costs more to start than these few models to run).
    "quick": {
        "fcnn": dict(n_models=None, n_restarts=5, rho_factors=QUICK_RHO_FACTORS, variants=("report", "elu_all_layers", "notebook_lr", "swapped_bounds"),
                     n_resamples=999, n_workers=1),
        "lenet5": dict(n_models=3, n_restarts=2, rho_factors=QUICK_RHO_FACTORS, variants=("report", "drifting_anchor", "train_mode"), n_resamples=999,
                       n_workers=1),
        "gat": dict(n_models=5, n_restarts=5, rho_factors=QUICK_RHO_FACTORS, variants=("report", "attention_dropout", "five_restarts", "collapse_duplicates"),
                    n_resamples=999, n_workers=1),
    },
}


@dataclass(frozen=True)
class StudyInputs:
    """What the ablation takes over from the main study (`<results_dir>/<arch>/results.json`, `models.csv`)."""

    profile: str
    seeds: tuple[int, ...]  # the pool's seeds, in the study's order
    test_loss: dict[int, float]  # seed -> test loss, models that did not diverge
    train_overrides: dict[str, Any]  # what the study changed in Table I's training config (so its pool is reused)
    sharpness_overrides: dict[str, Any]  # the study's ρ, batch seed and device
    n_restarts: int


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
    )


@dataclass(frozen=True)
class AblationParams:
    """The ablation notebook's parameters. None means the profile's value (`ABLATION_PROFILES`), and
    None there means the main study's (its whole pool, its restarts)."""

    arch: str
    profile: str = "full"
    results_dir: str = "results"
    n_models: int | None = None
    n_restarts: int | None = None
    rho_factors: tuple[float, ...] | None = None
    variants: tuple[str, ...] | None = None
    n_resamples: int | None = None
    n_workers: int | None = None
    device: str = "auto"
    data_root: str | None = None

    def __post_init__(self) -> None:
        name = "parameter"
        check_choice(name, "arch", self.arch, tuple(protocol.TABLE1))
        check_choice(name, "profile", self.profile, tuple(ABLATION_PROFILES))
        for field, minimum in (("n_models", 3), ("n_restarts", 1), ("n_resamples", 1), ("n_workers", 1)):  # τ needs 3 models
            if getattr(self, field) is not None:
                check_number(name, field, getattr(self, field), minimum=minimum, integer=True)
        if self.rho_factors is not None:
            object.__setattr__(self, "rho_factors", _check_factors(self.rho_factors))
        if self.variants is not None:
            object.__setattr__(self, "variants", _check_variants(self.arch, self.variants))
        check_text(name, "results_dir", self.results_dir)
        if self.data_root is not None:
            check_text(name, "data_root", self.data_root)
        check_device(name, "device", self.device)

    @classmethod
    def from_namespace(cls, namespace: dict[str, Any], before: set[str]) -> "AblationParams":
        """The parameters a notebook defined after `before` was taken; a misspelt one is an error naming it."""
        return params_from_namespace(cls, namespace, before)

    def resolved(self, field: str) -> Any:
        value = getattr(self, field)
        return ABLATION_PROFILES[self.profile][self.arch][field] if value is None else value

    @property
    def out_dir(self) -> Path:
        return Path(self.results_dir) / self.arch

    def inputs(self) -> StudyInputs:
        """The main study's inputs, checked against these parameters (same profile, enough models)."""
        found = study_inputs(self.results_dir, self.arch)
        if found.profile != self.profile:
            raise ValueError(f"parameter.profile = {self.profile!r}, but the {self.arch} study in {self.results_dir} ran with "
                             f"profile {found.profile!r}: rerun one of them")
        if self.n_models is not None and self.n_models > len(found.seeds):
            raise ValueError(f"parameter.n_models = {self.n_models} exceeds the {len(found.seeds)} models of the study's pool")
        return found

    def models_used(self, inputs: StudyInputs) -> int:
        """How many of the pool's first models every row and the ρ sweep use (a profile's cap stops at the pool)."""
        return min(self.resolved("n_models") or len(inputs.seeds), len(inputs.seeds))

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


ABLATION_FILES = ("ablation.csv", "rho.csv", "ablation.json")


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
