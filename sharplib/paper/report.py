"""Figure 1, Table I and the paper's numbers, built from `results/` alone.

    python -m sharplib.paper.report RESULTS_DIR OUT_DIR

writes OUT_DIR/{figure1.pdf, figure1.png, table1.tex, comparison.tex, results.tex}, and, when the
ablation notebook has run for all three architectures (RESULTS_DIR/<arch>/ablation.json),
OUT_DIR/{ablation.tex, rho.pdf, rho.png}. Every number the paper prints is a macro in results.tex
or comes from the ablation's CSVs, and every sentence that states a finding is generated here from
the measured τ, its CI and p, so the text cannot claim more than the data.
"""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any, Mapping

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from ..core.archs import ARCHS
from ..experiments.protocol import REPORT_P, REPORT_TAU, TABLE1, spec
from ..experiments.ablation import read_ablation
from ..experiments.study import read_results
from ..pipeline.lockfile import device_words

MACRO_PREFIX = {"fcnn": "Fcnn", "lenet5": "Lenet", "gat": "Gat"}
N_CLASSES = {"lenet5": 10, "gat": 7}  # FashionMNIST, Cora: a uniform guess has cross-entropy ln C


# ---------------------------------------------------------------- the figure

def scatter_panel(ax: plt.Axes, table: pd.DataFrame, summary: dict[str, Any], title: str) -> None:
    """Sharpness against test loss, one point per model, τ with its CI in the corner."""
    used = table[~table["diverged"]]
    sns.scatterplot(data=used, x="sharpness", y="test_loss", ax=ax, s=28, color="#2a6f97", edgecolor="white", linewidth=0.4)
    low, high = summary["tau_ci"]
    label = f"τ = {summary['tau']:.3f}\n95% CI [{low:.3f}, {high:.3f}]\np = {format_p(summary['p_value'])}, M = {summary['n_used']}"
    ax.text(0.97, 0.97, label, transform=ax.transAxes, ha="right", va="top", fontsize=8,
            bbox=dict(boxstyle="round", facecolor="white", alpha=0.85, edgecolor="0.8"))
    ax.set_title(title, fontsize=10)
    ax.set_xlabel("adaptive sharpness")
    ax.set_ylabel("test loss")
    ax.ticklabel_format(axis="x", style="sci", scilimits=(-3, 3))


def figure1(results: dict[str, tuple[dict, pd.DataFrame]], pdf: Path, png: Path) -> None:
    sns.set_theme(style="whitegrid", context="paper")
    fig, axes = plt.subplots(1, len(results), figsize=(3.4 * len(results), 3.1), constrained_layout=True)
    for ax, (arch, (summary, table)) in zip(axes, results.items()):
        row = TABLE1[arch]
        scatter_panel(ax, table, summary, f"{row.model_name} on {row.dataset_name}")
    fig.savefig(pdf)
    fig.savefig(png, dpi=150)
    plt.close(fig)


# ---------------------------------------------------------------- numbers in words

def format_p(p: float) -> str:
    return f"{p:.1e}" if p < 1e-3 else f"{p:.3f}"


def tex_number(x: float, digits: int = 3) -> str:
    """A number for LaTeX text mode: fixed digits, scientific as a×10^{b} when small or large."""
    if x == 0 or 1e-3 <= abs(x) < 1e4:
        return f"{x:.{digits}f}"
    mantissa, exponent = f"{x:.2e}".split("e")
    return f"\\ensuremath{{{mantissa}\\times 10^{{{int(exponent)}}}}}"


def finding(summary: dict[str, Any], alpha: float = 0.05) -> str:
    """One sentence on the correlation, worded from its sign, its CI and p (never a fixed claim)."""
    tau, (low, high), p = summary["tau"], summary["tau_ci"], summary["p_value"]
    direction = "negative" if tau < 0 else "positive"
    if low > 0 or high < 0:
        strength = "weak" if abs(tau) < 0.2 else "moderate" if abs(tau) < 0.5 else "strong"
        return (f"a {strength} {direction} rank correlation whose confidence interval excludes zero"
                + (f" (p = {format_p(p)})" if p < alpha else f", although p = {format_p(p)} is above {alpha}"))
    return f"no rank correlation distinguishable from zero: the confidence interval contains 0 (p = {format_p(p)})"


