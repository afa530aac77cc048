"""report.py: generated sentences follow the numbers; the .tex files and figure come from results/."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from sharplib.paper import report
from sharplib.experiments.reference import DEVIATIONS
from sharplib.core.stats import kendall
from sharplib.experiments.study import StudyParams, write_results


def fake_table(n: int, slope: float, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    sharpness = rng.uniform(0.01, 0.1, n)
    return pd.DataFrame({
        "seed": range(n), "epochs": rng.integers(3, 6, n), "train_loss": 0.5, "test_loss": slope * sharpness + rng.normal(0, 0.01, n) + 1,
        "test_accuracy": 0.8, "diverged": False, "trained_by": "sequential", "sharpness": sharpness, "sharpness_std": 0.01,
        "frac_below": 0.0, "train_seconds": 1.0, "sharpness_seconds": 1.0,
    })


def summary(tau: float, low: float, high: float, p: float) -> dict:
    return {"tau": tau, "tau_ci": [low, high], "p_value": p}


def test_finding_follows_sign_and_interval() -> None:
    assert "negative" in report.finding(summary(-0.3, -0.5, -0.1, 0.002)) and "excludes zero" in report.finding(
        summary(-0.3, -0.5, -0.1, 0.002)
    )
    assert "positive" in report.finding(summary(0.6, 0.4, 0.8, 1e-6))
    assert "no rank correlation" in report.finding(summary(-0.1, -0.3, 0.1, 0.3))


def test_agreement_with_the_report() -> None:
    assert "inside" in report.agreement(summary(-0.2, -0.4, 0.0, 0.05), -0.311)
    assert "below" in report.agreement(summary(0.1, -0.1, 0.3, 0.4), -0.311)


def test_overall_sentence() -> None:
    neg = (summary(-0.3, -0.5, -0.1, 0.01), None)
    zero = (summary(0.0, -0.2, 0.2, 0.9), None)
    assert "all three" in report.overall({"fcnn": neg, "lenet5": neg, "gat": neg})
    assert "none of the three" in report.overall({"fcnn": zero, "lenet5": zero, "gat": zero})
    mixed = report.overall({"fcnn": neg, "lenet5": zero, "gat": zero})
    assert "negative beyond its uncertainty for FCNN" in mixed and "LeNet-5 and GAT" in mixed and "positive" not in mixed


def test_learning_compares_the_training_loss_with_chance() -> None:
    at_chance = fake_table(5, 0.0).assign(train_loss=1.94)  # ln 7 = 1.946
    learned = fake_table(5, 0.0).assign(train_loss=0.3)
    assert "stayed at chance level" in report.learning("gat", at_chance) and "1.940" in report.learning("gat", at_chance)
    assert "learned" in report.learning("lenet5", learned) and "87" in report.learning("lenet5", learned)  # 1 − 0.3/ln 10


def test_critical_tau_matches_the_kendall_test() -> None:
    # at |τ| = critical_tau(M) the asymptotic two-sided p is 0.05
    assert report.critical_tau(50) == pytest.approx(0.191, abs=1e-3)


@pytest.fixture
def results_dir(tmp_path: Path) -> Path:
    for arch, slope in (("fcnn", -1.0), ("lenet5", 0.0), ("gat", 1.0)):
        table = fake_table(12, slope, seed=len(arch))
        write_results(StudyParams(arch, profile="quick", results_dir=str(tmp_path)), table,
                      kendall(table["sharpness"], table["test_loss"], n_resamples=200), {"training": 60.0})
    return tmp_path


def test_build_writes_every_file_from_results(results_dir: Path, tmp_path: Path) -> None:
    paths = report.build(results_dir, tmp_path / "generated")
    assert all(p.exists() and p.stat().st_size > 0 for p in paths)
    macros = (tmp_path / "generated" / "results.tex").read_text()
    summary_fcnn = __import__("json").loads((results_dir / "fcnn" / "results.json").read_text())
    assert f"\\newcommand{{\\FcnnTau}}{{{summary_fcnn['tau']:.3f}}}" in macros
    assert "quick profile" in macros
    table1 = (tmp_path / "generated" / "table1.tex").read_text()
    assert "FCNN & Abalone & 0.014" in table1 and "0.0001" in table1 and "0.236" in table1
    assert "-0.311" in (tmp_path / "generated" / "comparison.tex").read_text()


def test_mixed_profiles_are_refused(results_dir: Path, tmp_path: Path) -> None:
    table = fake_table(12, 1.0)
    write_results(StudyParams("gat", profile="full", results_dir=str(results_dir)), table,
                  kendall(table["sharpness"], table["test_loss"], n_resamples=100), {})
    with pytest.raises(ValueError, match="different profiles"):
        report.build(results_dir, tmp_path / "out")


# ---------------------------------------------------------------- the ablation section's builders

def _frame(report: tuple[float, float, float], **taus: float) -> pd.DataFrame:
    rows = [
        {
            "variant": "report",
            "label": "report",
            "tau": report[0],
            "ci_low": report[1],
            "ci_high": report[2],
            "p_value": 0.01,
            "n_models": 50,
        }
    ]
    rows += [
        {
            "variant": name,
            "label": DEVIATIONS[name].label if name in DEVIATIONS else name,
            "tau": tau,
            "ci_low": tau - 0.1,
            "ci_high": tau + 0.1,
            "p_value": 0.5,
            "n_models": 50,
        }
        for name, tau in taus.items()
    ]
    return pd.DataFrame(rows)


def test_paragraph_names_the_switch_that_moves_tau_and_its_direction() -> None:
    shifted = _frame(
        (-0.31, -0.45, -0.15), **{"reference code": 0.10, "swapped_bounds": 0.05, "elu_all_layers": -0.30, "notebook_lr": -0.60}
    )
    text = report.ablation_paragraph({"fcnn": shifted})
    assert "$\\tau = -0.31$" in text and "$[-0.45, -0.15]$" in text
    assert "swapped bounds alone raises it to $0.05$" in text and "lr 0.102 alone lowers it to $-0.60$" in text
    assert "ELU on all layers" not in text and "The other switch alone leaves $\\tau$ inside it." in text
    assert "$\\tau = 0.10$, outside the interval (raises it)" in text


def test_paragraph_says_so_when_nothing_moves_tau() -> None:
    steady = _frame((-0.18, -0.35, 0.00), **{"reference code": -0.20, "train_mode": -0.10, "full_set_ascent": math.nan})
    text = report.ablation_paragraph({"lenet5": steady})
    assert text.startswith("For LeNet-5,") and "No single switch moves $\\tau$ outside that interval." in text
    assert "inside the interval" in text and "undefined for full-set ascent" in text and "raises" not in text and "lowers" not in text


def test_table_marks_taus_outside_the_report_interval() -> None:
    tex = report.ablation_table_tex({"gat": _frame((-0.19, -0.3, -0.05), **{"reference code": 0.2, "five_restarts": -0.1})})
    assert tex.startswith("\\begin{tabular}") and tex.rstrip().endswith("\\end{tabular}") and "\\hline" in tex
    lines = tex.splitlines()
    assert any(line.startswith("GAT & report's method") for line in lines)
    assert any("reference code (all) & $0.20$$^{*}$" in line for line in lines)
    assert any("+ 5 restarts & $-0.10$ &" in line for line in lines)


def test_rho_figure_writes_both_files(tmp_path: Path) -> None:
    frame = pd.DataFrame(
        [{"rho": r, "adaptive": a, "tau": 0.1 * r, "ci_low": -0.2, "ci_high": 0.3} for r in (0.01, 0.1, 1.0) for a in (True, False)]
    )
    report.rho_figure({"fcnn": frame, "gat": frame}, tmp_path / "rho.pdf", tmp_path / "rho.png")
    assert (tmp_path / "rho.pdf").stat().st_size > 0 and (tmp_path / "rho.png").stat().st_size > 0


def test_the_byline_says_which_accepts_moved_code_and_which_checked_numbers(tmp_path: Path) -> None:
    def lock(arch: str, step: str, *accepts: dict) -> None:
        (tmp_path / arch).mkdir(exist_ok=True)
        record = {"step": step, "arch": arch, "computed": {"commit": "a" * 40, "device": "NVIDIA H200", "dirty": False},
                  "accepted": [{"date": "2026-12-04 18:00 UTC", "to_commit": "b" * 40, **a} for a in accepts]}
        (tmp_path / arch / f"{step}.lock").write_text(json.dumps(record))

    lock("fcnn", "study", {"moved": "0" * 64})
    lock("lenet5", "ablation", {"settings": {"ablation": {"n_models": 3, "variants": ["report", "train_mode"]}}}, {"moved": "0" * 64})
    sentence = report.provenance_sentence(tmp_path)
    assert sentence.startswith("Studies and ablations computed at commit aaaaaaa on NVIDIA H200; all of them accepted unchanged through "
                               "commit bbbbbbb, modules moved, LeNet-5's ablation also checked old against")
    assert sentence.endswith("with 3 models per seed pool, LeNet-5's ablation on 2 of its rows.")


def test_the_byline_names_a_measures_panel_checked_on_the_quick_grid(tmp_path: Path) -> None:
    (tmp_path / "lenet5").mkdir()
    record = {"step": "measures", "arch": "lenet5", "computed": {"commit": "a" * 40, "device": "NVIDIA H200", "dirty": False},
              "accepted": [{"date": "2026-12-04 18:00 UTC", "to_commit": "b" * 40,
                            "settings": {"study": {"n_models": 3, "max_epochs": 2}, "measures": {"n_seed_models": 3, "profile": "quick"}}}]}
    (tmp_path / "lenet5" / "measures.lock").write_text(json.dumps(record))
    sentence = report.provenance_sentence(tmp_path)
    assert sentence.endswith("LeNet-5 trained for 2 epochs, LeNet-5's measures panel on the quick profile's grid."), sentence


def test_the_byline_names_the_architectures_a_device_computed_alone_and_a_cpu_as_such(tmp_path: Path) -> None:
    for arch, device, accepted in (("fcnn", "NVIDIA H200", True), ("gat", "NVIDIA H200", True), ("lenet5", "x86_64", False)):
        (tmp_path / arch).mkdir()
        computed = {"commit": ("a" if accepted else "c") * 40, "device": device, "dirty": False}
        record = {"step": "progress", "arch": arch, "computed": computed,
                  "accepted": [{"date": "2026-12-04 18:00 UTC", "to_commit": "b" * 40, "moved": "0" * 64}] if accepted else []}
        (tmp_path / arch / "progress.lock").write_text(json.dumps(record))
    assert report.provenance_sentence(tmp_path) == (
        "FCNN's and GAT's progress pools computed at commit aaaaaaa on NVIDIA H200; LeNet-5's progress pool computed at commit"
        " ccccccc on the CPU (x86_64); all but LeNet-5's progress pool accepted unchanged through commit bbbbbbb, modules moved,"
        " the code otherwise the same.")


def test_a_step_left_out_for_every_architecture_is_named_once() -> None:
    from sharplib.paper.report import _step_names

    locks = [{"step": "equalized", "arch": a} for a in ("fcnn", "lenet5", "gat")] + [{"step": "progress", "arch": "lenet5"}]
    assert _step_names(locks) == "the panels at equal progress and LeNet-5's progress pool"
    assert _step_names(locks[1:]) == "LeNet-5's panel at equal progress, GAT's panel at equal progress and LeNet-5's progress pool"
    assert _step_names(locks[3:]) == "LeNet-5's progress pool"
