"""The paper's "Sharpness and training progress" section, built from results/<arch>/progress.json alone.

    python -m sharplib.paper.progress_report RESULTS_DIR GENERATED_DIR

writes progress.tex (macros: a paragraph per architecture whose sentences follow the numbers, and where
the pools were computed), progress_tau.pdf/.png (τ with its interval on the protocol's and the equalized
pool, per target and architecture, with the τ given training loss) and progress_trajectory.pdf/.png (τ
along training, the protocol's stopping epochs marked). Rendering only: it stays out of every step's hash.
"""
from __future__ import annotations

import math
import re
import sys
from pathlib import Path
from typing import Any, Mapping

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns

from ..core.archs import ARCHS
from ..pipeline.lockfile import computed_where
from ..experiments.progress_study import read_progress
from ..experiments.protocol import spec

TARGET_LABELS = {"test_loss": "test loss", "test_error": "test error", "generalization_gap": "generalization gap"}
KIND_LABELS = {"tau": "τ", "partial": "partial τ | train loss", "stratified": "stratified τ | train loss"}
POOL_LABELS = {"protocol": "protocol's pool", "equalized": "equalized pool (L*)"}


def overview(summaries: Mapping[str, Mapping[str, Any]]) -> pd.DataFrame:
    """One row per (architecture, pool, target, kind of τ): τ, its interval, and the partial τ's null value (else NaN)."""
    rows = []
    for arch, summary in summaries.items():
        for pool, entry in summary["pools"].items():
            for target, taus in entry["taus"].items():
                for kind in KIND_LABELS:
                    r = taus[kind]
                    rows.append({"arch": arch, "pool": pool, "target": target, "kind": kind, "tau": r["tau"], "ci_low": r["ci_low"],
                                 "ci_high": r["ci_high"], "null": r.get("null_tau", 0.0 if kind != "partial" else float("nan"))})
    return pd.DataFrame(rows)


def interval_plot(ax: plt.Axes, summaries: Mapping[str, Mapping[str, Any]], arch: str) -> None:
    """τ (dot) and its 95 % interval (bar) per target and kind, protocol vs equalized pool; a partial τ's null value as a cross."""
    table = overview({arch: summaries[arch]}).dropna(subset=["tau"])
    table["where"] = [f"{TARGET_LABELS[t]}\n{KIND_LABELS[k]}" for t, k in zip(table["target"], table["kind"])]
    order = list(dict.fromkeys(table["where"]))
    palette = dict(zip(POOL_LABELS, sns.color_palette("deep", 2)))
    for i, pool in enumerate(POOL_LABELS):
        part = table[table["pool"] == pool]
        x = [order.index(w) + (i - 0.5) * 0.3 for w in part["where"]]
        ax.errorbar(x, part["tau"], yerr=[part["tau"] - part["ci_low"], part["ci_high"] - part["tau"]], fmt="o", color=palette[pool],
                    label=POOL_LABELS[pool], capsize=2, markersize=4)
        nulls = part[part["kind"] == "partial"]
        ax.scatter([order.index(w) + (i - 0.5) * 0.3 for w in nulls["where"]], nulls["null"], marker="x", color="black", s=18,
                   label="null value of the partial τ" if i == 0 else None, zorder=3)
    ax.axhline(0, color="grey", linewidth=0.8)
    ax.set_xticks(range(len(order)), order, rotation=60, ha="right", fontsize=7)
    ax.set(ylim=(-1, 1), ylabel="Kendall τ with the target", title=spec(arch).model_name)
    ax.legend(fontsize=7, loc="best")