# Var(τ) = 2(2M + 5) / (9M(M − 1)) under independence (no ties); |τ| > z_{0.975} sd gives p < 0.05
def critical_tau(n_models: int) -> float:
    """The |τ| that a pool of M models needs for a two-sided p below 0.05 (normal approximation)."""
    return 1.959964 * math.sqrt(2 * (2 * n_models + 5) / (9 * n_models * (n_models - 1)))


def agreement(summary: dict[str, Any], reported: float) -> str:
    """Whether the report's τ lies in our interval."""
    low, high = summary["tau_ci"]
    if low <= reported <= high:
        return "the report's value lies inside our confidence interval"
    side = "below" if reported < low else "above"
    return f"the report's value lies {side} our confidence interval"


# chance gap g = 1 − L̄_train / ln C: how far the mean training cross-entropy fell below a uniform guess's
def learning(arch: str, table: pd.DataFrame, at_chance: float = 0.05) -> str:
    """Whether a classifier pool learned at all, from its mean training loss against ln C."""
    chance = math.log(N_CLASSES[arch])
    loss = float(table.loc[~table["diverged"], "train_loss"].mean())
    gap = 1 - loss / chance
    name = TABLE1[arch].model_name
    if gap < at_chance:
        return (f"the {name} models stayed at chance level: their mean training loss, {loss:.3f}, is within "
                f"{max(100 * gap, 0.1):.1f}\\,\\% of $\\ln {N_CLASSES[arch]} = {chance:.3f}$, the loss of a uniform guess, "
                f"so their $\\tau$ says little about generalization")
    return (f"the {name} models learned: their mean training loss, {loss:.3f}, is {100 * gap:.0f}\\,\\% below "
            f"$\\ln {N_CLASSES[arch]} = {chance:.3f}$, the loss of a uniform guess")


def overall(results: dict[str, tuple[dict, pd.DataFrame]]) -> str:
    """The summary sentence of the abstract and the conclusion, from the three CIs."""
    negative = [a for a, (s, _) in results.items() if s["tau_ci"][1] < 0]
    positive = [a for a, (s, _) in results.items() if s["tau_ci"][0] > 0]
    names = lambda archs: " and ".join(", ".join(TABLE1[a].model_name for a in archs).rsplit(", ", 1))
    if len(negative) == len(results):
        return "adaptive sharpness is negatively rank-correlated with test loss for all three architectures, as the report found"
    if not negative and not positive:
        return (
            "for none of the three architectures is the rank correlation between adaptive sharpness and test loss distinguishable from zero"
        )
    parts = [
        f"{kind} beyond its uncertainty for {names(archs)}" for kind, archs in (("negative", negative), ("positive", positive)) if archs
    ]
    rest = [a for a in results if a not in negative + positive]
    if rest:
        parts.append(f"indistinguishable from zero for {names(rest)}")
    return (
        "the rank correlation between adaptive sharpness and test loss is "
        + ", ".join(parts[:-1])
        + (" and " if len(parts) > 1 else "")
        + parts[-1]
    )


# ---------------------------------------------------------------- the .tex files

def table1_tex(results: dict[str, tuple[dict, pd.DataFrame]]) -> str:
    """Table I's rows, from the configs the runs actually used."""
    lines = []
    for arch, (summary, _) in results.items():
        row, train, sharp = TABLE1[arch], summary["train_config"], summary["sharpness_config"]
        lines.append(f"{row.model_name} & {row.dataset_name} & {train['lr']:g} & {row.loss_name} & {sharp['rho']:g} \\\\")
    return "\n".join(lines) + "\n\\hline\n"  # the closing rule: \hline right after \input fails in a tabular


