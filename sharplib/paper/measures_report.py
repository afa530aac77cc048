"""The paper's "Beyond the report" section, built from results/<arch>/measures.json alone.

    python -m sharplib.paper.measures_report RESULTS_DIR GENERATED_DIR

writes measures.tex (a table: measures × architectures, τ on the seed-only pool, τ and Ψ on the varied
pool, with their 95 % CIs, and a paragraph whose sentences follow the numbers) and measures.pdf/.png
(a heatmap of τ, Ψ and each ψ_i). It is kept apart from report.py, which the study notebook imports:
this section can change without touching the study's inputs.
"""
from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Any, Mapping

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from ..core.archs import ARCHS
from ..core.conditional import partial_kendall
from ..core.subpools import kendall_where_defined
from ..panel.measures import MEASURES
from ..experiments.measures_study import read_measures
from ..experiments.profiles import profile_default
from ..experiments.protocol import spec
from .progress_report import excludes, where_computed

LABELS = {
    "sharpness_adaptive": "adaptive worst-case sharpness", "sharpness_standard": "standard worst-case sharpness",
    "sharpness_average": "adaptive average-case sharpness", "hessian_top_eigenvalue": "Hessian top eigenvalue",
    "hessian_trace": "Hessian trace", "pac_bayes_mag_flatness": "PAC-Bayes magnitude-aware flatness",
    "fisher_rao_norm": "Fisher–Rao norm", "weight_norm": "weight norm", "distance_from_init": "distance from init",
    "train_loss": "training loss (control)", "epochs": "epochs (control)",
}


def overview(summary: Mapping[str, Mapping[str, Any]]) -> pd.DataFrame:
    """One row per measure: τ on each pool, Ψ and each ψ_i (NaN where undefined)."""
    rows = {}
    for measure, entry in summary.items():
        g = entry["granulated"]
        rows[LABELS.get(measure, measure)] = {
            "τ seed-only": entry["tau_seed"]["tau"],
            "τ varied": entry["tau_varied"]["tau"],
            "Ψ": g["psi"],
            "ψ learning rate": g["psi_i"].get("lr"),
            "ψ batch size": g["psi_i"].get("batch_size"),
        }
    return pd.DataFrame.from_dict(rows, orient="index").astype(float)


def heatmap(ax: plt.Axes, table: pd.DataFrame, title: str) -> None:
    sns.heatmap(table, ax=ax, annot=True, fmt=".2f", vmin=-1, vmax=1, cmap="vlag", cbar=False, annot_kws={"size": 7})
    ax.set(title=title)
    ax.tick_params(labelsize=7)


def _interval(value: float, low: float, high: float) -> str:
    if not all(math.isfinite(x) for x in (value, low, high)):
        return "---"
    return f"${value:.2f}$ {{\\scriptsize $[{low:.2f}, {high:.2f}]$}}"


def _excludes_zero(low: float, high: float) -> bool:
    return math.isfinite(low) and math.isfinite(high) and (low > 0 or high < 0)


def table_tex(summaries: Mapping[str, Mapping[str, Any]]) -> str:
    """Rows: measures; per architecture two columns: τ on the seed-only pool and Ψ on the varied pool, with CIs."""
    archs = [a for a in ARCHS if a in summaries]
    header = " & ".join(f"\\multicolumn{{2}}{{c}}{{{spec(a).model_name}}}" for a in archs)
    lines = [f"\\begin{{tabular}}{{l{'cc' * len(archs)}}}", "\\hline", f" & {header} \\\\",
             " & " + " & ".join(["$\\tau$ seed-only & $\\Psi$ varied"] * len(archs)) + " \\\\", "\\hline"]
    for measure in MEASURES:
        cells = []
        for a in archs:
            entry = summaries[a][measure]
            t, g = entry["tau_seed"], entry["granulated"]
            cells += [_interval(t["tau"], t["ci_low"], t["ci_high"]), _interval(g["psi"], g["ci_low"], g["ci_high"])]
        lines.append(f"{LABELS[measure]} & " + " & ".join(cells) + " \\\\")
    return "\n".join([*lines, "\\hline", "\\end{tabular}"]) + "\n"


CONTROLS = ("train_loss", "epochs")


