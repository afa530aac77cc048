"""Jiang et al.'s granulated τ Ψ and τ within sub-pools of a pool trained on a grid of hyperparameters.

Granulated τ (Jiang et al. 2020), for a grid θ = (θ_1, ..., θ_n): for axis i, each assignment of the other
hyperparameters defines a sub-pool in which only θ_i varies (all seeds of those grid cells), with τ_{i,k}
its τ-b between measure and test loss; then (`granulated_kendall`)

    ψ_i = (1/m_i) Σ_{k=1..m_i} τ_{i,k},      Ψ = (1/n) Σ_{i=1..n} ψ_i

The conditional τ (`conditional_kendall`) is the plain τ within each value of one hyperparameter.
"""
from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from .stats import _ELEMENTS_PER_BATCH, KendallResult, _check_bootstrap_args, kendall

if TYPE_CHECKING:
    import pandas as pd

Undefined = Literal["omit", "zero"]


@dataclass(frozen=True)
class GranulatedResult:
    """Ψ and each ψ_i of `granulated_kendall`, with percentile CIs from a bootstrap stratified by grid cell.

    `psi_i`, `psi_i_ci`, `n_subpools` and `n_undefined` are keyed by hyperparameter name, in
    the order given. `n_undefined[h]` counts the sub-pools of axis h whose τ is NaN (see
    `granulated_kendall`); `n_resamples_undefined` counts the resamples whose Ψ is NaN (left
    out of the CI). `n` is the number of models, `n_cells` the number of grid cells.
    """

    psi: float
    ci_low: float
    ci_high: float
    psi_i: dict[str, float]
    psi_i_ci: dict[str, tuple[float, float]]
    n_subpools: dict[str, int]
    n_undefined: dict[str, int]
    n: int
    n_cells: int
    hyperparameters: tuple[str, ...]
    undefined: str = "omit"
    n_resamples: int = 999
    n_resamples_undefined: int = 0
    confidence: float = 0.95
    ci_method: str = "percentile"

    @property
    def ci(self) -> tuple[float, float]:
        return (self.ci_low, self.ci_high)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _require_columns(table: Any, roles: dict[str, list[str]]) -> None:
    """ValueError naming the first column (and its role) that the table lacks."""
    if not hasattr(table, "columns") or not hasattr(table, "groupby"):
        raise ValueError(f"table must be a pandas DataFrame, got {type(table).__name__}")
    for role, names in roles.items():
        for name in names:
            if name not in table.columns:
                raise ValueError(
                    f"{role} column {name!r} is not in the table (columns: {list(table.columns)})"
                )


