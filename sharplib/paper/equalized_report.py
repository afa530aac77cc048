"""The paper's panel at equal training progress, built from results/<arch>/equalized.json and measures.json.

    python -m sharplib.paper.equalized_report RESULTS_DIR GENERATED_DIR

writes equalized.tex (a table per architecture and measure: τ with test loss on the measures step's two pools trained
to L*, the partial τ given the training loss there with its null value, Ψ on the grid; sentences that follow the
numbers; the settings and where it was computed) and equalized_tau.pdf/.png (τ with its interval on those pools as
the protocol stopped them, from measures.json, and at L*, per measure and architecture). Rendering only: it stays out
of every step's hash.
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
from .measures_report import LABELS, POOL_NAMES
from .progress_report import TARGET_LABELS, excludes, not_run_yet, tex, where_computed

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
    return excludes(partial["ci_low"], partial["ci_high"], partial.get("null_tau"))


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


def forest(ax: plt.Axes, equalized: Mapping[str, Any], title: str, measures: Mapping[str, Any] | None = None,
           legend: bool = True) -> None:
    """τ with test loss (dot) and its 95 % interval (bar) per measure, top to bottom: each pool at the protocol's stop (if
    `measures` is given) and at L*."""
    table = intervals(equalized, measures).dropna(subset=["tau"])
    order = list(dict.fromkeys(table["measure"]))
    series = [s for s in SERIES if s in set(table["series"])]
    palette = dict(zip(SERIES, sns.color_palette("Paired", 4)))
    for i, label in enumerate(series):
        part = table[table["series"] == label]
        y = [order.index(m) + (i - (len(series) - 1) / 2) * 0.18 for m in part["measure"]]
        # the interval as a line of its own: a percentile interval of a small pool need not hold the estimate
        ax.hlines(y, part["ci_low"], part["ci_high"], color=palette[label], linewidth=1.2)
        ax.plot(part["tau"], y, "o", markersize=3.5, color=palette[label], label=label)
    ax.axvline(0, color="grey", linewidth=0.8)
    ax.set_yticks(range(len(order)), order, fontsize=7)
    ax.set(xlim=(-1, 1), ylim=(len(order) - 0.5, -0.5), xlabel="Kendall τ with test loss", title=title)  # the first measure on top
    if legend:
        ax.legend(fontsize=6, loc="best")


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
    return "".join(parts) + other_targets(summary, target)


def other_targets(summary: Mapping[str, Any], target: str = TARGET) -> str:
    """One sentence: with the other targets (test error, the generalization gap), where a measure's partial τ at L*
    excludes its null value."""
    targets = [t for t in TARGET_LABELS if t != target and any(t in e.get("seed", {}) for e in summary["measures"].values())]
    found = [f"{LABELS.get(measure, measure)} ({TARGET_LABELS[other]}, {_listed([POOL_NAMES[p] for p in pools])})"
             for measure in summary["measures"] for other in targets if (pools := cleared(summary, measure, other))]
    instead = " or ".join(TARGET_LABELS[t] if t == "test_error" else f"the {TARGET_LABELS[t]}" for t in targets)
    if not found:
        return f" Taking {instead} as the target instead, no partial τ at L* excludes its null value."
    return f" Taking {instead} as the target instead, the partial τ at L* excludes its null value for {'; '.join(found)}."


CONTROLS = ("train_loss", "epochs")


def cleared(summary: Mapping[str, Any], measure: str, target: str = TARGET) -> list[str]:
    """The pools at L* on which `measure`'s partial τ given the training loss excludes its null value."""
    entry = summary["measures"].get(measure, {})
    return [pool for pool in POOL_NAMES if pool in entry and target in entry[pool] and beyond(entry[pool][target]["partial"])]


def conclusion(summaries: Mapping[str, Mapping[str, Any]]) -> str:
    """Two sentences for the paper's conclusion: on which pools at L* adaptive sharpness's partial τ clears its null value
    (if anywhere), and which other measures of the panel do, per architecture."""
    names = {arch: spec(arch).model_name for arch in summaries}
    adaptive = {arch: cleared(s, "sharpness_adaptive") for arch, s in summaries.items()}
    if not any(adaptive.values()):
        first = ("Trained to a common loss, adaptive sharpness's partial τ given the training loss stays within reach of its null "
                 f"value on both pools for {_listed(list(names.values()))}.")
    else:
        where = [f"{names[a]} ({_listed([POOL_NAMES[p] for p in pools])})" for a, pools in adaptive.items() if pools]
        first = (f"Trained to a common loss, adaptive sharpness's partial τ given the training loss clears its null value for "
                 f"{_listed(where)} only.")
    others = {arch: [LABELS[m] for m in s["measures"] if m not in (*CONTROLS, "sharpness_adaptive") and cleared(s, m)]
              for arch, s in summaries.items()}
    said = [f"{_listed(found)} for {names[a]}" for a, found in others.items() if found]
    none = [names[a] for a, found in others.items() if not found]
    second = (f" Of the panel's other measures, {'; '.join(said)} clear it on at least one pool" if said
              else " No other measure of the panel clears it")
    if said and none:
        second += f", and none for {_listed(none)}"
    return first + second + "."


def _interval(r: Mapping[str, Any]) -> str:
    """τ [low, high] for a table cell, in math mode; a dash where τ is undefined."""
    if not _finite(r["tau"], r["ci_low"], r["ci_high"]):
        return "--"
    return f"${r['tau']:+.2f}$ {{\\scriptsize $[{r['ci_low']:+.2f}, {r['ci_high']:+.2f}]$}}"


