"""Granulated (Ψ) and conditional τ, and τ where a sub-pool has one (sharplib.core.subpools)."""
from __future__ import annotations

import itertools
import math
import warnings

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from sharplib.core.stats import kendall
from sharplib.core.subpools import GranulatedResult, conditional_kendall, granulated_kendall, kendall_where_defined

FEW = 999  # resamples: enough for CI checks, keeps the file fast

LRS, BATCHES, SEEDS = (0.01, 0.05, 0.1), (32, 64, 128), 5


def _grid_pool(seed: int = 0, noise: float = 0.01) -> pd.DataFrame:
    """lr × batch size × 5 seeds; test loss = 10·lr + noise (noise below the lr gaps, so lr orders it)."""
    rng = np.random.default_rng(seed)
    table = pd.DataFrame(list(itertools.product(LRS, BATCHES, range(SEEDS))), columns=["lr", "batch", "seed"])
    table["test_loss"] = 10 * table["lr"] + noise * rng.normal(size=len(table))
    table["measure_lr"] = table["lr"]
    return table


def _brute_force_psi(table: pd.DataFrame, measure: str, target: str, hps: list[str], zero: bool) -> dict:
    """Ψ and ψ_i written out: loop over the assignments of the other hyperparameters, scipy's τ per sub-pool."""
    psi_i, counts, undefined = {}, {}, {}
    for axis in hps:
        others = [h for h in hps if h != axis]
        taus = []
        for assignment in itertools.product(*(sorted(table[h].unique()) for h in others)):
            keep = np.ones(len(table), dtype=bool)
            for h, value in zip(others, assignment):
                keep &= (table[h] == value).to_numpy()
            if not keep.any():
                continue
            sub = table[keep]
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                tau = stats.kendalltau(sub[measure], sub[target]).statistic
            taus.append(float("nan") if sub[axis].nunique() < 2 else tau)
        counts[axis] = len(taus)
        undefined[axis] = sum(math.isnan(tau) for tau in taus)
        used = [0.0 if math.isnan(tau) else tau for tau in taus] if zero else [t for t in taus if not math.isnan(t)]
        psi_i[axis] = sum(used) / len(used) if used else float("nan")
    return {"psi": sum(psi_i.values()) / len(hps), "psi_i": psi_i, "n_subpools": counts, "n_undefined": undefined}


def test_granulated_known_by_construction_measure_is_lr() -> None:
    table = _grid_pool()
    # Test loss is sorted by lr, so every pair untied in the measure (= lr) is concordant; τ-b = sqrt(untied / all pairs).
    plain = kendall(table["measure_lr"], table["test_loss"], n_resamples=FEW)
    n, per_lr = len(table), len(BATCHES) * SEEDS
    assert plain.tau == pytest.approx(math.sqrt(1 - 3 * math.comb(per_lr, 2) / math.comb(n, 2)))
    assert plain.tau > 0.8
    # A sub-pool of the lr axis fixes the batch size: 3 lrs × 5 seeds, the same argument inside it.
    psi_lr = math.sqrt(1 - 3 * math.comb(SEEDS, 2) / math.comb(3 * SEEDS, 2))
    omit = granulated_kendall(table, "measure_lr", "test_loss", ["lr", "batch"], n_resamples=FEW)
    assert omit.psi_i["lr"] == pytest.approx(psi_lr)
    assert omit.n_subpools == {"lr": 3, "batch": 3}
    # Sub-pools of the batch axis fix the lr: the measure is constant there, τ-b is 0/0 in all three.
    assert omit.n_undefined == {"lr": 0, "batch": 3}
    assert math.isnan(omit.psi_i["batch"]) and math.isnan(omit.psi)
    # Stratified resampling keeps every resampled batch sub-pool inside one lr: Ψ stays undefined in all of them.
    assert omit.n_resamples_undefined == FEW
    # Jiang et al.'s convention: a measure blind to the batch size scores ψ_batch = 0, in every resample too.
    zero = granulated_kendall(table, "measure_lr", "test_loss", ["lr", "batch"], n_resamples=FEW, undefined="zero")
    assert zero.psi_i == pytest.approx({"lr": psi_lr, "batch": 0.0})
    assert zero.psi == pytest.approx(psi_lr / 2)
    assert zero.psi_i_ci["batch"] == (0.0, 0.0)
    assert zero.ci_low <= zero.psi <= zero.ci_high


