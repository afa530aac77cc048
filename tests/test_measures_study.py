"""The measures study: τ, Ψ and conditional τ per measure from a panel table, the notebook end to end, the paper's section."""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from sharplib.paper import measures_report
from sharplib.panel.measures import MEASURES
from sharplib.experiments.measures_study import MeasuresParams, summarize
from sharplib.core.subpools import granulated_kendall
from tests.notebook_runner import run_notebook
from tests.test_notebooks import TINY, markdown_shown


def synthetic_table(seed: int = 0) -> pd.DataFrame:
    """A seed-only pool of 12 and a varied pool (2 lr × 2 batch sizes × 4 seeds) whose test loss follows the learning rate;
    every measure is noise, but for `hessian_trace` and `train_loss`, which track test loss, and `weight_norm`, which is
    the learning rate."""
    rng = np.random.default_rng(seed)
    varied = pd.DataFrame([{"lr": lr, "batch_size": b} for lr in (0.01, 0.02) for b in (32, 128) for _ in range(4)]).assign(pool="varied")
    seed_pool = pd.DataFrame({"lr": 0.01, "batch_size": 64, "pool": "seed"}, index=range(12))
    table = pd.concat([seed_pool, varied], ignore_index=True)
    table["test_loss"] = 10 * table["lr"] + rng.normal(0, 0.01, len(table))
    for name in MEASURES:
        table[name] = rng.normal(size=len(table))
    table["train_loss"] = table["test_loss"] + rng.normal(0, 1e-4, len(table))
    table["hessian_trace"] = table["test_loss"] + rng.normal(0, 1e-3, len(table))
    table["weight_norm"] = table["lr"]
    return table


def test_summarize_matches_the_statistics_it_reports() -> None:
    table = synthetic_table()
    summary = summarize(table, n_resamples=99)
    assert list(summary) == list(MEASURES)
    seed_pool = table[table["pool"] == "seed"]
    expected = stats.kendalltau(seed_pool["hessian_trace"], seed_pool["test_loss"]).statistic
    assert summary["hessian_trace"]["tau_seed"]["tau"] == pytest.approx(expected) and expected > 0.5
    assert summary["train_loss"]["tau_seed"]["tau"] > 0.7 and summary["train_loss"]["granulated"]["psi"] > 0.5
    varied = table[table["pool"] == "varied"]
    assert summary["fisher_rao_norm"]["granulated"]["psi"] == pytest.approx(
        granulated_kendall(varied, "fisher_rao_norm", "test_loss", ["lr", "batch_size"], n_resamples=99, undefined="zero").psi)
    # the learning rate as a "measure": a high plain τ on the varied pool, no τ within a batch-size sub-pool
    weight = summary["weight_norm"]
    # (τ-b of a measure with ties: 0.76 where every pair of distinct learning rates agrees)
    assert (
        weight["tau_varied"]["tau"] > 0.5 and weight["granulated"]["psi_i"]["lr"] > 0.7 and weight["granulated"]["psi_i"]["batch_size"] == 0
    )
    assert np.isnan(weight["tau_seed"]["tau"]), "a constant measure has no τ"
    assert set(weight["tau_within_lr"]) == {"0.01", "0.02"}


def test_paper_section_follows_the_numbers(tmp_path: Path) -> None:
    summary = summarize(synthetic_table(), n_resamples=99)
    overview = measures_report.overview(summary)
    assert list(overview.columns) == ["τ seed-only", "τ varied", "Ψ", "ψ learning rate", "ψ batch size"] and len(overview) == len(MEASURES)
    text = measures_report.paragraph("fcnn", summary)
    listed = text.split("excludes zero for:")[1].split(".")[0]
    assert "Hessian trace" in listed and "training loss" not in listed, "controls are not listed as measures"
    assert "depends on which hyperparameter varies for: weight norm (ψ = 0.76 across learning rates, 0.00 across batch sizes)" in text
    assert "largest |Ψ| is Hessian trace's" in text
    table = measures_report.table_tex({"fcnn": summary, "gat": summary})
    assert table.count("\\\\") == 2 + len(MEASURES) and "FCNN" in table and "GAT" in table
    (tmp_path / "fcnn").mkdir()
    (tmp_path / "fcnn" / "measures.json").write_text(json.dumps({"measures": summary, "profile": "full", "params": {"n_resamples": 99}}))
    synthetic_table().to_csv(tmp_path / "fcnn" / "measures.csv", index=False)
    written = measures_report.build(tmp_path, tmp_path / "generated")
    assert [p.name for p in written] == ["measures.tex", "measures.pdf", "measures.png"] and all(p.exists() for p in written)
    generated = written[0].read_text().split("\n", 1)[1]  # after the "% Generated" line
    assert not re.search("[τΨψ]", generated) and not re.search(r"(?<!\\)%", generated), "text LaTeX cannot typeset"
    assert "\\newcommand{\\MeasuresGivenTable}" in generated and "For FCNN, with the training loss held fixed" in generated
    assert measures_report.build(tmp_path / "nothing", tmp_path / "generated2") == []


