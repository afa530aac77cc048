"""Kendall's τ with z held fixed: partial τ and τ within strata, against brute force and on data with a known answer."""
from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from sharplib.core.conditional import (
    PartialKendallResult,
    StratifiedKendallResult,
    combine_strata,
    gaussian_null_partial_tau,
    partial_kendall,
    partial_tau,
    quantile_strata,
    stratified_kendall,
    stratum_weights,
)

FEW = 199


def _brute_tau_b(x: list[float], y: list[float]) -> float:
    """τ-b by counting pairs: (concordant − discordant) / sqrt(pairs untied in x · pairs untied in y)."""
    concordant = discordant = untied_x = untied_y = 0
    for i, j in itertools.combinations(range(len(x)), 2):
        sx, sy = np.sign(x[i] - x[j]), np.sign(y[i] - y[j])
        concordant += sx * sy > 0
        discordant += sx * sy < 0
        untied_x += sx != 0
        untied_y += sy != 0
    return (concordant - discordant) / math.sqrt(untied_x * untied_y)


def _brute_partial(x: list[float], y: list[float], z: list[float]) -> float:
    txy, txz, tyz = _brute_tau_b(x, y), _brute_tau_b(x, z), _brute_tau_b(y, z)
    return (txy - txz * tyz) / math.sqrt((1 - txz**2) * (1 - tyz**2))


# Small pools with ties in every variable.
SMALL = [
    ([3, 1, 4, 1, 5, 9, 2, 6], [2, 7, 1, 8, 2, 8, 1, 8], [1, 4, 1, 4, 2, 1, 3, 5]),
    ([0.5, 0.1, 0.9, 0.3, 0.7, 0.2, 0.8], [1.0, 0.2, 0.7, 0.4, 0.9, 0.1, 0.3], [5, 3, 8, 4, 6, 1, 2]),
]


@pytest.mark.parametrize("x, y, z", SMALL)
def test_partial_matches_brute_force(x: list, y: list, z: list) -> None:
    result = partial_kendall(x, y, z, n_resamples=FEW)
    assert result.tau == pytest.approx(_brute_partial(x, y, z), abs=1e-12)
    assert (result.tau_xy, result.tau_xz, result.tau_yz) == pytest.approx(
        (_brute_tau_b(x, y), _brute_tau_b(x, z), _brute_tau_b(y, z)), abs=1e-12
    )
    assert result.n == len(x) and result.ci_method == "percentile" and result.reason == ""


def test_partial_tau_formula() -> None:
    assert partial_tau(0.5, 0.0, 0.0) == pytest.approx(0.5)  # z unrelated: τ_xy·z = τ_xy
    assert partial_tau(0.25, 0.5, 0.5) == pytest.approx(0.0)  # τ_xy = τ_xz τ_yz
    assert partial_tau(0.6, 0.5, 0.4) == pytest.approx((0.6 - 0.2) / math.sqrt(0.75 * 0.84))
    assert np.isnan(partial_tau(0.5, 1.0, 0.5)) and np.isnan(partial_tau(np.nan, 0.1, 0.1))


def test_strata_hold_enough_models_and_never_split_ties() -> None:
    z = np.array([5, 1, 1, 1, 2, 3, 3, 3, 3, 4, 6, 7, 8, 8, 9, 0, 2.5], dtype=float)
    labels = quantile_strata(z, min_per_stratum=4)
    sizes = np.bincount(labels)
    assert sizes.sum() == z.size and sizes.min() >= 4 and len(sizes) >= 2
    for value in np.unique(z):  # a tied z lies in one stratum
        assert np.unique(labels[z == value]).size == 1
    for k in range(len(sizes) - 1):  # contiguous and increasing in z
        assert z[labels == k].max() < z[labels == k + 1].min()
    assert quantile_strata(z, min_per_stratum=4, n_strata=2).max() == 1
    assert np.all(quantile_strata(z[:3], min_per_stratum=5) == 0)  # too few for two strata: one
    with pytest.raises(ValueError, match="min_per_stratum"):
        quantile_strata(z, min_per_stratum=0)