def trajectory_plot(ax: plt.Axes, summary: Mapping[str, Any], arch: str) -> None:
    """τ, partial τ (with its null value) and stratified τ against the epoch, intervals shaded; the protocol's stopping epochs in grey."""
    table = pd.DataFrame(summary["trajectory"])
    stops = {int(e): c for e, c in summary["stopping_epochs"].items()}
    for i, (epoch, count) in enumerate(sorted(stops.items())):  # darker: more of the protocol's models stopped there
        ax.axvspan(epoch - 0.4, epoch + 0.4, color="grey", alpha=0.1 + 0.5 * count / max(stops.values()), linewidth=0,
                   label="the protocol's stopping epochs" if i == 0 else None)
    colors = sns.color_palette("deep", 3)
    for (column, low, high, label), color in zip(
        (
            ("tau", "tau_ci_low", "tau_ci_high", "τ"),
            ("partial_tau", "partial_ci_low", "partial_ci_high", "partial τ | train loss"),
            ("stratified_tau", "stratified_ci_low", "stratified_ci_high", "stratified τ | train loss"),
        ),
        colors,
    ):
        sns.lineplot(x=table["epoch"], y=table[column], ax=ax, marker="o", color=color, label=label)
        ax.fill_between(table["epoch"], table[low], table[high], color=color, alpha=0.15)
    sns.lineplot(x=table["epoch"], y=table["partial_null_tau"], ax=ax, color=colors[1], linestyle="--", label="null value of the partial τ")
    ax.axhline(0, color="grey", linewidth=0.8)
    ax.set(ylim=(-1, 1), xlabel="epoch", ylabel="Kendall τ with test loss",
           title=spec(arch).model_name)
    ax.legend(fontsize=7, loc="best")


def _finite(*values: Any) -> bool:
    return all(isinstance(v, (int, float)) and math.isfinite(v) for v in values)


def _ci(r: Mapping[str, Any]) -> str:
    if not _finite(r["tau"], r["ci_low"], r["ci_high"]):
        return "undefined" + (f" ({r['reason']})" if r.get("reason") else "")
    return f"{r['tau']:+.2f} (95 % CI [{r['ci_low']:+.2f}, {r['ci_high']:+.2f}])"


def excludes(low: float, high: float, value: float) -> bool:
    """Whether the interval [low, high] excludes `value` (a partial τ's null value, or 0); False where any is undefined."""
    return _finite(low, high, value) and not (low <= value <= high)


def beyond_progress(taus: Mapping[str, Any]) -> str:
    """'yes', 'no' or 'mixed': whether τ given the training loss is away from what training progress alone gives.

    The partial τ counts when its interval excludes its null value, the stratified τ when its interval excludes 0."""
    p, s = taus["partial"], taus["stratified"]
    partial = excludes(p["ci_low"], p["ci_high"], p["null_tau"])
    strata = excludes(s["ci_low"], s["ci_high"], 0.0)
    return "yes" if partial and strata else "no" if not partial and not strata else "mixed"


READINGS = {
    "yes": "both readings leave sharpness away from what the training loss alone explains",
    "no": "the partial τ is within reach of its null value and the stratified τ of zero",
    "mixed": "the two readings disagree (one interval excludes its reference, the other does not)",
}
CONCLUSIONS = {
    "yes": "On {pools}, then, adaptive sharpness ranks {name}'s test loss beyond training progress.",
    "no": "On {pools}, then, adaptive sharpness adds nothing measurable to training progress for {name}.",
    "mixed": "So whether adaptive sharpness ranks {name}'s test loss beyond training progress is not settled: {why}.",
}


def _given(taus: Mapping[str, Any]) -> str:
    """The partial τ against its null value and the stratified τ, and how they read (beyond_progress)."""
    p, s = taus["partial"], taus["stratified"]
    if not _finite(p["tau"]):
        return ""
    return (f" Given the training loss, the partial τ is {_ci(p)}, against a null value of {p['null_tau']:+.2f} for a measure that knows "
            f"nothing beyond it; within {len(s['stratum_size'])} strata of training loss, τ = {_ci(s)}: {READINGS[beyond_progress(taus)]}.")


def _conclusion(name: str, found: Mapping[str, str]) -> str:
    """One sentence over the pools' verdicts (`verdicts`): all agree (yes or no), or which pool says what."""
    values = set(found.values())
    if len(values) == 1 and values != {"mixed"}:
        pools = "both pools" if len(found) == 2 else "the protocol's pool"
        return " " + CONCLUSIONS[values.pop()].format(pools=pools, name=name)
    why = "; ".join(f"the {POOL_LABELS[pool]} says {'beyond' if v == 'yes' else 'nothing beyond' if v == 'no' else 'neither'}"
                    for pool, v in found.items())
    return " " + CONCLUSIONS["mixed"].format(name=name, why=why)