def test_bad_parameters_name_the_field() -> None:
    with pytest.raises(ValueError, match="parameter.n_seed_models"):
        MeasuresParams("fcnn", n_seed_models=2)
    with pytest.raises(ValueError, match="parameter.arch"):
        MeasuresParams("resnet")


@pytest.fixture(scope="module")
def tiny_study(tmp_path_factory: pytest.TempPathFactory, data_root: Path) -> Path:
    """The tiny FCNN study the measures notebook starts from, run once under papermill; each test copies it."""
    tmp = tmp_path_factory.mktemp("study")
    run_notebook("study", tmp, data_root, arch="fcnn", results_dir=str(tmp / "results"), **TINY)
    return tmp / "results"


def fresh_study(tiny_study: Path, tmp_path: Path) -> Path:
    """A results folder of this test's own holding only the study's files, as if the study notebook had just run into it."""
    results = tmp_path / "results"
    shutil.copytree(tiny_study, results)
    return results


@pytest.mark.notebook
@pytest.mark.slow
def test_quick_run_writes_both_pools(tiny_study: Path, tmp_path: Path, data_root: Path) -> None:
    results = fresh_study(tiny_study, tmp_path)
    nb = run_notebook("measures", tmp_path, data_root, arch="fcnn", profile="quick", results_dir=str(results), device="cpu", n_resamples=99)
    table = pd.read_csv(results / "fcnn" / "measures.csv")
    summary = json.loads((results / "fcnn" / "measures.json").read_text())
    assert (table["pool"] == "seed").sum() == 3 and (table["pool"] == "varied").sum() == 8
    assert set(MEASURES) <= set(table.columns) and table[list(MEASURES)].notna().all().all()
    assert summary["grid"]["n_seeds"] == 2 and list(summary["measures"]) == list(MEASURES)
    varied = table[table["pool"] == "varied"]
    expected = stats.kendalltau(varied["sharpness_adaptive"], varied["test_loss"]).statistic
    assert summary["measures"]["sharpness_adaptive"]["tau_varied"]["tau"] == pytest.approx(expected)
    assert "For FCNN, on the seed-only pool" in markdown_shown(nb), "the executed notebook states its findings"
    assert sum("image/png" in o.get("data", {}) for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])) == 1


@pytest.mark.notebook
@pytest.mark.slow
def test_survives_a_second_run_all_and_cells_run_too_early(tiny_study: Path, tmp_path: Path, data_root: Path) -> None:
    from tests.kernel_session import code_cells, edit, session

    results = fresh_study(tiny_study, tmp_path)
    cells = edit(code_cells("measures"), results_dir=str(results), device="cpu", n_resamples=99)
    with session(tmp_path, data_root, "measures") as kernel:
        for _ in range(2):  # Run All twice, no restart: the second reuses the grid's checkpoints
            shown = kernel.run_all(cells)
            assert all(s.ok for s in shown) and len(shown) == len(cells), shown[-1].error
            assert not any(s.stderr for s in shown), [s.stderr for s in shown if s.stderr]
    with session(tmp_path, data_root, "measures") as kernel:
        shown = kernel.run(cells[-1])  # after a restart, the last cell first
        assert len(shown.error) == 1 and "is not defined yet: run the cell" in shown.error[0], shown.error
