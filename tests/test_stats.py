"""Kendall's τ, its p-value and bootstrap CI (sharplib.core.stats)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats

from sharplib.core.stats import KendallResult, finite_pairs, kendall, tau_b_batched

FEW = 999  # resamples: enough for CI checks, keeps the file fast


@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("seed", range(5))
def test_kendall_matches_scipy(seed: int, ties: bool) -> None:
    rng = np.random.default_rng(seed)
    s = rng.integers(0, 6, 30).astype(float) if ties else rng.normal(size=30)
    t = s + (rng.integers(0, 6, 30) if ties else rng.normal(size=30))
    expected = stats.kendalltau(s, t)
    result = kendall(s, t, n_resamples=FEW)
    assert result.tau == pytest.approx(expected.statistic, abs=1e-12)
    assert result.p_value == pytest.approx(expected.pvalue, rel=1e-9)
    assert result.n == 30


def test_hand_computed_five_points() -> None:
    s = [1.0, 2.0, 3.0, 4.0, 5.0]
    t = [2.0, 1.0, 4.0, 3.0, 5.0]
    # Of the 10 pairs i<j, t is out of order only for (1,2) and (3,4): 8 concordant, 2 discordant.
    # τ = (8 − 2) / 10 = 0.6 (no ties, so τ-a = τ-b).
    assert kendall(s, t, n_resamples=FEW).tau == pytest.approx(0.6, abs=1e-12)


def test_perfect_monotone_gives_one() -> None:
    s = np.linspace(0.0, 1.0, 20)
    assert kendall(s, np.exp(s), n_resamples=FEW).tau == pytest.approx(1.0)
    assert kendall(s, -(s**3), n_resamples=FEW).tau == pytest.approx(-1.0)


def test_ci_contains_tau_within_bounds() -> None:
    rng = np.random.default_rng(0)
    s = rng.normal(size=50)
    result = kendall(s, -s + rng.normal(size=50))
    assert -1.0 <= result.ci_low <= result.tau <= result.ci_high <= 1.0
    assert result.ci_high - result.ci_low > 0.05
    assert result.ci == (result.ci_low, result.ci_high)
    assert result.as_dict()["tau"] == result.tau
    assert result.ci_method == "BCa"


def test_ci_reproducible_by_seed() -> None:
    rng = np.random.default_rng(1)
    s, t = rng.normal(size=40), rng.normal(size=40)
    first, again, other = (kendall(s, t, n_resamples=FEW, seed=seed) for seed in (3, 3, 4))
    assert first.ci == again.ci
    assert first.ci != other.ci


def test_ci_survives_degenerate_small_pool() -> None:
    # With 4 tied-heavy models BCa fails (many resamples have no τ); the percentile fallback must still answer.
    result = kendall([0, 0, 1, 1], [0, 1, 0, 1.5], n_resamples=FEW)
    assert result.ci_method == "percentile"
    assert math.isfinite(result.ci_low) and math.isfinite(result.ci_high)
    assert -1.0 <= result.ci_low <= result.ci_high <= 1.0


def test_accepts_torch_and_lists() -> None:
    s = torch.tensor([0.3, 0.1, 0.2, 0.5], requires_grad=True)
    t = [1.0, 3.0, 2.0, 0.5]
    assert isinstance(kendall(s, t, n_resamples=FEW), KendallResult)
    assert kendall(s, t, n_resamples=FEW).tau == pytest.approx(-1.0)


@pytest.mark.parametrize(
    "sharpness, test_loss, message",
    [
        ([1.0, 2.0, 3.0], [1.0, 2.0], "same length"),
        ([1.0, 2.0], [2.0, 1.0], "at least 3"),
        ([1.0, float("nan"), 3.0, 4.0], [1.0, 2.0, 3.0, 4.0], "1 of 4 models"),
        ([1.0, 2.0, 3.0, 4.0], [1.0, 2.0, float("inf"), float("nan")], "drop diverged"),
        ([[1.0, 2.0, 3.0]], [[1.0, 2.0, 3.0]], "sharpness must be 1-D"),
        ([1.0, 1.0, 1.0], [1.0, 2.0, 3.0], "sharpness is constant"),
    ],
)
def test_bad_inputs_raise(sharpness: list, test_loss: list, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        kendall(sharpness, test_loss, n_resamples=FEW)


def test_finite_pairs_drops_non_finite() -> None:
    s = np.array([1.0, np.nan, 3.0, 4.0, np.inf, 6.0])
    t = np.array([1.0, 2.0, -np.inf, 4.0, 5.0, 6.0])
    kept = finite_pairs(s, t)
    assert kept.mask.tolist() == [True, False, False, True, False, True]
    assert kept.n_dropped == 3
    np.testing.assert_array_equal(kept.sharpness, [1.0, 4.0, 6.0])
    np.testing.assert_array_equal(kept.test_loss, [1.0, 4.0, 6.0])
    with pytest.raises(ValueError, match="same length"):
        finite_pairs([1.0, 2.0], [1.0])


def test_batched_tau_b_equals_scipy_with_ties() -> None:
    rng = np.random.default_rng(2)
    x = rng.integers(0, 4, size=(300, 12)).astype(float)
    y = rng.integers(0, 4, size=(300, 12)).astype(float)
    x[:100] = rng.normal(size=(100, 12))  # a third without ties
    batched = tau_b_batched(x, y)
    expected = np.array([stats.kendalltau(a, b).statistic for a, b in zip(x, y)])
    np.testing.assert_allclose(batched, expected, rtol=0, atol=1e-12)
    # axis contract of scipy.stats.bootstrap: the same along axis 0
    np.testing.assert_allclose(tau_b_batched(x.T, y.T, axis=0), expected, rtol=0, atol=1e-12)
    assert np.isnan(tau_b_batched(np.ones(5), np.arange(5.0)))