@pytest.mark.parametrize("undefined", ["omit", "zero"])
def test_granulated_measure_equal_to_target_gives_one(undefined: str) -> None:
    table = _grid_pool(noise=0.5)  # noise larger than the lr gaps: the batch axis has its own ordering
    result = granulated_kendall(table, "test_loss", "test_loss", ["lr", "batch"], n_resamples=FEW, undefined=undefined)
    assert result.psi == pytest.approx(1.0)
    assert result.psi_i == pytest.approx({"lr": 1.0, "batch": 1.0})
    assert result.ci == pytest.approx((1.0, 1.0))
    assert -result.psi == pytest.approx(
        granulated_kendall(table.assign(neg=-table["test_loss"]), "neg", "test_loss", ["lr", "batch"], n_resamples=9).psi
    )


@pytest.mark.parametrize("undefined", ["omit", "zero"])
@pytest.mark.parametrize("seed", range(3))
def test_granulated_matches_brute_force(seed: int, undefined: str) -> None:
    rng = np.random.default_rng(seed)
    grid = list(itertools.product((0.01, 0.1), (32, 64, 128), (0.0, 5e-4), range(4)))
    table = pd.DataFrame(grid, columns=["lr", "batch", "wd", "seed"])
    table["test_loss"] = table["lr"] + 1e-4 * table["batch"] + rng.normal(size=len(table)) * 0.05
    table["sharpness"] = np.round(table["test_loss"] + rng.normal(size=len(table)) * 0.05, 1)  # rounded: ties
    table = table.drop(index=rng.choice(len(table), 10, replace=False))  # uneven cells
    # One sub-pool of the wd axis with a constant measure (undefined τ).
    corner = (table["lr"] == 0.1) & (table["batch"] == 32)
    table.loc[corner, "sharpness"] = 7.0
    # One lr sub-pool in which lr does not vary (incomplete grid): drop lr = 0.01 at batch 64, wd 0.
    table = table[~((table["lr"] == 0.01) & (table["batch"] == 64) & (table["wd"] == 0.0))]
    hps = ["lr", "batch", "wd"]
    expected = _brute_force_psi(table, "sharpness", "test_loss", hps, zero=undefined == "zero")
    result = granulated_kendall(table, "sharpness", "test_loss", hps, n_resamples=FEW, seed=seed, undefined=undefined)
    assert result.psi == pytest.approx(expected["psi"], abs=1e-12)
    assert result.psi_i == pytest.approx(expected["psi_i"], abs=1e-12)
    assert result.n_subpools == expected["n_subpools"]
    assert result.n_undefined == expected["n_undefined"]
    # wd: the constant corner and the (lr 0.01, batch 64) sub-pool left with wd = 5e-4 only; lr: (batch 64, wd 0).
    assert result.n_undefined["wd"] >= 2 and result.n_undefined["lr"] >= 1
    assert result.n == len(table) and result.n_cells == table.groupby(hps).ngroups
    assert result.ci_low <= result.psi <= result.ci_high
    for h in hps:
        assert result.psi_i_ci[h][0] <= result.psi_i[h] <= result.psi_i_ci[h][1]


def test_granulated_single_hyperparameter_is_plain_tau() -> None:
    table = _grid_pool(noise=0.5)
    table["sharpness"] = table["test_loss"] + np.random.default_rng(3).normal(size=len(table))
    result = granulated_kendall(table, "sharpness", "test_loss", ["lr"], n_resamples=FEW)
    assert result.n_subpools == {"lr": 1}
    assert result.psi == pytest.approx(stats.kendalltau(table["sharpness"], table["test_loss"]).statistic, abs=1e-12)


def test_granulated_ci_seeded_and_as_dict() -> None:
    table = _grid_pool(noise=0.5)
    table["sharpness"] = table["test_loss"] + np.random.default_rng(4).normal(size=len(table))
    first, again, other = (
        granulated_kendall(table, "sharpness", "test_loss", ["lr", "batch"], n_resamples=FEW, seed=s) for s in (1, 1, 2)
    )
    assert first == again and first.ci != other.ci
    assert isinstance(first, GranulatedResult)
    assert first.ci_high - first.ci_low > 0.02
    assert first.as_dict()["psi_i"] == first.psi_i and first.as_dict()["psi"] == first.psi
    with pytest.raises(AttributeError):
        first.psi = 0.0  # type: ignore[misc]