def _finite_column(table: pd.DataFrame, name: str) -> np.ndarray:
    """A column as float64, refusing non-numeric or non-finite values with the column's name."""
    try:
        values = table[name].to_numpy(dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise ValueError(f"column {name!r} must be numeric: {error}") from error
    n_bad = int((~np.isfinite(values)).sum())
    if n_bad:
        raise ValueError(
            f"column {name!r} has {n_bad} NaN or infinite values of {values.size}; "
            "drop diverged models first and report how many"
        )
    return values


def _subpools(table: pd.DataFrame, hyperparameters: list[str], axis: str) -> list[np.ndarray]:
    """Row positions of each sub-pool of `axis`: the rows sharing one assignment of the other hyperparameters."""
    others = [h for h in hyperparameters if h != axis]
    if not others:
        return [np.arange(len(table))]
    keys = table.groupby(others, sort=True).ngroup().to_numpy()
    return [np.flatnonzero(keys == k) for k in range(int(keys.max()) + 1)]


def _pair_signs(values: np.ndarray) -> np.ndarray:
    """sign(v_a − v_b) for every ordered pair of models (a, b), flattened to a·M + b, as int8."""
    return np.sign(values[:, None] - values[None, :]).astype(np.int8).ravel()


def _subpool_taus(
    sign_m: np.ndarray,
    sign_t: np.ndarray,
    n_models: int,
    rows: np.ndarray,
    varies: bool,
    cells: np.ndarray | None = None,
) -> np.ndarray:
    """τ-b over the models `rows[b]` of each resample b (rows: B × k model indices), NaN if θ_i does not vary.

    The same sum as `tau_b_batched`, over the pairs a < b of the k positions only (halving
    numerator and denominator alike), with each sign read from the pool's pair tables
    instead of recomputed: a resample drawing one model twice reads sign(0) = 0, a tie.
    `cells` (bootstrap only: the grid cell of each of the k positions) weights the position
    pairs as `_resample_weights` says; without it every pair weighs 1 (plain τ-b).
    """
    if not varies:
        return np.full(rows.shape[0], np.nan)
    first, second = np.triu_indices(rows.shape[1], 1)
    weights = np.ones(first.size) if cells is None else _resample_weights(cells, first, second)
    # Pairs sorted by weight: each weighted sum is a few integer sums over contiguous slices.
    order = np.argsort(weights, kind="stable")
    first, second, weights = first[order], second[order], weights[order]
    starts = np.flatnonzero(np.r_[True, weights[1:] != weights[:-1]])
    values = weights[starts]
    batch = max(1, _ELEMENTS_PER_BATCH // max(first.size, 1))
    out = np.empty(rows.shape[0])
    for start in range(0, rows.shape[0], batch):
        chunk = rows[start : start + batch]
        pairs = chunk[:, first] * n_models + chunk[:, second]
        dx, dy = sign_m[pairs], sign_t[pairs]
        concordance = np.add.reduceat(dx * dy, starts, axis=1, dtype=np.int64) @ values
        untied_x = np.add.reduceat(np.abs(dx), starts, axis=1, dtype=np.int64) @ values
        untied_y = np.add.reduceat(np.abs(dy), starts, axis=1, dtype=np.int64) @ values
        with np.errstate(invalid="ignore", divide="ignore"):
            # τ_b = Σ_{a<b} w_ab s^m_ab s^t_ab / sqrt(Σ_{a<b} w_ab |s^m_ab| · Σ_{a<b} w_ab |s^t_ab|),  s^v_ab = sign(v_a − v_b)
            out[start : start + batch] = concordance / np.sqrt(untied_x * untied_y)
    return out


def _resample_weights(cells: np.ndarray, first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """Weights of the position pairs (first, second) of a stratified resample: n_c/(n_c − 1) within a cell, else 1.

    Two positions of one cell (n_c models) hold the same model with probability 1/n_c, a pair tied in both
    variables that drops out of τ-b. Unweighted, a resample under-counts the within-cell (seed-to-seed)
    pairs and tilts τ toward the across-cell pairs; with the weight, the expected weighted counts of
    concordant and untied pairs equal the data's.
    """
    _, inverse, counts = np.unique(cells, return_inverse=True, return_counts=True)
    size = counts[inverse].astype(np.float64)  # n_c of each position's cell (its positions in this sub-pool)
    same = cells[first] == cells[second]
    # w_ab = n_c / (n_c − 1) if a and b lie in cell c, else 1
    return np.where(same, size[first] / np.maximum(size[first] - 1, 1), 1.0)


def _psi_from_taus(taus: np.ndarray, undefined: Undefined) -> np.ndarray:
    """ψ_i from the sub-pool τ (last axis): NaN τ left out of the mean ("omit") or counted as 0 ("zero")."""
    if undefined == "zero":
        # ψ_i = (1/m_i) Σ_k τ_{i,k}, an undefined τ_{i,k} counting as 0
        return np.nan_to_num(taus, nan=0.0).mean(axis=-1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN slice: ψ_i undefined
        # ψ_i = (1/|K_i|) Σ_{k∈K_i} τ_{i,k},   K_i = the sub-pools whose τ is defined
        return np.nanmean(taus, axis=-1)


def granulated_kendall(
    table: pd.DataFrame,
    measure: str,
    target: str,
    hyperparameters: list[str],
    n_resamples: int = 999,
    seed: int = 0,
    confidence: float = 0.95,
    undefined: Undefined = "omit",
) -> GranulatedResult:
    """Jiang et al.'s granulated Kendall τ: Ψ = (1/n) Σ_i ψ_i, ψ_i = (1/m_i) Σ_k τ_{i,k}, with CIs.

    For axis i, the sub-pools are the groups of rows sharing the values of all other hyperparameters, and
    τ_{i,k} is τ-b over sub-pool k. The CI resamples models within each grid cell (a within-cell pair
    weighs n_c/(n_c − 1), `_resample_weights`) and takes the percentile interval.

    Args:
        table: one row per model, with the columns `measure`, `target` and each hyperparameter.
        measure: the measure's column (e.g. sharpness).
        target: the generalization quantity's column (e.g. test loss).
        hyperparameters: the grid axes (seeds are not one: a cell's seeds are its models).
        n_resamples: bootstrap resamples.
        seed: seed of the resampling.
        confidence: the CI's level.
        undefined: how a sub-pool without τ (measure or target constant, or θ_i single-valued) enters ψ_i:
            "omit" (left out; ψ_i and Ψ NaN when none has a τ) or "zero" (τ = 0, Jiang et al.'s τ-a convention).

    Returns:
        GranulatedResult: Ψ and each ψ_i with their CIs and sub-pool counts.
    """
    hyperparameters = list(hyperparameters)
    if not hyperparameters:
        raise ValueError("hyperparameters must name at least one column")
    if len(set(hyperparameters)) != len(hyperparameters):
        raise ValueError(f"hyperparameters must be distinct, got {hyperparameters}")
    _require_columns(table, {"measure": [measure], "target": [target], "hyperparameter": hyperparameters})
    for name in hyperparameters:
        if table[name].isna().any():
            raise ValueError(f"hyperparameter column {name!r} has missing values")
    if undefined not in ("omit", "zero"):
        raise ValueError(f"undefined must be 'omit' or 'zero', got {undefined!r}")
    _check_bootstrap_args(n_resamples, confidence)
    if len(table) < 2:
        raise ValueError(f"need at least 2 models, got {len(table)}")
    m, t = _finite_column(table, measure), _finite_column(table, target)

    # Stratified resampling: column j of `rows` always holds a model of row j's cell.
    cells = table.groupby(hyperparameters, sort=True).ngroup().to_numpy()
    n_cells = int(cells.max()) + 1
    rng = np.random.default_rng(seed)
    rows = np.empty((n_resamples, m.size), dtype=np.int64)
    for cell in range(n_cells):
        members = np.flatnonzero(cells == cell)
        rows[:, members] = members[rng.integers(0, members.size, size=(n_resamples, members.size))]

    sign_m, sign_t = _pair_signs(m), _pair_signs(t)
    psi_i, psi_i_ci, n_subpools, n_undefined = {}, {}, {}, {}
    alpha = (1 - confidence) / 2
    psi_point, psi_boot = [], []
    for axis in hyperparameters:
        pools = _subpools(table, hyperparameters, axis)
        varies = [table[axis].iloc[pool].nunique() > 1 for pool in pools]
        # τ_{i,k} = τ_b(measure, target) over sub-pool k of axis i: the data, then each resample
        taus = np.array([_subpool_taus(sign_m, sign_t, m.size, pool[None], v)[0] for pool, v in zip(pools, varies)])
        boot = np.stack(
            [_subpool_taus(sign_m, sign_t, m.size, rows[:, pool], v, cells[pool]) for pool, v in zip(pools, varies)], -1
        )
        point, per_resample = _psi_from_taus(taus, undefined), _psi_from_taus(boot, undefined)
        psi_point.append(float(point))
        psi_boot.append(per_resample)
        psi_i[axis] = float(point)
        n_subpools[axis] = len(pools)
        n_undefined[axis] = int(np.isnan(taus).sum())
        finite = per_resample[np.isfinite(per_resample)]
        low, high = np.quantile(finite, [alpha, 1 - alpha]) if finite.size else (np.nan, np.nan)
        psi_i_ci[axis] = (float(low), float(high))

    # Ψ = (1/n) Σ_i ψ_i  (NaN if some ψ_i is NaN)
    psi = float(np.mean(psi_point))
    boot_psi = np.mean(np.stack(psi_boot, axis=-1), axis=-1)
    finite = boot_psi[np.isfinite(boot_psi)]
    low, high = np.quantile(finite, [alpha, 1 - alpha]) if finite.size else (np.nan, np.nan)
    return GranulatedResult(
        psi=psi,
        ci_low=float(low),
        ci_high=float(high),
        psi_i=psi_i,
        psi_i_ci=psi_i_ci,
        n_subpools=n_subpools,
        n_undefined=n_undefined,
        n=int(m.size),
        n_cells=n_cells,
        hyperparameters=tuple(hyperparameters),
        undefined=undefined,
        n_resamples=n_resamples,
        n_resamples_undefined=int(boot_psi.size - finite.size),
        confidence=confidence,
    )


def conditional_kendall(
    table: pd.DataFrame,
    measure: str,
    target: str,
    hyperparameter: str,
    n_resamples: int = 9999,
    confidence: float = 0.95,
    seed: int = 0,
) -> dict[Any, KendallResult]:
    """τ-b between measure and target within each value of one hyperparameter, keyed by value (sorted).

    Each split is passed to `kendall_where_defined` (kendall's τ, p-value and bootstrap CI, the same
    seed for every split): a split with no τ gives an undefined KendallResult rather than an error.
    """
    _require_columns(table, {"measure": [measure], "target": [target], "hyperparameter": [hyperparameter]})
    if table[hyperparameter].isna().any():
        raise ValueError(f"hyperparameter column {hyperparameter!r} has missing values")
    _check_bootstrap_args(n_resamples, confidence)
    m, t = _finite_column(table, measure), _finite_column(table, target)
    values = table[hyperparameter].to_numpy()
    results: dict[Any, KendallResult] = {}
    for value in sorted(set(values.tolist())):
        split = values == value
        # τ_v = τ_b(measure, target) over the models with hyperparameter = v
        results[value] = kendall_where_defined(m[split], t[split], n_resamples=n_resamples, confidence=confidence, seed=seed)
    return results


def kendall_where_defined(measure: Any, target: Any, n_resamples: int = 9999, confidence: float = 0.95, seed: int = 0) -> KendallResult:
    """`stats.kendall` of a (sub-)pool, or, where τ has no value (fewer than 3 models, or the measure or the
    target constant), a KendallResult of NaNs with ci_method "undefined" instead of kendall's ValueError.

    A grid's sub-pool may be degenerate (a measure such as the epoch count, equal for every model of one
    learning rate); one such split must not hide the others. Inputs are finite 1-D values (`finite_pairs` first).
    """
    m, t = np.asarray(measure, dtype=np.float64), np.asarray(target, dtype=np.float64)
    if m.size < 3 or np.all(m == m[0]) or np.all(t == t[0]):
        nan = float("nan")
        return KendallResult(nan, nan, nan, nan, int(m.size), confidence, "undefined")
    return kendall(m, t, n_resamples=n_resamples, confidence=confidence, seed=seed)