def comparison_tex(results: dict[str, tuple[dict, pd.DataFrame]]) -> str:
    """Measured τ (CI, p) next to the report's τ (and p where it printed one)."""
    lines = []
    for arch, (summary, _) in results.items():
        low, high = summary["tau_ci"]
        reported_p = REPORT_P[arch]
        lines.append(
            f"{TABLE1[arch].model_name} & {summary['n_used']} & ${summary['tau']:.3f}$ & $[{low:.3f}, {high:.3f}]$ & "
            f"{tex_number(summary['p_value'])} & ${REPORT_TAU[arch]:.3f}$ & {'---' if reported_p is None else f'{reported_p:.3f}'} \\\\"
        )
    return "\n".join(lines) + "\n\\hline\n"


def _tex_text(text: str) -> str:
    """Plain text as TeX: the characters TeX reserves, escaped."""
    return "".join("\\" + ch if ch in "_%&#$" else ch for ch in text)


def _macro(name: str, value: str) -> str:
    return f"\\newcommand{{\\{name}}}{{{value}}}"


STEP_WORDS = {"study": "studies", "ablation": "ablations", "measures": "measures panels", "progress": "progress pools",
              "equalized": "panels at equal progress"}
STEP_WORD = {"study": "study", "ablation": "ablation", "measures": "measures panel", "progress": "progress pool",
             "equalized": "panel at equal progress"}


def _step_names(locks: list[dict]) -> str:
    """"the panels at equal progress and FCNN's ablation": a step whose every architecture is listed is named once, in
    the plural."""
    steps = list(dict.fromkeys(lock["step"] for lock in locks))
    whole = {step for step in steps if {lock["arch"] for lock in locks if lock["step"] == step} == set(TABLE1)}
    named = [f"the {STEP_WORDS[step]}" for step in steps if step in whole]
    named += [f"{TABLE1[lock['arch']].model_name}'s {STEP_WORD[lock['step']]}" for lock in locks if lock["step"] not in whole]
    return " and ".join(", ".join(named).rsplit(", ", 1))


def _accepted_clause(locks: list[dict]) -> str:
    """"; <which steps> accepted unchanged through commit X, <how>", or "" when no lock holds an accept."""
    accepts = [a for lock in locks for a in lock["accepted"]]
    if not accepts:
        return ""
    through = max(accepts, key=lambda a: a["date"])["to_commit"][:7]  # the newest: every lock still holds there
    own = [a.get("settings", {}).get(lock["step"], {}) for lock in locks for a in lock["accepted"]]
    models = sorted({o.get("n_models", o.get("n_seed_models")) for o in own} - {None})  # the seed pool's size
    capped = {TABLE1[lock["arch"]].model_name: a["settings"]["study"]["max_epochs"] for lock in locks for a in lock["accepted"]
              if isinstance(a.get("settings", {}).get("study"), dict) and "max_epochs" in a["settings"]["study"]}
    rows = {TABLE1[lock["arch"]].model_name: len(a["settings"]["ablation"]["variants"]) for lock in locks for a in lock["accepted"]
            if isinstance(a.get("settings", {}).get("ablation"), dict) and "variants" in a["settings"]["ablation"]}
    cap = "".join(f", {name} trained for {epochs} epochs" for name, epochs in sorted(capped.items()))
    cap += "".join(f", {name}'s ablation on {n} of its rows" for name, n in sorted(rows.items()))
    quick = {TABLE1[lock["arch"]].model_name for lock in locks for a in lock["accepted"]
             if isinstance(a.get("settings", {}).get("measures"), dict) and a["settings"]["measures"].get("profile") == "quick"}
    cap += "".join(f", {name}'s measures panel on the quick profile's grid" for name in sorted(quick))
    accepted = [lock for lock in locks if lock["accepted"]]
    left = [lock for lock in locks if not lock["accepted"]]
    which = ("all of them" if not left else f"all but {_step_names(left)}" if len(left) < len(accepted) else _step_names(accepted))
    # "the code otherwise the same" holds only where no accept needed evidence (a change beyond the moves)
    moved = "modules moved" + ("" if models else ", the code otherwise the same")
    how = [moved] if any("moved" in a for a in accepts) else []
    if models:
        checked = [lock for lock in accepted if any("settings" in a for a in lock["accepted"])]
        names = "" if len(checked) == len(accepted) else _step_names(checked) + " also "
        how.append(f"{names}checked old against new code on the CPU with {' or '.join(map(str, models))} models per seed pool{cap}")
    return f"; {which} accepted unchanged through commit {through}" + "".join(f", {h}" for h in how)