def test_conditional_kendall_matches_scipy_per_split() -> None:
    table = _grid_pool(noise=0.5)
    table["sharpness"] = table["test_loss"] + np.random.default_rng(5).normal(size=len(table))
    results = conditional_kendall(table, "sharpness", "test_loss", "batch", n_resamples=FEW)
    assert list(results) == list(BATCHES)
    for batch, result in results.items():
        split = table[table["batch"] == batch]
        expected = stats.kendalltau(split["sharpness"], split["test_loss"])
        assert result.tau == pytest.approx(expected.statistic, abs=1e-12)
        assert result.p_value == pytest.approx(expected.pvalue, rel=1e-9)
        assert result.n == len(split) == 3 * SEEDS
        assert result.ci_low <= result.tau <= result.ci_high


def test_conditional_kendall_degenerate_split_is_nan() -> None:
    table = _grid_pool()
    # Within one lr the measure (= lr) is constant: no τ for any split.
    results = conditional_kendall(table, "measure_lr", "test_loss", "lr", n_resamples=FEW)
    assert all(math.isnan(r.tau) and r.ci_method == "undefined" and r.n == 15 for r in results.values())


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"measure": "nope"}, "measure column 'nope'"),
        ({"target": "loss_missing"}, "target column 'loss_missing'"),
        ({"hyperparameters": ["lr", "momentum"]}, "hyperparameter column 'momentum'"),
        ({"hyperparameters": []}, "at least one"),
        ({"hyperparameters": ["lr", "lr"]}, "distinct"),
        ({"measure": "with_nan"}, "column 'with_nan' has 1 NaN"),
        ({"hyperparameters": ["lr", "hp_nan"]}, "hyperparameter column 'hp_nan' has missing"),
        ({"undefined": "skip"}, "undefined must be"),
        ({"confidence": 1.5}, "confidence"),
    ],
)
def test_granulated_bad_inputs_name_the_column(kwargs: dict, message: str) -> None:
    table = _grid_pool()
    table["with_nan"] = table["test_loss"].where(table.index != 3)
    table["hp_nan"] = table["batch"].where(table.index != 4)
    args = {"measure": "measure_lr", "target": "test_loss", "hyperparameters": ["lr", "batch"], "n_resamples": 9}
    with pytest.raises(ValueError, match=message):
        granulated_kendall(table, **{**args, **kwargs})


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"measure": "nope"}, "measure column 'nope'"),
        ({"target": "gone"}, "target column 'gone'"),
        ({"hyperparameter": "momentum"}, "hyperparameter column 'momentum'"),
        ({"target": "with_inf"}, "column 'with_inf' has 1 NaN or infinite"),
    ],
)
def test_conditional_bad_inputs_name_the_column(kwargs: dict, message: str) -> None:
    table = _grid_pool()
    table["with_inf"] = table["test_loss"].where(table.index != 3, np.inf)
    args = {"measure": "measure_lr", "target": "test_loss", "hyperparameter": "batch", "n_resamples": 9}
    with pytest.raises(ValueError, match=message):
        conditional_kendall(table, **{**args, **kwargs})
    with pytest.raises(ValueError, match="DataFrame"):
        conditional_kendall({"a": [1]}, "a", "a", "a")  # type: ignore[arg-type]


@pytest.mark.parametrize("measure, target", [([1.0, 2.0], [1.0, 2.0]), ([1.0, 1.0, 1.0, 1.0], [1.0, 2.0, 3.0, 4.0]),
                                             ([1.0, 2.0, 3.0, 4.0], [5.0, 5.0, 5.0, 5.0])])
def test_kendall_where_defined_is_undefined_without_a_tau(measure: list, target: list) -> None:
    with pytest.raises(ValueError):  # what it stands in for
        kendall(measure, target, n_resamples=9)
    result = kendall_where_defined(measure, target, n_resamples=9, confidence=0.9)
    assert math.isnan(result.tau) and math.isnan(result.p_value) and math.isnan(result.ci_low) and math.isnan(result.ci_high)
    assert (result.n, result.confidence, result.ci_method) == (len(measure), 0.9, "undefined")


def test_kendall_where_defined_is_kendall_where_there_is_a_tau() -> None:
    rng = np.random.default_rng(2)
    measure, target = rng.normal(size=12), rng.normal(size=12)
    assert kendall_where_defined(measure, target, n_resamples=99, seed=4) == kendall(measure, target, n_resamples=99, seed=4)