def verdicts(summary: Mapping[str, Any]) -> dict[str, str]:
    """Per pool whose partial τ is defined (the protocol's always): `beyond_progress` on test loss."""
    found = {"protocol": beyond_progress(summary["pools"]["protocol"]["taus"]["test_loss"])}
    equalized = summary["pools"].get("equalized")
    if equalized is not None and _finite(equalized["taus"]["test_loss"]["partial"]["tau"]):
        found["equalized"] = beyond_progress(equalized["taus"]["test_loss"])
    return found


def conclusion(summaries: Mapping[str, Mapping[str, Any]]) -> str:
    """One sentence for the paper's conclusion: per architecture, whether sharpness ranks test loss beyond training progress."""
    clauses: dict[str, list[str]] = {}  # what is said -> the architectures it is said of, in order
    for arch, summary in summaries.items():
        found = verdicts(summary)
        yes = [POOL_LABELS[pool] for pool, v in found.items() if v == "yes"]
        if set(found.values()) == {"no"}:
            clause = "adds nothing measurable to the training loss"
        elif len(yes) == len(found):
            clause = f"ranks test loss beyond the training loss on {'both pools' if len(found) == 2 else 'the ' + yes[0]}"
        elif yes:
            clause = f"ranks test loss beyond the training loss on the {' and the '.join(yes)} only"
        else:
            clause = "gives readings of τ given the training loss that disagree"
        clauses.setdefault(clause, []).append(spec(arch).model_name)
    said = [f"{clause} for {' and '.join(names)}" for clause, names in clauses.items()]
    listed = said[0] if len(said) == 1 else ", ".join(said[:-1]) + ", and " + said[-1]
    return f"Held at equal training progress, adaptive sharpness {listed}."


def paragraph(arch: str, summary: Mapping[str, Any]) -> str:
    """Per architecture, in sentences chosen by the numbers: τ on each pool, τ given the training loss, and the verdict."""
    name, pools = spec(arch).model_name, summary["pools"]
    proto = pools["protocol"]["taus"]["test_loss"]
    parts = [f"For {name}, on the protocol's pool adaptive sharpness has τ = {_ci(proto['tau'])} with test loss, and the training loss "
             f"alone τ = {_ci(proto['tau_target_train_loss'])}.", _given(proto)]
    if "equalized" in pools:
        eq = pools["equalized"]
        missed = eq["n_missed_target"]
        who = (
            f" ({missed} of {eq['n_models']} missed L* and are left out: seeds {', '.join(map(str, eq['missed_target_seeds']))})"
            if missed
            else ""
        )
        spread = ""
        if eq["train_loss"] and pools["protocol"]["train_loss"]:
            a, b = eq["train_loss"], pools["protocol"]["train_loss"]
            spread = f" (training loss {a['min']:.3f} to {a['max']:.3f}, against {b['min']:.3f} to {b['max']:.3f} on the protocol's pool)"
        taus = eq["taus"]["test_loss"]
        parts += [f" Trained to a common epoch loss L* = {summary['target_loss']:g}{who}, the {eq['n_used']} models{spread} give τ = "
                  f"{_ci(taus['tau'])} with test loss.", _given(taus)]
    return "".join(parts) + _conclusion(name, verdicts(summary))


def tex(text: str) -> str:
    """A paragraph for LaTeX: signed numbers, Greek letters and L* in math mode, % escaped."""
    text = re.sub(r"(?<![\w$])([+-])(\d+\.\d+)", r"$\1\2$", text)
    for plain, math_mode in (("τ", "$\\tau$"), ("L*", "$L^*$")):
        text = text.replace(plain, math_mode)
    return re.sub(r" ?%", lambda _: "\\,\\%", text)