def _step_words(lock: dict, locks: list[dict]) -> str:
    """"ablations", or "LeNet-5's progress pool" where the step's other architectures were computed elsewhere."""
    same = [other for other in locks if other["step"] == lock["step"]]
    here = [other for other in same if other["computed"]["device"] == lock["computed"]["device"]]
    if len(here) == len(same):
        return STEP_WORDS[lock["step"]]
    names = " and ".join(f"{TABLE1[other['arch']].model_name}'s" for other in here)
    return f"{names} {STEP_WORDS[lock['step']] if len(here) > 1 else STEP_WORD[lock['step']]}"


def provenance_sentence(results_dir: str | Path) -> str:
    """What computed the numbers, in one line read from the steps' locks: commits, devices, and the accepts
    that carried them to later code unchanged (the paper's byline and the README both print it)."""
    locks = [json.loads(path.read_text()) for arch in ARCHS for step in STEP_WORDS
             if (path := Path(results_dir) / arch / f"{step}.lock").exists()]
    devices: dict[str, dict[str, list[str]]] = {}  # device -> step's words -> the commits that computed them
    for lock in locks:
        c = lock["computed"]
        commits = devices.setdefault(device_words(c["device"]), {}).setdefault(_step_words(lock, locks), [])
        commit = f"{c['commit'][:7]}{'+dirty' if c.get('dirty') else ''}"
        if commit not in commits:
            commits.append(commit)
    parts = []
    for device, steps in devices.items():
        every = {commit for commits in steps.values() for commit in commits}
        if len(every) == 1:
            parts.append(f"{' and '.join(steps)} computed at commit {every.pop()} on {device}")
        else:
            listed = [f"{words} ({'commits' if len(c) > 1 else 'commit'} {', '.join(c)})" for words, c in steps.items()]
            parts.append(f"{' and '.join(listed)} computed on {device}")
    sentence = "; ".join(parts) + _accepted_clause(locks)
    return sentence[:1].upper() + sentence[1:] + "." if sentence else "no locked results."


