"""Kendall's rank correlation between sharpness and test loss, with a bootstrap CI over models.

The report's form, for M models with sharpness s_i and test loss t_i, is τ-a:

    τ = 2 / (M(M−1)) Σ_{i<j} sign(t_i − t_j) sign(s_i − s_j)

We compute τ-b (scipy's default): equal to τ-a without ties, otherwise divided by the number of untied
pairs, so that a perfectly monotone pool still reaches ±1. Granulated τ Ψ and sub-pool τ are in `subpools`.
"""
from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass
from typing import Any, NamedTuple

import numpy as np
from scipy import stats

# A batch of B resamples of n models builds B·n² pairwise differences (float64, transient);
# this cap keeps that near 130 MB while amortizing Python overhead (50 models: 6400 a batch).
_ELEMENTS_PER_BATCH = 16_000_000


@dataclass(frozen=True)
class KendallResult:
    """τ (τ-b), its two-sided p-value, a bootstrap CI [ci_low, ci_high] for τ, and the number M of models.

    `ci_method` is the bootstrap interval actually used ("BCa" or "percentile"; see `kendall`).
    """

    tau: float
    p_value: float
    ci_low: float
    ci_high: float
    n: int
    confidence: float = 0.95
    ci_method: str = "BCa"

    @property
    def ci(self) -> tuple[float, float]:
        return (self.ci_low, self.ci_high)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class FinitePairs(NamedTuple):
    """The models whose sharpness and test loss are both finite; `mask` marks them in the input order."""

    sharpness: np.ndarray
    test_loss: np.ndarray
    mask: np.ndarray
    n_dropped: int


def _as_1d(values: Any, name: str) -> np.ndarray:
    """A float64 1-D numpy copy of a list, array or (CPU or GPU, grad or not) torch tensor."""
    if hasattr(values, "detach"):  # torch.Tensor, without importing torch here
        values = values.detach().cpu().numpy()
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 1:
        raise ValueError(f"{name} must be 1-D (one value per model), got shape {array.shape}")
    return array


def _paired(sharpness: Any, test_loss: Any) -> tuple[np.ndarray, np.ndarray]:
    s, t = _as_1d(sharpness, "sharpness"), _as_1d(test_loss, "test_loss")
    if s.shape != t.shape:
        raise ValueError(f"sharpness and test_loss must have the same length, got {s.size} and {t.size}")
    return s, t


def finite_pairs(sharpness: Any, test_loss: Any) -> FinitePairs:
    """Drop the models (e.g. diverged ones) whose sharpness or test loss is NaN or ±inf.

    Args:
        sharpness, test_loss: one value per model (lists, numpy arrays or torch tensors).

    Returns:
        FinitePairs: the kept values, the mask of kept models in input order, and how many were dropped.
    """
    s, t = _paired(sharpness, test_loss)
    mask = np.isfinite(s) & np.isfinite(t)
    return FinitePairs(s[mask], t[mask], mask, int(mask.size - mask.sum()))


def _check_bootstrap_args(n_resamples: int, confidence: float) -> None:
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be a positive integer, got {n_resamples}")


# τ_b = Σ_{i,j} sign(x_i − x_j) sign(y_i − y_j) / sqrt(Σ_{i,j} |sign(x_i − x_j)| · Σ_{i,j} |sign(y_i − y_j)|)
def tau_b_batched(x: np.ndarray, y: np.ndarray, axis: int = -1) -> np.ndarray:
    """Kendall's τ-b along `axis` of x and y (one τ per other index); NaN where x or y is constant.

    Summing over all ordered pairs doubles numerator and both denominator factors alike, and
    Σ|sign(x_i − x_j)| counts the pairs untied in x: τ-b's tie correction.

    Args:
        x, y: arrays of one shape.
        axis: the axis of the models (scipy.stats.bootstrap's vectorized-statistic contract).

    Returns:
        τ-b per index of the other axes.
    """
    x, y = np.moveaxis(np.asarray(x), axis, -1), np.moveaxis(np.asarray(y), axis, -1)
    dx = np.sign(x[..., :, None] - x[..., None, :]).astype(np.int8)
    dy = np.sign(y[..., :, None] - y[..., None, :]).astype(np.int8)
    concordance = np.einsum("...ij,...ij->...", dx, dy, dtype=np.int64)
    untied_x = np.abs(dx).sum(axis=(-2, -1), dtype=np.int64)
    untied_y = np.abs(dy).sum(axis=(-2, -1), dtype=np.int64)
    denominator = np.sqrt(untied_x.astype(np.float64) * untied_y)
    with np.errstate(invalid="ignore", divide="ignore"):
        return concordance / denominator