def settings(summaries: Mapping[str, Mapping[str, Any]]) -> str:
    """Per architecture, in words: L* and the cap, and the trajectory's pool (models, epochs, restarts), as the runs recorded them."""
    parts = []
    for arch, record in summaries.items():
        restarts = record.get("trajectory_sharpness_config", {}).get("n_restarts", "?")
        epochs = ", ".join(str(e) for e in record.get("trajectory_epochs", []))
        parts.append(f"{spec(arch).model_name}: L* = {record['target_loss']:g} within at most {record.get('max_epochs', '?')} epochs; "
                     f"along training {record.get('trajectory_models', '?')} models after epochs {epochs}, "
                     f"sharpness with {restarts} restarts")
    return "; ".join(parts) + "."


def where_computed(results_dir: Path, step: str, archs: list[str], pools: str) -> str:
    """One sentence per place `step` was computed, from its locks: "The FCNN and GAT <pools> were trained and measured on ..."."""
    return " ".join(f"The {' and '.join(spec(a).model_name for a in group)} {pools} were trained and measured {origin}."
                    for origin, group in computed_where(results_dir, step, archs).items())


def not_run_yet(step: str, archs: list[str]) -> str:
    """The architectures without results for `step`, and the make targets that add them ("" when none is missing)."""
    missing = [a for a in ARCHS if a not in archs]
    if not missing:
        return ""
    commands = ", ".join(f"make {step}-{a}" for a in missing)
    return f" {' and '.join(spec(a).model_name for a in missing)}: not run at this profile yet ({commands})."


def provenance_note(results_dir: Path, archs: list[str]) -> str:
    """Where the pools were computed (the locks), that the study's seeds were retrained, and which architectures are missing."""
    note = where_computed(results_dir, "progress", archs, "equalized and along-training pools")
    note += (" The protocol's pool is the study's, read from its results; the other pools retrain the study's seeds, so where training"
             " draws random numbers on the device (the GAT's dropout) they are pools of their own, not continuations of the study's"
             " models.")
    return note + not_run_yet("progress", archs)


def figures(summaries: Mapping[str, Mapping[str, Any]], out_dir: Path) -> list[Path]:
    archs = [a for a in ARCHS if a in summaries]
    written = []
    for name, width, draw in (("progress_tau", 5.5, lambda ax, a: interval_plot(ax, summaries, a)),
                              ("progress_trajectory", 4.5, lambda ax, a: trajectory_plot(ax, summaries[a], a))):
        fig, axes = plt.subplots(1, len(archs), figsize=(width * len(archs), 4.5), squeeze=False)
        for ax, arch in zip(axes[0], archs):
            draw(ax, arch)
        fig.tight_layout()
        for suffix in ("pdf", "png"):
            fig.savefig(out_dir / f"{name}.{suffix}", dpi=120)
            written.append(out_dir / f"{name}.{suffix}")
        plt.close(fig)
    return written


def build(results_dir: Path, out_dir: Path) -> list[Path]:
    """progress.tex and the figures from every architecture whose progress.json exists; nothing when none does."""
    summaries = {}
    for arch in ARCHS:
        try:
            summaries[arch] = read_progress(results_dir, arch)[0]
        except FileNotFoundError:
            continue
    if not summaries:
        return []
    sns.set_theme(style="whitegrid")
    out_dir.mkdir(parents=True, exist_ok=True)
    text = "\n\n".join(tex(paragraph(a, s)) for a, s in summaries.items())
    note = provenance_note(results_dir, list(summaries)).replace("_", "\\_")
    (out_dir / "progress.tex").write_text("% Generated by sharplib.paper.progress_report from results/*/progress.json: do not edit.\n"
                                          f"\\newcommand{{\\ProgressText}}{{{text}}}\n\\newcommand{{\\ProgressProvenance}}{{{note}}}\n"
                                          f"\\newcommand{{\\ProgressSettings}}{{{tex(settings(summaries))}}}\n"
                                          f"\\newcommand{{\\ProgressConclusion}}{{{tex(conclusion(summaries))}}}\n")
    return [out_dir / "progress.tex", *figures(summaries, out_dir)]


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        raise SystemExit("usage: python -m sharplib.paper.progress_report RESULTS_DIR GENERATED_DIR")
    for path in build(Path(args[0]), Path(args[1])):
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