def results_tex(results: dict[str, tuple[dict, pd.DataFrame]], results_dir: str | Path) -> str:
    """One macro per number or generated sentence the paper uses."""
    first = next(iter(results.values()))[0]
    profile = first["profile"]
    macros = [
        _macro("Profile", profile),
        _macro("ProfileMark", "" if profile == "full" else "quick profile: not the study's numbers"),
        _macro("Provenance", _tex_text(provenance_sentence(results_dir))),
        _macro("OverallFinding", overall(results)),
        _macro("CriticalM", str(first["n_used"])), _macro("TauCritical", f"{critical_tau(first['n_used']):.2f}"),
        _macro("CIHalfWidth", f"{sum(s['tau_ci'][1] - s['tau_ci'][0] for s, _ in results.values()) / (2 * len(results)):.2f}"),
    ]
    for arch, (summary, table) in results.items():
        m = MACRO_PREFIX[arch]
        low, high = summary["tau_ci"]
        used = table[~table["diverged"]]
        sharp, train = summary["sharpness_config"], summary["train_config"]
        macros += [
            _macro(f"{m}Tau", f"{summary['tau']:.3f}"),
            _macro(f"{m}TauLow", f"{low:.3f}"),
            _macro(f"{m}TauHigh", f"{high:.3f}"),
            _macro(f"{m}P", tex_number(summary["p_value"])),
            _macro(f"{m}ReportTau", f"{REPORT_TAU[arch]:.3f}"),
            _macro(f"{m}Models", str(summary["n_models"])),
            _macro(f"{m}Used", str(summary["n_used"])),
            _macro(f"{m}Diverged", str(summary["n_diverged"])),
            _macro(f"{m}Restarts", str(sharp["n_restarts"])),
            _macro(f"{m}Rho", f"{sharp['rho']:g}"),
            _macro(f"{m}LR", f"{train['lr']:g}"),
            _macro(
                f"{m}Epochs",
                f"{used['epochs'].min()}--{used['epochs'].max()}" if used["epochs"].nunique() > 1 else str(used["epochs"].iloc[0]),
            ),
            _macro(f"{m}TestLossLow", f"{used['test_loss'].min():.3f}"),
            _macro(f"{m}TestLossHigh", f"{used['test_loss'].max():.3f}"),
            _macro(f"{m}SharpLow", tex_number(used["sharpness"].min())),
            _macro(f"{m}SharpHigh", tex_number(used["sharpness"].max())),
            _macro(f"{m}FracBelow", f"{100 * summary['frac_below_mean']:.1f}"),
            _macro(f"{m}Finding", finding(summary)),
            _macro(f"{m}Agreement", agreement(summary, REPORT_TAU[arch])),
            _macro(f"{m}Minutes", f"{sum(summary['seconds'].values()) / 60:.1f}"),
        ]
        if arch in N_CLASSES:
            macros.append(_macro(f"{m}Learning", learning(arch, table)))
        if used["test_accuracy"].notna().any():
            macros.append(_macro(f"{m}AccLow", f"{100 * used['test_accuracy'].min():.1f}"))
            macros.append(_macro(f"{m}AccHigh", f"{100 * used['test_accuracy'].max():.1f}"))
    return "% Generated by sharplib.paper.report from results/: do not edit.\n" + "\n".join(macros) + "\n"


def load_all(results_dir: Path) -> dict[str, tuple[dict, pd.DataFrame]]:
    loaded = {arch: read_results(results_dir, arch) for arch in ARCHS}
    profiles = {summary["profile"] for summary, _ in loaded.values()}
    if len(profiles) > 1:
        raise ValueError(f"{results_dir}: the three studies ran with different profiles {sorted(profiles)}; rerun them with one")
    return loaded


