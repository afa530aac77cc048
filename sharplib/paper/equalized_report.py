"""The paper's panel at equal training progress, built from results/<arch>/equalized.json and measures.json.

    python -m sharplib.paper.equalized_report RESULTS_DIR GENERATED_DIR

writes equalized.tex (a table per architecture and measure: τ with test loss on the measures step's pools as the
protocol stopped them and on the same pools trained to L*, the partial τ given the training loss there, Ψ on the
grid; sentences that follow the numbers; where it was computed) and equalized_tau.pdf/.png (those τ with their
intervals, protocol against L*, per measure and architecture). Rendering only: it stays out of every step's hash.
"""
from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Any, Mapping

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns

from ..core.archs import ARCHS
from ..experiments.equalized_study import read_equalized
from ..experiments.measures_study import read_measures
from ..experiments.protocol import spec
from ..pipeline.lockfile import computed_where
from .measures_report import LABELS, POOL_NAMES
from .progress_report import tex

TARGET = "test_loss"  # the paper's target; equalized.json holds test error and the generalization gap too
# the four τ of a measure in the figure: (label, where it is read)
SERIES = {
    "seed-only pool, protocol's stop": ("measures", "tau_seed"),
    "seed-only pool at L*": ("equalized", "seed"),
    "varied pool, protocol's stop": ("measures", "tau_varied"),
    "varied pool at L*": ("equalized", "varied"),
}


def _finite(*values: Any) -> bool:
    return all(isinstance(v, (int, float)) and math.isfinite(v) for v in values)


def beyond(partial: Mapping[str, Any]) -> bool:
    """Whether a partial τ's interval excludes its null value (False where either is undefined)."""
    low, high, null = partial["ci_low"], partial["ci_high"], partial.get("null_tau")
    return _finite(low, high, null) and not (low <= null <= high)


def overview(summary: Mapping[str, Any], target: str = TARGET) -> pd.DataFrame:
    """One row per measure: on each pool at L*, τ with the target and the partial τ given the training loss (its null
    value, whether its interval excludes it); Ψ on the varied pool."""
    rows = {}
    for measure, entry in summary["measures"].items():
        row: dict[str, Any] = {}
        for pool in (p for p in POOL_NAMES if p in entry and target in entry[p]):
            taus = entry[pool][target]
            row.update({f"τ {pool}": taus["tau"]["tau"], f"partial τ {pool}": taus["partial"]["tau"],
                        f"null {pool}": taus["partial"]["null_tau"], f"beyond {pool}": beyond(taus["partial"])})
        if target in entry.get("granulated", {}):
            row["Ψ varied"] = entry["granulated"][target]["psi"]
        rows[LABELS.get(measure, measure)] = row
    return pd.DataFrame.from_dict(rows, orient="index")


def intervals(equalized: Mapping[str, Any], measures: Mapping[str, Any] | None, target: str = TARGET) -> pd.DataFrame:
    """Long table for the figure: per measure and series (SERIES), τ with the target and its interval. The protocol's
    pools come from measures.json (test loss only; None: left out)."""
    rows = []
    for measure, entry in equalized["measures"].items():
        for label, (source, key) in SERIES.items():
            if source == "equalized" and key in entry and target in entry[key]:
                r = entry[key][target]["tau"]
            elif source == "measures" and measures is not None and target == TARGET and measure in measures:
                r = measures[measure][key]
            else:
                continue
            rows.append({"measure": LABELS.get(measure, measure), "series": label, "tau": r["tau"], "ci_low": r["ci_low"],
                         "ci_high": r["ci_high"]})
    return pd.DataFrame(rows)


def forest(ax: plt.Axes, equalized: Mapping[str, Any], title: str, measures: Mapping[str, Any] | None = None) -> None:
    """τ with test loss (dot) and its 95 % interval (bar) per measure: each pool at the protocol's stop (if `measures` is
    given) and at L*."""
    table = intervals(equalized, measures).dropna(subset=["tau"])
    order = list(dict.fromkeys(table["measure"]))
    series = [s for s in SERIES if s in set(table["series"])]
    palette = dict(zip(SERIES, sns.color_palette("Paired", 4)))
    for i, label in enumerate(series):
        part = table[table["series"] == label]
        y = [order.index(m) + (i - (len(series) - 1) / 2) * 0.18 for m in part["measure"]]
        ax.errorbar(part["tau"], y, xerr=[part["tau"] - part["ci_low"], part["ci_high"] - part["tau"]], fmt="o", markersize=3.5,
                    capsize=2, color=palette[label], label=label)
    ax.axvline(0, color="grey", linewidth=0.8)
    ax.set_yticks(range(len(order)), order, fontsize=7)
    ax.invert_yaxis()
    ax.set(xlim=(-1, 1), xlabel="Kendall τ with test loss", title=title)
    ax.legend(fontsize=6, loc="lower left")


def _ci(r: Mapping[str, Any]) -> str:
    if not _finite(r["tau"], r["ci_low"], r["ci_high"]):
        return "undefined"
    return f"{r['tau']:+.2f} [{r['ci_low']:+.2f}, {r['ci_high']:+.2f}]"


def _counts(name: str, pool: Mapping[str, Any]) -> str:
    missed = pool["n_missed_target"]
    who = f" ({'; '.join(pool['missed_target'])})" if missed else ""
    return f"{pool['n_models'] - missed} of the {pool['n_models']} models of the {name} reached L*{who}"


def paragraph(arch: str, summary: Mapping[str, Any], target: str = TARGET) -> str:
    """Per architecture, in sentences chosen by the numbers: how many models reached L*, and per pool which measures'
    partial τ given the training loss excludes its null value; adaptive sharpness's τ and partial τ."""
    name, pools = spec(arch).model_name, summary["pools"]
    reached = " and ".join(_counts(POOL_NAMES[p], pools[p]) for p in POOL_NAMES if p in pools)
    parts = [f"For {name}, {reached}."]
    table = overview(summary, target)
    for pool in (p for p in POOL_NAMES if f"beyond {p}" in table.columns):
        found = [m for m, b in table[f"beyond {pool}"].items() if b]
        listed = f": {', '.join(found)}" if found else ""
        parts.append(f" On the {POOL_NAMES[pool]} at L*, the partial τ given the training loss excludes its null value for "
                     f"{len(found)} of {len(table)} measures{listed}.")
    adaptive = summary["measures"].get("sharpness_adaptive", {})
    said = [f"τ = {_ci(adaptive[p][target]['tau'])} and partial τ = {_ci(adaptive[p][target]['partial'])} on the {POOL_NAMES[p]}"
            for p in POOL_NAMES if p in adaptive and target in adaptive[p]]
    if said:
        parts.append(f" Adaptive sharpness has {' and '.join(said)}.")
    return "".join(parts)