def paragraph(arch: str, summary: Mapping[str, Mapping[str, Any]]) -> str:
    """What the numbers say for one architecture, in sentences chosen by the numbers (controls are not ranked)."""
    name = spec(arch).model_name
    measures = {m: e for m, e in summary.items() if m not in CONTROLS}
    seed_strong = [LABELS[m] for m, e in measures.items() if _excludes_zero(e["tau_seed"]["ci_low"], e["tau_seed"]["ci_high"])]
    parts = [f"For {name}, on the seed-only pool "]
    parts.append(
        f"the confidence interval of τ excludes zero for: {', '.join(seed_strong)}."
        if seed_strong
        else "no measure's τ interval excludes zero."
    )
    psi = {m: e["granulated"] for m, e in measures.items() if math.isfinite(e["granulated"]["psi"])}
    if psi:
        best = max(psi, key=lambda m: abs(psi[m]["psi"]))
        g = psi[best]
        parts.append(
            f" On the varied pool the largest |Ψ| is {LABELS[best]}'s, "
            f"Ψ = {g['psi']:.2f} (95 % CI [{g['ci_low']:.2f}, {g['ci_high']:.2f}])."
        )
    # ψ far apart across the two axes: the measure follows one hyperparameter rather than test loss as such
    lopsided = [
        f"{LABELS[m]} (ψ = {e['granulated']['psi_i']['lr']:.2f} across learning rates, "
        f"{e['granulated']['psi_i']['batch_size']:.2f} across batch sizes)"
        for m, e in measures.items()
        if abs(e["granulated"]["psi_i"]["lr"] - e["granulated"]["psi_i"]["batch_size"]) >= 0.5
    ]
    if lopsided:
        parts.append(f" Its rank agreement with test loss depends on which hyperparameter varies for: {'; '.join(lopsided)}.")
    return "".join(parts)


POOL_NAMES = {"seed": "seed-only pool", "varied": "varied pool"}


def given_training_loss(models: pd.DataFrame, n_resamples: int, seed: int = 0) -> pd.DataFrame:
    """Per pool of measures.csv and flatness measure x: τ(x, test loss) and Kendall's partial τ given the training loss z,
    each with its 95 % bootstrap interval, and the partial τ's null value (what a measure that knows nothing beyond z gets,
    `conditional.partial_kendall`). `beyond`: the partial τ's interval excludes its null value."""
    rows = []
    for pool in POOL_NAMES:
        part = models[models["pool"] == pool]
        for measure in (m for m in MEASURES if m not in CONTROLS):
            values = part[[measure, "test_loss", "train_loss"]].to_numpy(dtype=float)
            x, y, z = values[np.isfinite(values).all(axis=1)].T
            tau = kendall_where_defined(x, y, n_resamples=n_resamples, seed=seed)  # NaNs for a quick profile's tiny pools
            partial = partial_kendall(x, y, z, n_resamples=n_resamples, seed=seed)
            beyond = excludes(partial.ci_low, partial.ci_high, partial.null_tau)
            rows.append({"pool": pool, "measure": measure, "n": len(x),
                         "tau": tau.tau, "tau_low": tau.ci_low, "tau_high": tau.ci_high,
                         "partial": partial.tau, "partial_low": partial.ci_low, "partial_high": partial.ci_high,
                         "null": partial.null_tau, "beyond": beyond})
    return pd.DataFrame(rows)


def given_training_loss_tex(tables: Mapping[str, pd.DataFrame]) -> str:
    """Rows: an architecture's measures; per pool two columns: τ and the partial τ given the training loss (its null value).
    A star marks a partial τ whose interval excludes its null value."""
    pools = " & ".join(f"\\multicolumn{{2}}{{c}}{{{name}}}" for name in POOL_NAMES.values())
    lines = ["\\begin{tabular}{lcccc}", "\\hline", f" & {pools} \\\\",
             " & " + " & ".join(["$\\tau$ & partial $\\tau$ (null)"] * len(POOL_NAMES)) + " \\\\"]
    for arch, table in tables.items():
        lines += ["\\hline", f"\\multicolumn{{5}}{{l}}{{\\textit{{{spec(arch).model_name}}}}} \\\\"]
        for measure, rows in table.groupby("measure", sort=False):
            cells = []
            for pool in POOL_NAMES:
                r = rows[rows["pool"] == pool].iloc[0]
                partial = _interval(r["partial"], r["partial_low"], r["partial_high"])
                mark = "$^{*}$" if r["beyond"] else ""
                cells += [_interval(r["tau"], r["tau_low"], r["tau_high"]), f"{partial}{mark} {{\\scriptsize ({r['null']:.2f})}}"]
            lines.append(f"{LABELS[measure]} & " + " & ".join(cells) + " \\\\")
    return "\n".join([*lines, "\\hline", "\\end{tabular}"]) + "\n"