def build(results_dir: Path, out_dir: Path) -> list[Path]:
    """Write every generated file of the paper; returns their paths."""
    results = load_all(results_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    figure1(results, out_dir / "figure1.pdf", out_dir / "figure1.png")
    files = {"table1.tex": table1_tex(results), "comparison.tex": comparison_tex(results), "results.tex": results_tex(results, results_dir)}
    for name, text in files.items():
        (out_dir / name).write_text(text)
    written = [out_dir / n for n in ("figure1.pdf", "figure1.png", *files)]
    if all((Path(results_dir) / arch / "ablation.json").exists() for arch in ARCHS):
        return written + build_ablation(results_dir, out_dir, profile=next(iter(results.values()))[0]["profile"])
    for name in ABLATION_OUTPUTS:  # a stale ablation from another run must not slip into this paper
        (out_dir / name).unlink(missing_ok=True)
    return written


# ---------------------------------------------------------------- the ablation section

def _label(row: Any) -> str:
    if row.variant == "report":
        return "report's method"
    if row.variant == "reference code":
        return "reference code (all)"
    return "+ " + row.label


def _report_row(df: pd.DataFrame) -> pd.Series:
    found = df[df["variant"] == "report"]
    if found.empty:
        raise ValueError("the ablation frame has no 'report' row to compare the variants with")
    return found.iloc[0]


def _outside(tau: float, report: pd.Series) -> bool:
    return math.isfinite(tau) and not (report["ci_low"] <= tau <= report["ci_high"])


def _num(value: float) -> str:
    return "--" if not math.isfinite(value) else f"${value:.2f}$"


def _p(value: float) -> str:
    if not math.isfinite(value):
        return "--"
    return "$<0.001$" if value < 0.001 else f"{value:.3f}"


def ablation_table_tex(df_by_arch: Mapping[str, pd.DataFrame]) -> str:
    """A `tabular` (plain \\hline rules, no package needed) with one block per arch: τ, its 95 % CI,
    p and the number of models per variant. $^{*}$ marks a τ outside the report-method CI."""
    lines = [r"\begin{tabular}{llrcrr}", r"\hline", r"Model & Variant & $\tau$ & 95\,\% CI & $p$ & $M$ \\", r"\hline"]
    for arch, df in df_by_arch.items():
        report = _report_row(df)
        for i, row in enumerate(df.itertuples(index=False)):
            mark = "$^{*}$" if row.variant != "report" and _outside(row.tau, report) else ""
            ci = "--" if not math.isfinite(row.ci_low) else f"$[{row.ci_low:.2f}, {row.ci_high:.2f}]$"
            model = spec(arch).model_name if i == 0 else ""
            lines.append(f"{model} & {_label(row)} & {_num(row.tau)}{mark} & {ci} & {_p(row.p_value)} & {row.n_models} \\\\")
        lines.append(r"\hline")
    lines.append(r"\end{tabular}")
    return "\n".join(lines) + "\n"


def _direction(tau: float, reference: float) -> str:
    return "raises" if tau > reference else "lowers"


def ablation_paragraph(df_by_arch: Mapping[str, pd.DataFrame]) -> str:
    """One sentence group per arch: which switches move τ outside the report-method 95 % CI, and
    where all of the notebook's choices together put it. Worded from the numbers only."""
    parts = []
    for arch, df in df_by_arch.items():
        name, report = spec(arch).model_name, _report_row(df)
        text = (f"For {name}, the report's method gives $\\tau = {report['tau']:.2f}$ "
                f"(95\\,\\% CI $[{report['ci_low']:.2f}, {report['ci_high']:.2f}]$, {int(report['n_models'])} models).")
        singles = df[~df["variant"].isin(["report", "reference code"])]
        moved = [row for row in singles.itertuples(index=False) if _outside(row.tau, report)]
        undefined = [row.label for row in singles.itertuples(index=False) if not math.isfinite(row.tau)]
        if moved:
            said = [f"{r.label} alone {_direction(r.tau, report['tau'])} it to ${r.tau:.2f}$" for r in moved]
            text += " Outside that interval: " + "; ".join(said) + "."
            rest = len(singles) - len(moved) - len(undefined)
            if rest:
                text += (
                    " The other switch alone leaves $\\tau$ inside it."
                    if rest == 1
                    else f" The other {rest} switches alone leave $\\tau$ inside it."
                )
        elif len(singles):
            text += " No single switch moves $\\tau$ outside that interval."
        if undefined:
            text += f" $\\tau$ is undefined for {', '.join(undefined)} (fewer than 3 models, or a constant sharpness)."
        together = df[df["variant"] == "reference code"]
        if not together.empty and math.isfinite(together.iloc[0]["tau"]):
            tau = together.iloc[0]["tau"]
            where = f"outside the interval ({_direction(tau, report['tau'])} it)" if _outside(tau, report) else "inside the interval"
            text += f" With all of the notebook's choices together, $\\tau = {tau:.2f}$, {where}."
        parts.append(text)
    return " ".join(parts)


KINDS = ("adaptive", "standard")


def rho_panel(ax: Any, df: pd.DataFrame, arch: str, rho: float | None = None) -> None:
    """One τ(ρ) panel (a `tau_by_rho` frame): adaptive vs standard, the bootstrap CI as a band, the
    report's ρ (or `rho`) as a dotted line."""
    palette = dict(zip(KINDS, sns.color_palette("colorblind", 2)))
    frame = df.assign(sharpness=np.where(df["adaptive"], "adaptive", "standard")).sort_values("rho")
    sns.lineplot(frame, x="rho", y="tau", hue="sharpness", hue_order=KINDS, palette=palette, marker="o", ax=ax, errorbar=None)
    for kind, group in frame.groupby("sharpness"):
        ax.fill_between(group["rho"], group["ci_low"], group["ci_high"], color=palette[kind], alpha=0.2, linewidth=0)
    ax.axvline(spec(arch).rho if rho is None else rho, color="0.3", linestyle=":", linewidth=1, label=r"report's $\rho$")
    ax.axhline(0, color="0.5", linewidth=0.6)
    ax.set(xscale="log", xlabel=r"$\rho$", ylabel=r"Kendall $\tau$", title=spec(arch).model_name, ylim=(-1, 1))
    ax.legend(fontsize="x-small", title=None, loc="lower right")


def rho_figure(df_by_arch: Mapping[str, pd.DataFrame], path_pdf: str | Path, path_png: str | Path,
               report_rho: Mapping[str, float] | None = None) -> None:
    """τ(ρ) per arch (one `rho_panel` each), written to both paths. Drawn without pyplot's global state."""
    from matplotlib.figure import Figure

    with sns.axes_style("whitegrid"), sns.plotting_context("paper"):
        fig = Figure(figsize=(2.6 * len(df_by_arch), 2.4), layout="constrained")
        axes = fig.subplots(1, len(df_by_arch), squeeze=False, sharey=True)[0]
        for ax, (arch, df) in zip(axes, df_by_arch.items()):
            rho_panel(ax, df, arch, (report_rho or {}).get(arch))
        for path in (path_pdf, path_png):
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            fig.savefig(path, dpi=200)


def _decimal(x: float) -> str:
    return np.format_float_positional(x, trim="-")  # 1e-05 -> 0.00001: a number LaTeX prints as written


def _span(kind: str, tau: pd.Series) -> str:
    low, high = f"{tau.min():.2f}", f"{tau.max():.2f}"
    return (
        f"{kind} sharpness gives $\\tau = {low}$ at every $\\rho$"
        if low == high
        else f"{kind} sharpness gives $\\tau$ from ${low}$ to ${high}$"
    )


def rho_sentence(df_by_arch: Mapping[str, pd.DataFrame]) -> str:
    """How far τ moves across the ρ grid, per arch and kind of sharpness (from `tau_by_rho` frames)."""
    parts = []
    for arch, df in df_by_arch.items():
        kinds = df["adaptive"].map({True: "adaptive", False: "standard"})
        spans = [_span(kind, group["tau"].dropna()) for kind, group in df.groupby(kinds, sort=True) if group["tau"].notna().any()]
        if spans:
            parts.append(f"For {spec(arch).model_name}, over $\\rho \\in [{_decimal(df['rho'].min())}, {_decimal(df['rho'].max())}]$, "
                         + " and ".join(spans) + f" ({int(df['n_models'].max())} models).")
    return " ".join(parts)



ABLATION_OUTPUTS = ("ablation.tex", "rho.pdf", "rho.png")


def load_ablation(results_dir: Path, profile: str | None = None) -> dict[str, tuple[dict, pd.DataFrame, pd.DataFrame]]:
    """(ablation.json, ablation.csv, rho.csv) per arch, all from one profile (`profile`, if given)."""
    loaded = {arch: read_ablation(results_dir, arch) for arch in ARCHS}
    profiles = {summary["profile"] for summary, _, _ in loaded.values()} | ({profile} if profile else set())
    if len(profiles) > 1:
        raise ValueError(f"{results_dir}: the ablations and studies ran with different profiles {sorted(profiles)}; rerun them with one")
    return loaded


def models_phrase(summaries: dict[str, dict]) -> str:
    """'all 50 FCNN models, the first 4 of the 50 LeNet-5 models and all 50 GAT models', from ablation.json."""
    parts = []
    for arch, s in summaries.items():
        name = TABLE1[arch].model_name
        parts.append(f"all {s['n_models']} {name} models" if s["n_models"] == s["n_models_pool"]
                     else f"the first {s['n_models']} of the {s['n_models_pool']} {name} models")
    return ", ".join(parts[:-1]) + " and " + parts[-1] if len(parts) > 1 else parts[0]


def ablation_tex(loaded: dict[str, tuple[dict, pd.DataFrame, pd.DataFrame]]) -> str:
    """The ablation section: generated text, the table (numbers from ablation.csv) and the τ(ρ) figure (rho.csv)."""
    summaries = {arch: s for arch, (s, _, _) in loaded.items()}
    tables = {arch: t for arch, (_, t, _) in loaded.items()}
    rhos = {arch: r for arch, (_, _, r) in loaded.items()}
    restarts = ", ".join(f"{TABLE1[a].model_name} {s['n_restarts']}" for a, s in summaries.items())
    quick = next(iter(summaries.values()))["profile"] == "quick"
    models = models_phrase(summaries)
    together = all((t["variant"] == "reference code").any() for t in tables.values())
    lines = [
        "% Generated by sharplib.paper.report from results/<arch>/{ablation.csv, rho.csv, ablation.json}: do not edit.",
        r"\section{Where the difference can come from}",
        "The authors' notebooks deviate from the written method in the ways listed in the reproduction notes. "
        r"Table~\ref{tab:ablation} measures $\tau$ again with each deviation switched on alone"
        + (", and with all of an architecture's deviations together (the notebook's own procedure)" if together else "")
        + ". Within an architecture every row uses "
        f"the same models: {models}. A mark $^{{*}}$ flags a $\\tau$ outside the 95\\,\\% interval of the report's method"
        + (" (quick profile: small pools and few restarts, so these rows only check the chain)." if quick else "."),
        "", ablation_paragraph(tables), "",
        r"Figure~\ref{fig:rho} repeats the report-method measurement over a grid of radii, for adaptive and for standard "
        "sharpness on the same models. " + rho_sentence(rhos), "",
        r"\begin{table*}[t]", r"\centering",
        r"\caption{Kendall's $\tau$ between sharpness and test loss with the reference notebooks' deviations switched on. "
        rf"$M$: models in the row ({models}; fewer where a model diverged). "
        rf"Restarts per estimate: {restarts}. $^{{*}}$: outside the 95\,\% CI of the report's method.}}",
        r"\label{tab:ablation}", ablation_table_tex(tables).rstrip(), r"\end{table*}", "",
        r"\begin{figure*}[t]", r"\centering", r"\includegraphics[width=\textwidth]{generated/rho.pdf}",
        r"\caption{Kendall's $\tau$ against the radius $\rho$ (log scale), adaptive and standard worst-case sharpness, "
        rf"with bootstrap 95\,\% intervals; the dotted line is the report's $\rho$. Models: {models}.}}",
        r"\label{fig:rho}", r"\end{figure*}",
    ]
    return "\n".join(lines) + "\n"


def build_ablation(results_dir: Path, out_dir: Path, profile: str | None = None) -> list[Path]:
    """Write ablation.tex, rho.pdf and rho.png from the three ablation runs; returns their paths."""
    loaded = load_ablation(results_dir, profile)
    out_dir.mkdir(parents=True, exist_ok=True)
    report_rho = {arch: s["rho"] for arch, (s, _, _) in loaded.items()}
    rho_figure({arch: r for arch, (_, _, r) in loaded.items()}, out_dir / "rho.pdf", out_dir / "rho.png", report_rho)
    (out_dir / "ablation.tex").write_text(ablation_tex(loaded))
    return [out_dir / n for n in ABLATION_OUTPUTS]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results_dir", type=Path)
    parser.add_argument("out_dir", type=Path)
    args = parser.parse_args(argv)
    # The command line only writes files: Agg here, not at import, so that a notebook importing this module
    # (notebooks/study.py's scatter panel) keeps its inline backend and shows its figures.
    matplotlib.use("Agg")
    for path in build(args.results_dir, args.out_dir):
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