def table_tex(summaries: Mapping[str, Mapping[str, Any]], target: str = TARGET) -> str:
    """Rows: an architecture's measures at L*; columns: on each pool τ and the partial τ given the training loss (its null
    value; a star where its interval excludes it), and Ψ on the varied pool."""
    pools = [p for p in POOL_NAMES if any(p in s["pools"] for s in summaries.values())]
    head = " & ".join(f"\\multicolumn{{2}}{{c}}{{{POOL_NAMES[p]} at $L^*$}}" for p in pools)
    lines = [f"\\begin{{tabular}}{{l{'cc' * len(pools)}c}}", "\\hline", f" & {head} & \\\\",
             " & " + " & ".join(["$\\tau$ & partial $\\tau$ (null)"] * len(pools)) + " & $\\Psi$ \\\\"]
    for arch, summary in summaries.items():
        lines += ["\\hline", f"\\multicolumn{{{2 * len(pools) + 2}}}{{l}}{{\\textit{{{spec(arch).model_name}}}}} \\\\"]
        for measure, entry in summary["measures"].items():
            cells = []
            for pool in pools:
                taus = entry.get(pool, {}).get(target)
                if taus is None:
                    cells += ["--", "--"]
                    continue
                p = taus["partial"]
                null = f" {{\\scriptsize ({p['null_tau']:+.2f})}}" if _finite(p.get("null_tau")) else ""
                cells += [_interval(taus["tau"]), _interval(p) + ("$^{*}$" if beyond(p) else "") + null]
            g = entry.get("granulated", {}).get(target)
            cells.append(_interval({"tau": g["psi"], "ci_low": g["ci_low"], "ci_high": g["ci_high"]}) if g else "--")
            lines.append(f"{LABELS.get(measure, measure)} & " + " & ".join(cells) + " \\\\")
    return "\n".join([*lines, "\\hline", "\\end{tabular}"]) + "\n"


def _listed(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def settings(summaries: Mapping[str, Mapping[str, Any]]) -> str:
    """Per architecture, as the runs recorded them: L*, the seed pool's size and cap, the grid, the panel's restarts."""
    parts = []
    for arch, record in summaries.items():
        grid, seed_cfg = record["grid"], record["seed_train_config"]
        lrs = _listed([f"{f:g}" for f in grid["lr_factors"]])
        batches = _listed([str(b) for b in grid["batch_sizes"]])
        parts.append(f"{spec(arch).model_name}: L* = {record['target_loss']:g}, {len(record['seeds'])} seeds within "
                     f"{seed_cfg['max_epochs']} epochs, and a grid of learning rates {lrs} times Table I's by batch sizes {batches}, "
                     f"{grid['n_seeds']} seeds a cell; worst-case sharpness from {record['measures_config']['n_restarts']} restarts")
    return "; ".join(parts) + "."


def provenance_note(results_dir: Path, archs: list[str]) -> str:
    """Where the pools were trained and measured (the locks), and which architectures are missing."""
    note = where_computed(results_dir, "equalized", archs, "pools at $L^*$")
    note += (" The seed-only pool reuses the progress step's checkpoints where they are on disk, else retrains the same seeds with"
             " the same settings: where training draws random numbers on the device (the GAT's dropout) a pool retrained on another"
             " device is a pool of its own.")
    return note + not_run_yet("equalized", archs)


def figure(equalized: Mapping[str, Mapping[str, Any]], measures: Mapping[str, Mapping[str, Any]], out_dir: Path) -> list[Path]:
    """equalized_tau.pdf/.png: `forest` per architecture, the protocol's pools (measures.json) beside the pools at L*."""
    archs = [a for a in ARCHS if a in equalized]
    fig, axes = plt.subplots(1, len(archs), figsize=(4.6 * len(archs), 5.2), sharey=True, squeeze=False)
    for ax, arch in zip(axes[0], archs):
        forest(ax, equalized[arch], spec(arch).model_name, measures.get(arch), legend=False)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(labels), fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    written = []
    for suffix in ("pdf", "png"):
        fig.savefig(out_dir / f"equalized_tau.{suffix}", dpi=120)
        written.append(out_dir / f"equalized_tau.{suffix}")
    plt.close(fig)
    return written


def build(results_dir: Path, out_dir: Path) -> list[Path]:
    """equalized.tex and the figure from every architecture whose equalized.json exists; nothing when none does."""
    equalized, measures = {}, {}
    for arch in ARCHS:
        try:
            equalized[arch] = read_equalized(results_dir, arch)[0]
        except FileNotFoundError:
            continue
        try:
            measures[arch] = read_measures(results_dir, arch)[0]["measures"]
        except FileNotFoundError:  # the figure then shows the pools at L* alone
            pass
    if not equalized:
        return []
    sns.set_theme(style="whitegrid")
    out_dir.mkdir(parents=True, exist_ok=True)
    text = "\n\n".join(tex(paragraph(a, s)) for a, s in equalized.items())
    note = provenance_note(results_dir, list(equalized)).replace("_", "\\_")
    (out_dir / "equalized.tex").write_text("% Generated by sharplib.paper.equalized_report from results/*/equalized.json: do not edit.\n"
                                           f"\\newcommand{{\\EqualizedTable}}{{{table_tex(equalized)}}}\n"
                                           f"\\newcommand{{\\EqualizedText}}{{{text}}}\n\\newcommand{{\\EqualizedProvenance}}{{{note}}}\n"
                                           f"\\newcommand{{\\EqualizedSettings}}{{{tex(settings(equalized))}}}\n"
                                           f"\\newcommand{{\\EqualizedConclusion}}{{{tex(conclusion(equalized))}}}\n")
    return [out_dir / "equalized.tex", *figure(equalized, measures, out_dir)]


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        raise SystemExit("usage: python -m sharplib.paper.equalized_report RESULTS_DIR GENERATED_DIR")
    for path in build(Path(args[0]), Path(args[1])):
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