def given_training_loss_sentence(arch: str, table: pd.DataFrame) -> str:
    """Per pool, which measures keep a partial τ away from its null value once the training loss is held fixed."""
    parts = []
    for pool, name in POOL_NAMES.items():
        rows = table[table["pool"] == pool]
        beyond = [LABELS[m] for m in rows.loc[rows["beyond"], "measure"]]
        parts.append(f"on the {name} {len(beyond)} of {len(rows)} measures" + (f" ({', '.join(beyond)})" if beyond else ""))
    return (f"For {spec(arch).model_name}, with the training loss held fixed, the partial τ's interval excludes its null value "
            f"{parts[0]}, and {parts[1]}.")


def tex(text: str) -> str:
    """A paragraph for LaTeX: Greek letters in math mode, % escaped."""
    for plain, math_mode in (("|Ψ|", "$|\\Psi|$"), ("Ψ", "$\\Psi$"), ("ψ", "$\\psi$"), ("τ", "$\\tau$")):
        text = text.replace(plain, math_mode)
    return text.replace("%", "\\,\\%")


def figure(summaries: Mapping[str, Mapping[str, Any]], pdf: Path, png: Path) -> None:
    archs = [a for a in ARCHS if a in summaries]
    fig, axes = plt.subplots(1, len(archs), figsize=(5.2 * len(archs), 4.2), sharey=True, squeeze=False)
    for ax, arch in zip(axes[0], archs):
        heatmap(ax, overview(summaries[arch]), spec(arch).model_name)
    fig.tight_layout()
    fig.savefig(pdf)
    fig.savefig(png, dpi=120)
    plt.close(fig)


def provenance_note(results_dir: Path, archs: list[str]) -> str:
    """Where the panel was computed (its locks) and which architectures it still lacks, in plain words."""
    note = where_computed(results_dir, "measures", archs, "pools")
    note += (" The study's seeds were retrained there, so where training draws random numbers on the device (the GAT's"
             " dropout) the seed-only pool is a pool of its own, not the study's.")
    missing = [spec(a).model_name for a in ARCHS if a not in archs]
    if missing:
        note += (f" {' and '.join(missing)}: no panel yet at this profile (about two hours on two CPU cores; it waits for a"
                 f" GPU run, or `make measures-{'`, `make measures-'.join(a for a in ARCHS if a not in archs)}`).")
    return note


def build(results_dir: Path, out_dir: Path) -> list[Path]:
    """measures.tex and the figure from every architecture whose measures.json exists; nothing when none does."""
    summaries, given = {}, {}
    for arch in ARCHS:
        try:
            record, models = read_measures(results_dir, arch)
        except FileNotFoundError:
            continue
        summaries[arch] = record["measures"]
        # the interval's resamples as the step drew them for its own τ
        n_resamples = record["params"]["n_resamples"] or profile_default(record["profile"], "measures", arch, "n_resamples")
        given[arch] = given_training_loss(models, n_resamples)
    if not summaries:
        return []
    out_dir.mkdir(parents=True, exist_ok=True)
    text = "\n\n".join(tex(paragraph(a, s)) for a, s in summaries.items())
    given_text = " ".join(tex(given_training_loss_sentence(a, t)) for a, t in given.items())
    note = provenance_note(results_dir, list(summaries)).replace("`", "").replace("_", "\\_")
    (out_dir / "measures.tex").write_text("% Generated by sharplib.paper.measures_report from results/*/measures.json: do not edit.\n"
                                          f"\\newcommand{{\\MeasuresTable}}{{{table_tex(summaries)}}}\n\\newcommand{{\\MeasuresText}}{{{text}}}\n"
                                          f"\\newcommand{{\\MeasuresProvenance}}{{{note}}}\n"
                                          f"\\newcommand{{\\MeasuresGivenTable}}{{{given_training_loss_tex(given)}}}\n"
                                          f"\\newcommand{{\\MeasuresGivenText}}{{{given_text}}}\n")
    figure(summaries, out_dir / "measures.pdf", out_dir / "measures.png")
    return [out_dir / name for name in ("measures.tex", "measures.pdf", "measures.png")]


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        raise SystemExit("usage: python -m sharplib.paper.measures_report RESULTS_DIR GENERATED_DIR")
    for path in build(Path(args[0]), Path(args[1])):
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