def _bootstrap_ci(
    s: np.ndarray, t: np.ndarray, n_resamples: int, confidence: float, seed: int
) -> tuple[float, float, str]:
    """CI for τ from resampling models with replacement (pairs (s_i, t_i) kept together).

    BCa corrects the percentile interval for bias and skew, which matters for τ near ±1.
    It fails (NaN, with a warning) on degenerate data, e.g. few models or a bootstrap
    distribution that is nearly constant; then the plain percentile interval is used, over
    the resamples where τ is defined (a resample drawing one model M times has no τ).
    """
    batch = max(1, _ELEMENTS_PER_BATCH // s.size**2)
    kwargs = dict(paired=True, vectorized=True, batch=batch, n_resamples=n_resamples, confidence_level=confidence)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", stats.DegenerateDataWarning)
        with np.errstate(invalid="ignore"):
            result = stats.bootstrap((s, t), tau_b_batched, method="BCa", rng=np.random.default_rng(seed), **kwargs)
    low, high = float(result.confidence_interval.low), float(result.confidence_interval.high)
    if np.isfinite(low) and np.isfinite(high):
        return low, high, "BCa"
    alpha = (1 - confidence) / 2
    low, high = np.nanquantile(result.bootstrap_distribution, [alpha, 1 - alpha])
    return float(low), float(high), "percentile"


def kendall(
    sharpness: Any, test_loss: Any, n_resamples: int = 9999, confidence: float = 0.95, seed: int = 0
) -> KendallResult:
    """Kendall's τ-b between the sharpness s_i and test loss t_i of M models, with p-value and bootstrap CI.

    τ and the two-sided p-value are scipy.stats.kendalltau's (exact p for small M without ties, asymptotic
    otherwise). The CI resamples the M models with replacement (BCa, else percentile: `_bootstrap_ci`).

    Args:
        sharpness, test_loss: one value per model (lists, numpy arrays or torch tensors); all finite
            (call `finite_pairs` first and report how many models it dropped).
        n_resamples: bootstrap resamples.
        confidence: the CI's level.
        seed: seed of the resampling.

    Returns:
        KendallResult: τ, p-value, CI, M and the CI method.

    Raises:
        ValueError: for non-finite values, fewer than 3 models, or a constant variable.
    """
    s, t = _paired(sharpness, test_loss)
    n_bad = int(s.size - (np.isfinite(s) & np.isfinite(t)).sum())
    if n_bad:
        raise ValueError(
            f"{n_bad} of {s.size} models have a NaN or infinite sharpness or test_loss; "
            "drop diverged models first (sharplib.core.stats.finite_pairs) and report how many"
        )
    if s.size < 3:
        raise ValueError(f"need at least 3 models for a rank correlation, got {s.size}")
    for name, values in (("sharpness", s), ("test_loss", t)):
        if np.all(values == values[0]):
            raise ValueError(f"{name} is constant across all {s.size} models; τ is undefined")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be a positive integer, got {n_resamples}")
    result = stats.kendalltau(s, t)
    low, high, method = _bootstrap_ci(s, t, n_resamples, confidence, seed)
    return KendallResult(float(result.statistic), float(result.pvalue), low, high, int(s.size), confidence, method)
