"""Kendall's τ between a measure x and a target y with a third variable z (e.g. training loss) held fixed.

The protocol's early stop leaves models at different training progress, and the training loss z alone
ranks test loss y well, so a measure's τ(x, y) may only repeat what z says. Two ways to hold z fixed,
each with a bootstrap CI over models:

- Kendall's partial τ (`partial_kendall`):  τ_xy·z = (τ_xy − τ_xz τ_yz) / sqrt((1 − τ_xz²)(1 − τ_yz²));
- τ within quantile strata of z (`stratified_kendall`): τ_strat = Σ_k w_k τ_k / Σ_k w_k.

An undefined value comes back as NaNs with ci_method "undefined" and a `reason`; non-finite inputs are refused.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np

from .stats import _as_1d, _check_bootstrap_args, tau_b_batched

Weighting = Literal["pairs", "models", "equal"]
_ELEMENTS_PER_CHUNK = 4_000_000  # resamples × k² pair differences built at once (float64: 32 MB)


@dataclass(frozen=True)
class PartialKendallResult:
    """τ_xy·z with its percentile bootstrap CI, and the three τ-b it is made of (τ_xy, τ_xz, τ_yz).

    null_tau: `gaussian_null_partial_tau(τ_xz, τ_yz)`, what τ_xy·z tends to for a measure independent of y given z
    (Gaussian copula): a τ_xy·z near it says nothing beyond z, whatever its distance from 0.
    n: models; n_resamples_undefined: resamples whose τ_xy·z is undefined (left out of the CI);
    ci_method: "percentile", or "undefined" (then τ and the CI are NaN and `reason` says why).
    """

    tau: float
    ci_low: float
    ci_high: float
    tau_xy: float
    tau_xz: float
    tau_yz: float
    n: int
    n_resamples: int
    n_resamples_undefined: int
    confidence: float = 0.95
    ci_method: str = "percentile"
    reason: str = ""
    null_tau: float = float("nan")

    @property
    def ci(self) -> tuple[float, float]:
        return (self.ci_low, self.ci_high)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class StratifiedKendallResult:
    """τ_strat = Σ_k w_k τ_k / Σ_k w_k over the strata of z, its percentile CI (resampling within strata), and each stratum.

    stratum_tau[k], stratum_size[k] (n_k) and stratum_z[k] (the lowest and highest z in it) describe
    bin k in increasing z; n_undefined counts the strata whose τ_k is NaN (left out of τ_strat);
    weighting: w_k = n_k(n_k − 1)/2 ("pairs"), n_k ("models") or 1 ("equal", Jiang et al.'s ψ).
    ci_method: "percentile", or "undefined" (then τ and the CI are NaN and `reason` says why).
    """

    tau: float
    ci_low: float
    ci_high: float
    stratum_tau: tuple[float, ...]
    stratum_size: tuple[int, ...]
    stratum_z: tuple[tuple[float, float], ...]
    n_undefined: int
    n: int
    min_per_stratum: int
    weighting: str
    n_resamples: int
    n_resamples_undefined: int
    confidence: float = 0.95
    ci_method: str = "percentile"
    reason: str = ""

    @property
    def ci(self) -> tuple[float, float]:
        return (self.ci_low, self.ci_high)

    @property
    def n_strata(self) -> int:
        return len(self.stratum_size)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


# τ_xy·z = (τ_xy − τ_xz τ_yz) / sqrt((1 − τ_xz²)(1 − τ_yz²))
def partial_tau(tau_xy: Any, tau_xz: Any, tau_yz: Any) -> np.ndarray:
    """Kendall's partial τ from the three pairwise τ, element-wise.

    Args:
        tau_xy, tau_xz, tau_yz: τ(x, y), τ(x, z), τ(y, z), scalars or arrays of one shape.

    Returns:
        τ_xy·z as a float64 array; NaN where |τ_xz| or |τ_yz| is 1 or an input is NaN.
    """
    tau_xy, tau_xz, tau_yz = (np.asarray(v, dtype=np.float64) for v in (tau_xy, tau_xz, tau_yz))
    denominator = np.sqrt((1 - tau_xz**2) * (1 - tau_yz**2))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denominator > 0, (tau_xy - tau_xz * tau_yz) / np.where(denominator > 0, denominator, 1.0), np.nan)


# τ⁰_xy·z = partial_tau((2/π) arcsin(ρ_xz ρ_yz), τ_xz, τ_yz),   ρ = sin(π τ / 2)
def gaussian_null_partial_tau(tau_xz: Any, tau_yz: Any) -> np.ndarray:
    """The limit of τ_xy·z when x and y are independent given z and (x, y, z) have a Gaussian copula.

    Under a Gaussian copula τ = (2/π) arcsin ρ, and conditional independence means ρ_xy = ρ_xz ρ_yz; the
    result is the partial τ of those three τ (Korn 1984). It is 0 only when τ_xz or τ_yz is 0, and grows
    with both: τ_xz = τ_yz = 0.8 give ≈ +0.22.

    Args:
        tau_xz, tau_yz: τ(x, z) and τ(y, z), scalars or arrays of one shape.

    Returns:
        The null value τ⁰_xy·z, a float64 array.
    """
    rho_xz, rho_yz = (np.sin(np.pi * np.asarray(t, dtype=np.float64) / 2) for t in (tau_xz, tau_yz))
    return partial_tau(2 / np.pi * np.arcsin(rho_xz * rho_yz), tau_xz, tau_yz)


def resampled_tau_b(x: np.ndarray, y: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """τ-b of (x[rows[b]], y[rows[b]]) for each bootstrap resample b, in memory-bounded chunks.

    Args:
        x, y: one value per model.
        rows: [B, k] model indices, one row per resample.

    Returns:
        [B] τ-b per resample.
    """
    chunk = max(1, _ELEMENTS_PER_CHUNK // max(rows.shape[1] ** 2, 1))
    return np.concatenate([tau_b_batched(x[part], y[part]) for part in np.array_split(rows, -(-rows.shape[0] // chunk))])


def _percentile_ci(values: np.ndarray, confidence: float) -> tuple[float, float, int]:
    """The percentile interval over the defined (finite) resamples, and how many were undefined."""
    finite = values[np.isfinite(values)]
    if not finite.size:
        return float("nan"), float("nan"), int(values.size)
    alpha = (1 - confidence) / 2
    low, high = np.quantile(finite, [alpha, 1 - alpha])
    return float(low), float(high), int(values.size - finite.size)


def _columns(named: dict[str, Any]) -> list[np.ndarray]:
    """The 1-D float64 columns, of one length and all finite, or a ValueError naming the culprit."""
    columns = [_as_1d(values, name) for name, values in named.items()]
    sizes = {name: c.size for name, c in zip(named, columns)}
    if len(set(sizes.values())) > 1:
        raise ValueError(f"x, y and z must have one value per model, got lengths {sizes}")
    for name, c in zip(named, columns):
        n_bad = int((~np.isfinite(c)).sum())
        if n_bad:
            raise ValueError(f"{n_bad} of {c.size} models have a NaN or infinite {name}; drop diverged models first and report how many")
    return columns


def _why_undefined(columns: dict[str, np.ndarray], minimum: int = 3) -> str:
    """Why no τ can be taken over these models ('' when one can): too few of them, or a constant column."""
    n = next(iter(columns.values())).size
    if n < minimum:
        return f"need at least {minimum} models, got {n}"
    for name, values in columns.items():
        if np.all(values == values[0]):
            return f"{name} is constant across all {n} models"
    return ""


def partial_kendall(x: Any, y: Any, z: Any, n_resamples: int = 9999, confidence: float = 0.95, seed: int = 0) -> PartialKendallResult:
    """Kendall's partial τ_xy·z of measure x and target y given z, from τ-b, with a paired bootstrap CI.

    τ_xy·z is *not* 0 in general when x and y are independent given z (Korn 1984): when z ranks both
    strongly it stays clearly positive for a measure that knows nothing beyond z. Read it beside its null
    value `null_tau` (`gaussian_null_partial_tau`) and beside the stratified τ. The CI is the percentile
    interval over the resamples where τ_xy·z is defined (BCa's jackknife fails on an undefined ratio).

    Args:
        x, y, z: one value per model, all finite.
        n_resamples: bootstrap resamples (models (x_i, y_i, z_i) resampled together).
        confidence: the CI's level.
        seed: seed of the resampling.

    Returns:
        PartialKendallResult; undefined (NaNs, with a reason) for fewer than 3 models, a constant x, y or z,
        or |τ_xz| = 1 or |τ_yz| = 1.
    """
    _check_bootstrap_args(n_resamples, confidence)
    x, y, z = _columns({"x": x, "y": y, "z": z})
    nan = float("nan")
    reason = _why_undefined({"x": x, "y": y, "z": z})
    taus = [nan] * 3 if reason else [float(tau_b_batched(a, b)) for a, b in ((x, y), (x, z), (y, z))]
    if not reason and max(abs(taus[1]), abs(taus[2])) == 1:
        reason = f"{'x' if abs(taus[1]) == 1 else 'y'} is ranked exactly by z (|τ| = 1): nothing of it varies with z held fixed"
    if reason:
        return PartialKendallResult(nan, nan, nan, *taus, x.size, n_resamples, n_resamples, confidence, "undefined", reason)
    rows = np.random.default_rng(seed).integers(0, x.size, size=(n_resamples, x.size))
    boot = partial_tau(resampled_tau_b(x, y, rows), resampled_tau_b(x, z, rows), resampled_tau_b(y, z, rows))
    low, high, n_undefined = _percentile_ci(boot, confidence)
    method, why = ("percentile", "") if np.isfinite(low) else ("undefined", "τ_xy·z is undefined in every resample")
    null = float(gaussian_null_partial_tau(taus[1], taus[2]))
    return PartialKendallResult(
        float(partial_tau(*taus)), low, high, *taus, x.size, n_resamples, n_undefined, confidence, method, why, null
    )


def quantile_strata(z: Any, min_per_stratum: int = 5, n_strata: int | None = None) -> np.ndarray:
    """Stratum index (0, 1, ... in increasing z) of each model: contiguous bins of z holding ≥ min_per_stratum models each.

    The sorted models are cut into near-equal bins; a cut inside a run of tied z moves to the run's end, and a
    bin left below min_per_stratum is merged with its smaller neighbour. Fewer than min_per_stratum models: one stratum.

    Args:
        z: the conditioning variable (e.g. training loss), one finite value per model.
        min_per_stratum: the fewest models a stratum may hold.
        n_strata: how many strata to aim for, at most M // min_per_stratum (None: that many).

    Returns:
        [M] int64 stratum labels, in the models' order.

    Raises:
        ValueError: for a min_per_stratum or n_strata that is not an integer ≥ 1.
    """
    z = _as_1d(z, "z")
    if isinstance(min_per_stratum, bool) or not isinstance(min_per_stratum, int) or min_per_stratum < 1:
        raise ValueError(f"min_per_stratum must be an integer >= 1, got {min_per_stratum!r}")
    if n_strata is not None and (isinstance(n_strata, bool) or not isinstance(n_strata, int) or n_strata < 1):
        raise ValueError(f"n_strata must be an integer >= 1 or None, got {n_strata!r}")
    order = np.argsort(z, kind="stable")
    sorted_z, n = z[order], z.size
    k = max(1, n // min_per_stratum if n_strata is None else min(n_strata, n // min_per_stratum))
    run_starts = np.flatnonzero(np.r_[True, sorted_z[1:] != sorted_z[:-1]])  # where each run of tied z begins
    cuts = sorted({_next_run_start(run_starts, round(j * n / k), n) for j in range(1, k)} - {0, n})
    cuts = _merge_small(cuts, n, min_per_stratum)
    labels = np.empty(n, dtype=np.int64)
    labels[order] = np.searchsorted(np.asarray(cuts, dtype=np.int64), np.arange(n), side="right")
    return labels


def _next_run_start(run_starts: np.ndarray, position: int, n: int) -> int:
    """The first sorted position at or after `position` where a run of tied z begins (n if none): a cut never splits ties."""
    i = int(np.searchsorted(run_starts, position))
    return int(run_starts[i]) if i < run_starts.size else n


def _merge_small(cuts: list[int], n: int, min_size: int) -> list[int]:
    """Remove cuts until every bin [cuts[i-1], cuts[i]) holds ≥ min_size positions, merging the smallest bin with its smaller neighbour."""
    cuts = list(cuts)
    while cuts:
        sizes = np.diff([0, *cuts, n])
        smallest = int(np.argmin(sizes))
        if sizes[smallest] >= min_size:
            break
        if smallest == 0 or (smallest < len(sizes) - 1 and sizes[smallest + 1] < sizes[smallest - 1]):
            cuts.pop(smallest)  # merge with the next bin
        else:
            cuts.pop(smallest - 1)  # merge with the previous bin
    return cuts


# w_k = n_k(n_k − 1)/2 ("pairs"), n_k ("models"), 1 ("equal")
def stratum_weights(sizes: np.ndarray, weighting: Weighting) -> np.ndarray:
    """The weight w_k of each stratum in τ_strat.

    Args:
        sizes: n_k, the models in each stratum.
        weighting: "pairs" (n_k(n_k − 1)/2: τ_strat for τ-a is then the τ over all within-stratum pairs),
            "models" (n_k) or "equal" (1).

    Returns:
        float64 array of w_k, one per stratum.
    """
    sizes = np.asarray(sizes, dtype=np.float64)
    if weighting == "pairs":
        return sizes * (sizes - 1) / 2
    if weighting == "models":
        return sizes
    if weighting == "equal":
        return np.ones_like(sizes)
    raise ValueError(f"weighting must be 'pairs', 'models' or 'equal', got {weighting!r}")


# τ_strat = Σ_{k∈K} w_k τ_k / Σ_{k∈K} w_k,   K = the strata whose τ_k is defined
def combine_strata(taus: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """τ_strat = Σ_k w_k τ_k / Σ_k w_k over the last axis of `taus`, strata whose τ_k is NaN left out.

    Args:
        taus: τ_k per stratum on the last axis (leading axes: e.g. bootstrap resamples).
        weights: w_k per stratum (`stratum_weights`), broadcastable against `taus`.

    Returns:
        τ_strat per index of the leading axes; NaN where no stratum has a τ.
    """
    defined = np.isfinite(taus)
    total = (weights * defined).sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, (np.where(defined, taus, 0.0) * weights).sum(axis=-1) / np.where(total > 0, total, 1.0), np.nan)


def stratified_kendall(
    x: Any,
    y: Any,
    z: Any,
    min_per_stratum: int = 5,
    n_strata: int | None = None,
    weighting: Weighting = "pairs",
    n_resamples: int = 9999,
    confidence: float = 0.95,
    seed: int = 0,
) -> StratifiedKendallResult:
    """τ-b of measure x and target y within quantile strata of z, combined as τ_strat = Σ_k w_k τ_k / Σ_k w_k.

    A stratum's τ_k is undefined (NaN, left out of τ_strat) with fewer than 3 models or x or y constant in it.
    The bootstrap resamples each stratum's models within it; the CI is the percentile interval over the
    resamples where τ_strat is defined.

    Args:
        x, y, z: one value per model, all finite.
        min_per_stratum: the fewest models in a stratum (`quantile_strata`).
        n_strata: how many strata (None: as many as min_per_stratum allows).
        weighting: w_k = n_k(n_k − 1)/2 ("pairs"), n_k ("models") or 1 ("equal").
        n_resamples: bootstrap resamples.
        confidence: the CI's level.
        seed: seed of the resampling.

    Returns:
        StratifiedKendallResult; undefined for fewer than 3 models, x or y constant, or no stratum with a τ.
    """
    _check_bootstrap_args(n_resamples, confidence)
    stratum_weights(np.ones(1), weighting)  # refuses an unknown weighting before any work
    x, y, z = _columns({"x": x, "y": y, "z": z})
    labels = quantile_strata(z, min_per_stratum, n_strata)
    members = [np.flatnonzero(labels == k) for k in range(int(labels.max()) + 1)]
    sizes = np.array([m.size for m in members])
    stratum_z = tuple((float(z[m].min()), float(z[m].max())) for m in members)
    # τ_k = τ_b(x, y) over the models of stratum k
    taus = np.array([float(tau_b_batched(x[m], y[m])) if m.size >= 3 else np.nan for m in members])
    weights = stratum_weights(sizes, weighting)
    point = float(combine_strata(taus, weights))
    nan = float("nan")
    common = dict(stratum_tau=tuple(float(t) for t in taus), stratum_size=tuple(int(s) for s in sizes), stratum_z=stratum_z,
                  n_undefined=int(np.isnan(taus).sum()), n=int(x.size), min_per_stratum=min_per_stratum, weighting=weighting,
                  n_resamples=n_resamples, confidence=confidence)
    reason = _why_undefined({"x": x, "y": y}) or (
        "" if np.isfinite(point) else "no stratum has a τ (each has < 3 models or x or y constant in it)"
    )
    if reason:
        return StratifiedKendallResult(nan, nan, nan, n_resamples_undefined=n_resamples, ci_method="undefined", reason=reason, **common)
    rng = np.random.default_rng(seed)
    boot = np.stack([resampled_tau_b(x, y, m[rng.integers(0, m.size, size=(n_resamples, m.size))]) if m.size >= 3
                     else np.full(n_resamples, np.nan) for m in members], axis=-1)
    low, high, n_undefined = _percentile_ci(combine_strata(boot, weights), confidence)
    method, why = ("percentile", "") if np.isfinite(low) else ("undefined", "τ_strat is undefined in every resample")
    return StratifiedKendallResult(point, low, high, n_resamples_undefined=n_undefined, ci_method=method, reason=why, **common)
