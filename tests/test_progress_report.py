"""The progress section of the paper, built from a synthetic progress.json: macros, figures, sentences that follow the numbers."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from sharplib.paper import progress_report
from sharplib.experiments import progress_study
from tests.test_progress_study import synthetic_pool


def summary(beyond: bool, seed: int = 0) -> dict:
    """A progress.json's contents: a protocol and an equalized pool (two models missed L*), a three-epoch trajectory."""
    equalized = synthetic_pool(20, seed + 1, "equalized", beyond).assign(reached_target=True)
    equalized.loc[[3, 4], "reached_target"] = False
    table = progress_study.with_targets(pd.concat([synthetic_pool(40, seed, beyond=beyond), equalized], ignore_index=True))
    trajectory = pd.DataFrame(
        [
            {
                "epoch": e,
                "tau": t,
                "tau_ci_low": t - 0.2,
                "tau_ci_high": t + 0.2,
                "partial_tau": t / 2,
                "partial_ci_low": t / 2 - 0.2,
                "partial_ci_high": t / 2 + 0.2,
                "partial_null_tau": 0.1,
                "stratified_tau": 0.0,
                "stratified_ci_low": -0.3,
                "stratified_ci_high": 0.3,
            }
            for e, t in ((1, 0.1), (3, 0.4), (5, 0.5))
        ]
    )
    return {"target_loss": 0.51, **progress_study.summarize(table, trajectory, pd.Series([3, 3, 4, 5]), n_resamples=199)}


def write(results: Path, arch: str, record: dict) -> None:
    table = pd.DataFrame({"pool": ["protocol"], "seed": [0]})
    progress_study.write_progress(
        results / arch,
        table,
        {k: v for k, v in record.items() if k != "target_loss"},
        {
            "target_loss": record["target_loss"],
            "max_epochs": 10,
            "trajectory_epochs": [1, 3, 5],
            "trajectory_models": 15,
            "trajectory_sharpness_config": {"n_restarts": 10},
        },
    )


def test_verdict_follows_the_conditional_taus() -> None:
    assert progress_report.beyond_progress(summary(beyond=False)["pools"]["protocol"]["taus"]["test_loss"]) == "no"
    assert progress_report.beyond_progress(summary(beyond=True)["pools"]["protocol"]["taus"]["test_loss"]) == "yes"
    text = progress_report.paragraph("fcnn", summary(beyond=False))
    assert (
        text.startswith("For FCNN")
        and "On both pools, then, adaptive sharpness adds nothing measurable to training progress for FCNN." in text
    )
    assert "null value" in text and "18 models (training loss" in text and "seeds 3, 4" in text
    assert "On both pools, then, adaptive sharpness ranks GAT's test loss beyond training progress." in progress_report.paragraph(
        "gat", summary(beyond=True)
    )
    mixed = summary(beyond=True)
    mixed["pools"]["equalized"] = summary(beyond=False)["pools"]["equalized"]
    assert "is not settled: the protocol's pool says beyond; the equalized pool (L*) says nothing beyond" in progress_report.paragraph(
        "gat", mixed
    )


def test_conclusion_names_each_architecture_by_its_verdicts() -> None:
    no, yes = summary(beyond=False), summary(beyond=True)
    mixed = summary(beyond=True)
    mixed["pools"]["equalized"] = no["pools"]["equalized"]
    assert progress_report.conclusion({"fcnn": no, "lenet5": mixed, "gat": yes}) == (
        "Held at equal training progress, adaptive sharpness adds nothing measurable to the training loss for FCNN, ranks test loss"
        " beyond the training loss on the protocol's pool only for LeNet-5, and ranks test loss beyond the training loss on both"
        " pools for GAT.")
    assert progress_report.conclusion({"gat": yes}).endswith("on both pools for GAT.")
    assert progress_report.conclusion({"fcnn": no, "lenet5": no, "gat": yes}).startswith(
        "Held at equal training progress, adaptive sharpness adds nothing measurable to the training loss for FCNN and LeNet-5, and")


def test_build_writes_macros_and_two_figures(tmp_path: Path) -> None:
    write(tmp_path / "results", "fcnn", summary(beyond=False))
    write(tmp_path / "results", "gat", summary(beyond=True, seed=3))
    written = progress_report.build(tmp_path / "results", tmp_path / "generated")
    assert sorted(p.name for p in written) == sorted(["progress.tex", "progress_tau.pdf", "progress_tau.png", "progress_trajectory.pdf",
                                                      "progress_trajectory.png"])
    tex = (tmp_path / "generated" / "progress.tex").read_text()
    assert "\\newcommand{\\ProgressText}" in tex and "\\newcommand{\\ProgressProvenance}" in tex
    assert "\\newcommand{\\ProgressConclusion}{Held at equal training progress, adaptive sharpness adds nothing" in tex
    assert "For FCNN" in tex and "For GAT" in tex and "τ" not in tex and "$\\tau$" in tex and "$L^*$" in tex
    assert "LeNet-5: not run" in tex
    assert ("\\newcommand{\\ProgressSettings}{FCNN: $L^*$ = 0.51 within at most 10 epochs; "
            "along training 15 models after epochs 1, 3, 5, sharpness with 10 restarts; GAT:") in tex
    assert all(p.stat().st_size > 1000 for p in written)


def test_overview_has_every_kind_on_both_pools() -> None:
    table = progress_report.overview({"fcnn": summary(beyond=False)})
    assert set(table["pool"]) == {"protocol", "equalized"} and set(table["kind"]) == {"tau", "partial", "stratified"}
    assert set(table["target"]) == {"test_loss", "generalization_gap"}
    partial = table[table["kind"] == "partial"]
    assert np.isfinite(partial["null"]).all()


def test_nothing_to_build_without_results(tmp_path: Path) -> None:
    assert progress_report.build(tmp_path, tmp_path / "generated") == []
    with pytest.raises(SystemExit, match="usage"):
        progress_report.main(["only-one"])