def test_stratified_matches_brute_force() -> None:
    rng = np.random.default_rng(0)
    x, y, z = rng.integers(0, 5, 23).astype(float), rng.integers(0, 5, 23).astype(float), rng.normal(size=23)
    result = stratified_kendall(x, y, z, min_per_stratum=6, n_resamples=FEW)
    labels = quantile_strata(z, min_per_stratum=6)
    taus, weights = [], []
    for k in range(labels.max() + 1):
        members = np.flatnonzero(labels == k)
        taus.append(_brute_tau_b(x[members].tolist(), y[members].tolist()))
        weights.append(math.comb(members.size, 2))  # "pairs" weighting
    assert result.stratum_tau == pytest.approx(tuple(taus), abs=1e-12)
    assert result.tau == pytest.approx(sum(w * t for w, t in zip(weights, taus)) / sum(weights), abs=1e-12)
    assert sum(result.stratum_size) == 23 and min(result.stratum_size) >= 6
    equal = stratified_kendall(x, y, z, min_per_stratum=6, weighting="equal", n_resamples=FEW)
    assert equal.tau == pytest.approx(np.mean(taus), abs=1e-12)  # Jiang et al.'s unweighted mean


def test_combine_strata_omits_undefined() -> None:
    weights = stratum_weights(np.array([3, 4, 5]), "pairs")
    assert weights.tolist() == [3, 6, 10]
    assert combine_strata(np.array([0.5, np.nan, -0.5]), weights) == pytest.approx((1.5 - 5) / 13)
    assert np.isnan(combine_strata(np.array([np.nan, np.nan, np.nan]), weights))


