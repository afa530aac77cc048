"""report.py: generated sentences follow the numbers; the .tex files and figure come from results/."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from sharplib import report
from sharplib.stats import kendall
from sharplib.study import StudyParams, write_results


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
    assert "negative" in report.finding(summary(-0.3, -0.5, -0.1, 0.002)) and "excludes zero" in report.finding(summary(-0.3, -0.5, -0.1, 0.002))
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