def _pool(n: int, r: float, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """z standard normal; x and y each correlated r with z and independent of each other given z (Gaussian)."""
    rng = np.random.default_rng(seed)
    z = rng.normal(size=n)
    x = r * z + math.sqrt(1 - r**2) * rng.normal(size=n)
    y = r * z + math.sqrt(1 - r**2) * rng.normal(size=n)
    return x, y, z


def _gaussian_partial_tau(r: float) -> float:
    """The limit of τ_xy·z for `_pool`: each τ = (2/π) arcsin ρ, with ρ_xy = r² (Korn 1984): not 0."""
    t_z, t_xy = 2 / math.pi * math.asin(r), 2 / math.pi * math.asin(r * r)
    return (t_xy - t_z**2) / (1 - t_z**2)


def test_gaussian_null_partial_tau() -> None:
    for r in (0.3, 0.7, 0.95):
        t = 2 / math.pi * math.asin(r)
        assert gaussian_null_partial_tau(t, t) == pytest.approx(_gaussian_partial_tau(r), abs=1e-12)
    assert gaussian_null_partial_tau(0.0, 0.9) == pytest.approx(0.0, abs=1e-12)
    assert gaussian_null_partial_tau(-0.6, 0.6) < 0  # a measure that falls as z rises: the bias turns negative


def test_measure_that_only_knows_z_weak_link() -> None:
    # x depends on y only through z: with z a weak link, both conditional τ are near 0.
    x, y, z = _pool(300, 0.5, seed=1)
    assert abs(partial_kendall(x, y, z, n_resamples=FEW).tau) < 0.12
    assert abs(stratified_kendall(x, y, z, n_resamples=FEW).tau) < 0.12


def test_measure_that_only_knows_z_strong_link() -> None:
    # z ranks y as the training loss ranks test loss (τ ≈ 0.8): the partial τ keeps a positive bias,
    # the τ within narrow strata of z does not.
    x, y, z = _pool(300, 0.95, seed=2)
    partial = partial_kendall(x, y, z, n_resamples=FEW)
    assert partial.tau_yz > 0.75
    assert partial.tau == pytest.approx(_gaussian_partial_tau(0.95), abs=0.07)  # ≈ 0.22
    assert partial.null_tau == pytest.approx(_gaussian_partial_tau(0.95), abs=0.03)  # from the observed τ_xz, τ_yz
    assert partial.ci_low > 0.1
    stratified = stratified_kendall(x, y, z, min_per_stratum=5, n_resamples=FEW)
    assert abs(stratified.tau) < 0.1
    assert stratified.ci_low < 0 < stratified.ci_high


def test_measure_with_its_own_signal_is_positive() -> None:
    # x also carries y's part that z does not explain: both conditional τ clearly positive.
    x, y, z = _pool(300, 0.95, seed=3)
    x_signal = z + (y - 0.95 * z) + 0.3 * np.random.default_rng(99).normal(size=z.size)  # y's own part, buried in noise as large
    partial = partial_kendall(x_signal, y, z, n_resamples=FEW)
    stratified = stratified_kendall(x_signal, y, z, n_resamples=FEW)
    assert partial.ci_low > 0.3 and stratified.ci_low > 0.2


def test_ci_covers_estimate_and_is_reproducible() -> None:
    x, y, z = _pool(60, 0.7, seed=4)
    for fn in (partial_kendall, stratified_kendall):
        first, again, other = (fn(x, y, z, n_resamples=FEW, seed=s) for s in (5, 5, 6))
        assert first.ci_low <= first.tau <= first.ci_high
        assert first.ci == again.ci and first.ci != other.ci
        assert first.n_resamples == FEW and first.confidence == 0.95


@pytest.mark.parametrize("x, y, z, reason", [
    ([1.0, 2.0], [2.0, 1.0], [1.0, 3.0], "at least 3 models"),
    ([1.0, 1.0, 1.0, 1.0], [1.0, 2.0, 3.0, 4.0], [4.0, 2.0, 3.0, 1.0], "x is constant"),
    ([1.0, 3.0, 2.0, 4.0], [1.0, 2.0, 3.0, 4.0], [7.0, 7.0, 7.0, 7.0], "z is constant"),
    ([1.0, 2.0, 3.0, 4.0], [1.0, 3.0, 2.0, 4.0], [10.0, 20.0, 30.0, 40.0], "x is ranked exactly by z"),
])
def test_partial_undefined_says_why(x: list, y: list, z: list, reason: str) -> None:
    result = partial_kendall(x, y, z, n_resamples=FEW)
    assert isinstance(result, PartialKendallResult)
    assert math.isnan(result.tau) and math.isnan(result.ci_low) and result.ci_method == "undefined"
    assert reason in result.reason


def test_stratified_undefined_says_why() -> None:
    # Strata of 3: y is constant within each, so no stratum has a τ.
    z = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
    result = stratified_kendall([1.0, 3.0, 2.0, 6.0, 4.0, 5.0], [0.0, 0.0, 0.0, 1.0, 1.0, 1.0], z, min_per_stratum=3, n_resamples=FEW)
    assert isinstance(result, StratifiedKendallResult)
    assert math.isnan(result.tau) and result.ci_method == "undefined" and "no stratum" in result.reason
    assert result.n_undefined == 2 == result.n_strata
    short = stratified_kendall([1.0, 2.0], [2.0, 1.0], [0.0, 1.0], n_resamples=FEW)
    assert short.ci_method == "undefined" and "at least 3 models" in short.reason


@pytest.mark.parametrize("call, message", [
    (lambda: partial_kendall([1.0, 2.0, np.nan], [1.0, 2.0, 3.0], [1.0, 2.0, 3.0]), "NaN or infinite x"),
    (lambda: partial_kendall([1.0, 2.0, 3.0], [1.0, 2.0], [1.0, 2.0, 3.0]), "one value per model"),
    (lambda: stratified_kendall([1.0, 2.0, 3.0], [1.0, 2.0, 3.0], [1.0, 2.0, np.inf]), "infinite z"),
    (lambda: stratified_kendall([1.0, 2.0, 3.0], [1.0, 2.0, 3.0], [1.0, 2.0, 3.0], weighting="size"), "weighting"),
    (lambda: partial_kendall([1.0, 2.0, 3.0], [1.0, 2.0, 3.0], [3.0, 1.0, 2.0], n_resamples=0), "n_resamples"),
])
def test_bad_inputs_raise(call, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        call()
