"""The ablation notebook (notebooks/ablation.py) on a tiny FCNN study, and the paper builder that reads its files.

A five-model FCNN study (two epochs each) is trained into a temporary results folder; the notebook
reuses its pool exactly as `make paper` does with results/. The builder test adds two synthetic
architectures so that all three ablation files exist.
"""
from __future__ import annotations

import json
import math
import re
from pathlib import Path

import nbformat
import numpy as np
import pandas as pd
import papermill
import pytest
import torch

from sharplib.experiments.profiles import PROFILES
from sharplib.experiments import ablation as A
from sharplib.paper import report
from sharplib.core.data import load_abalone
from sharplib.pools.pool import load_model, train_pool
from sharplib.core.sharpness import estimate_pool_sharpness
from sharplib.core.stats import kendall
from sharplib.experiments.ablation import write_ablation
from sharplib.experiments.study import StudyParams, model_table, write_results
from tests.notebook_runner import check_parameters, parameters_cell, run_notebook

VARIANTS = ["report", "elu_all_layers", "swapped_bounds"]  # one training and one sharpness switch: seconds, not minutes
TINY = dict(arch="fcnn", profile="quick", n_models=4, n_restarts=3, rho_factors=[0.1, 1.0, 10.0], variants=VARIANTS,
            n_resamples=200, n_workers=1)


@pytest.fixture(scope="module")
def study_dir(tmp_path_factory: pytest.TempPathFactory, data_root: Path) -> Path:
    """A quick-profile FCNN study of 5 models (2 epochs), written as the study notebook writes it."""
    torch.set_num_threads(1)
    results = tmp_path_factory.mktemp("results")
    params = StudyParams("fcnn", profile="quick", n_models=5, n_restarts=3, max_epochs=2, n_resamples=200, device="cpu",
                         results_dir=str(results), data_root=str(data_root))
    task = load_abalone(data_root)
    entries = train_pool("fcnn", task, params.train_config(), params.seeds, params.out_dir / "pool", n_workers=1, progress=False)
    sharpness = estimate_pool_sharpness([load_model(e.checkpoint)[0] for e in entries], task, params.sharpness_config())
    table = model_table(entries, sharpness)
    write_results(params, table, kendall(table["sharpness"], table["test_loss"], n_resamples=200), {"training": 1.0})
    return results


def execute(source_dir: Path, data_root: Path, **parameters) -> nbformat.NotebookNode:
    """Run the notebook with `parameters` as papermill does under make, and return the executed notebook."""
    return run_notebook("ablation", source_dir, data_root, **parameters)


@pytest.fixture(scope="module")
def tiny_run(study_dir: Path, data_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    execute(tmp_path_factory.mktemp("nb"), data_root, results_dir=str(study_dir), **TINY)
    return study_dir / "fcnn"


def test_notebook_has_one_literal_parameters_cell() -> None:
    parameters_cell("ablation")


@pytest.mark.slow
def test_tiny_run_writes_the_tables_and_json(tiny_run: Path, study_dir: Path) -> None:
    table, rho = pd.read_csv(tiny_run / "ablation.csv"), pd.read_csv(tiny_run / "rho.csv")
    summary = json.loads((tiny_run / "ablation.json").read_text())
    assert list(table["variant"]) == VARIANTS and (table["n_models"] + table["n_diverged"] == 4).all()
    assert table["tau"].between(-1, 1).all() and (table["ci_low"] <= table["ci_high"]).all()
    assert sorted(rho["rho"].unique()) == pytest.approx([0.0025, 0.025, 0.25]) and len(rho) == 6 and set(rho["adaptive"]) == {True, False}
    assert summary["profile"] == "quick" and summary["n_models"] == 4 and summary["n_models_pool"] == 5 and summary["seeds"] == [0, 1, 2, 3]
    assert (
        summary["n_restarts"] == 3
        and summary["variants"] == VARIANTS
        and re.fullmatch(r"[0-9a-f]{40}|unknown", summary["provenance"]["git_commit"])
    )
    assert set(summary["seconds"]) == {"ablation", "rho_sweep"} and not list(tiny_run.glob(".*.tmp"))
    # the sweep at the report's ρ (adaptive) is the report row's estimator on the same models and batches
    at_report = rho[np.isclose(rho["rho"], 0.025) & rho["adaptive"]].iloc[0]
    assert at_report["tau"] == pytest.approx(table.loc[table["variant"] == "report", "tau"].item())


def run_parameter_check(results_dir: Path, **overrides) -> dict:
    """The notebook's imports, parameters cell, `overrides` (as papermill injects them) and its check cell, in this process."""
    return check_parameters("ablation", **{"results_dir": str(results_dir), "profile": "quick", **overrides})


@pytest.mark.parametrize("overrides, message", [
    ({"n_model": 5}, "unknown field(s) ['n_model']"),
    ({"n_models": 0}, "parameter.n_models must be >= 3, got 0"),
    ({"n_restarts": "5"}, "parameter.n_restarts must be an integer, got '5'"),
    ({"rho_factors": [0.1, 10.0]}, "parameter.rho_factors must be a list"),
    ({"variants": ["report", "train_mode"]}, "parameter.variants must name only"),
    ({"arch": "resnet"}, "parameter.arch must be one of"),
    ({"n_models": 9}, "parameter.n_models = 9 exceeds the 5 models"),
    ({"profile": "full"}, "parameter.profile = 'full', but the fcnn study"),
])
def test_bad_parameters_are_named(study_dir: Path, overrides: dict, message: str) -> None:
    with pytest.raises(ValueError) as err:
        run_parameter_check(study_dir, **overrides)
    assert message in str(err.value)


@pytest.mark.slow
def test_papermill_bad_parameter_stops_the_run_before_any_work(study_dir: Path, data_root: Path, tmp_path: Path) -> None:
    with pytest.raises(papermill.PapermillExecutionError) as err:
        execute(tmp_path, data_root, results_dir=str(study_dir), **{**TINY, "n_restarts": "3"})
    assert "parameter.n_restarts must be an integer" in str(err.value)
    cells = [c for c in nbformat.read(tmp_path / "ablation.executed.ipynb", as_version=4).cells if c.cell_type == "code"]
    failed = next(i for i, c in enumerate(cells) if "AblationParams.from_namespace" in c.source)
    assert all(c.execution_count is None for c in cells[failed + 1 :]), "the notebook did work after a bad parameter"


def test_missing_study_is_named(study_dir: Path) -> None:
    with pytest.raises(FileNotFoundError, match="run the gat notebook first"):
        run_parameter_check(study_dir / "nowhere", arch="gat")


# ---------------------------------------------------------------- the builder

def fake_ablation(results_dir: Path, arch: str, n_models: int, pool: int, seed: int) -> None:
    """Ablation files for `arch` with made-up τ values (the builder only reads files)."""
    rng = np.random.default_rng(seed)
    rows = []
    for v in A.default_variants(arch):
        tau = float(rng.uniform(-0.6, 0.6))
        rows.append(
            {
                "arch": arch,
                "variant": v.name,
                "label": v.name,
                "switches": ",".join(v.switches) or "none",
                "n_models": n_models,
                "n_diverged": 0,
                "tau": tau,
                "p_value": float(rng.uniform(0, 1)),
                "ci_low": tau - 0.2,
                "ci_high": tau + 0.2,
                "seconds": 1.0,
            }
        )
    rho = pd.DataFrame([{"rho": r, "adaptive": a, "tau": float(rng.uniform(-0.5, 0.5)), "p_value": 0.5, "ci_low": -0.7, "ci_high": 0.7,
                         "n_models": n_models, "arch": arch} for r in A.default_rho_grid(arch) for a in (True, False)])
    summary = {
        "arch": arch,
        "profile": "quick",
        "n_models": n_models,
        "n_models_pool": pool,
        "n_restarts": 7,
        "rho": A.protocol.spec(arch).rho,
    }
    write_ablation(results_dir / arch, pd.DataFrame(rows), rho, summary)


@pytest.mark.slow
def test_builder_prints_the_csv_numbers(tiny_run: Path, study_dir: Path, tmp_path: Path) -> None:
    fake_ablation(study_dir, "lenet5", n_models=4, pool=50, seed=1)
    fake_ablation(study_dir, "gat", n_models=50, pool=50, seed=2)
    paths = report.build_ablation(study_dir, tmp_path, profile="quick")
    assert all(p.exists() and p.stat().st_size > 0 for p in paths)
    tex = (tmp_path / "ablation.tex").read_text()
    for arch in ("fcnn", "lenet5", "gat"):
        for row in pd.read_csv(study_dir / arch / "ablation.csv").itertuples():
            assert f"${row.tau:.2f}$" in tex and f"$[{row.ci_low:.2f}, {row.ci_high:.2f}]$" in tex and f"& {row.n_models} \\\\" in tex
    assert "the first 4 of the 5 FCNN models, the first 4 of the 50 LeNet-5 models and all 50 GAT models" in tex
    assert "\\includegraphics[width=\\textwidth]{generated/rho.pdf}" in tex and "quick profile" in tex
    report_row = pd.read_csv(tiny_run / "ablation.csv").iloc[0]
    assert f"For FCNN, the report's method gives $\\tau = {report_row.tau:.2f}$" in tex
    rho = pd.read_csv(tiny_run / "rho.csv")
    adaptive = rho[rho["adaptive"]]["tau"]
    low, high = f"{adaptive.min():.2f}", f"{adaptive.max():.2f}"
    said = f"$\\tau = {low}$ at every $\\rho$" if low == high else f"$\\tau$ from ${low}$ to ${high}$"
    assert f"adaptive sharpness gives {said}" in tex
    assert not math.isnan(adaptive.min())


@pytest.mark.slow
def test_builder_refuses_mixed_profiles(tiny_run: Path, study_dir: Path, tmp_path: Path) -> None:
    fake_ablation(study_dir, "lenet5", n_models=4, pool=50, seed=1)
    fake_ablation(study_dir, "gat", n_models=50, pool=50, seed=2)
    with pytest.raises(ValueError, match="different profiles"):
        report.build_ablation(study_dir, tmp_path, profile="full")


@pytest.mark.slow
def test_report_build_adds_the_ablation_only_when_all_three_ran(tiny_run: Path, study_dir: Path, tmp_path: Path) -> None:
    from tests.test_report import fake_table

    for arch, slope in (("lenet5", 0.0), ("gat", 1.0)):
        table = fake_table(12, slope, seed=len(arch))
        write_results(StudyParams(arch, profile="quick", results_dir=str(study_dir)), table,
                      kendall(table["sharpness"], table["test_loss"], n_resamples=200), {"training": 60.0})
        fake_ablation(study_dir, arch, n_models=12, pool=12, seed=len(arch))
    names = {p.name for p in report.build(study_dir, tmp_path)}
    assert {"ablation.tex", "rho.pdf", "rho.png", "results.tex", "figure1.pdf"} <= names
    (study_dir / "gat" / "ablation.json").unlink()
    names = {p.name for p in report.build(study_dir, tmp_path)}
    assert "ablation.tex" not in names and not (tmp_path / "ablation.tex").exists()  # no stale section from an older run


def test_profiles_keep_the_issue_s_promises() -> None:
    full, quick = PROFILES["full"]["ablation"], PROFILES["quick"]["ablation"]
    assert full["fcnn"]["n_models"] is None and full["gat"]["n_models"] is None  # all 50 models
    assert full["lenet5"]["n_models"] is None and full["fcnn"]["variants"] is None and full["lenet5"]["variants"] is None
    assert A.CPU_MODEL_CAP == {"lenet5": 20}  # on a CPU, LeNet-5's rows on the pool's first 20 (issue #11: no fewer)
    for arch in ("fcnn", "lenet5", "gat"):
        grid = A.default_rho_grid(arch, full[arch]["rho_factors"])
        assert len(grid) >= 5 and grid[-1] / grid[0] >= 100 - 1e-9 and A.protocol.spec(arch).rho in grid
        assert 1.0 in quick[arch]["rho_factors"] and "report" in quick[arch]["variants"]
        A.AblationParams(arch, profile="quick").variant_list()  # every name in the profile is a real variant


def test_full_profile_caps_lenet5_on_a_cpu_only() -> None:
    inputs = A.StudyInputs(profile="full", seeds=tuple(range(50)), test_loss={}, train_overrides={}, sharpness_overrides={}, n_restarts=50)
    assert A.AblationParams("lenet5", device="cpu").models_used(inputs) == 20
    assert A.AblationParams("lenet5", device="cpu", n_models=30).models_used(inputs) == 30  # asked for: not capped
    assert A.AblationParams("gat", device="cpu").models_used(inputs) == 50
    assert A.AblationParams("lenet5", profile="quick", device="cpu").models_used(inputs) == 3


@pytest.mark.slow
def test_survives_edits_reruns_and_cells_run_too_early(study_dir: Path, data_root: Path, tmp_path: Path) -> None:
    # In a live kernel, as in JupyterLab: Run All, edit, Run All again without a restart, rerun every cell.
    from tests.kernel_session import code_cells, edit, session

    values = {k: tuple(v) if isinstance(v, list) else v for k, v in TINY.items() if k != "n_resamples"}
    cells = edit(code_cells("ablation"), results_dir=str(study_dir), device="cpu", **values)
    at = next(i for i, c in enumerate(cells) if c.startswith("arch = "))
    cells.insert(at + 1, "# Parameters\nn_resamples = 200\n")  # as papermill injects one
    with session(tmp_path, data_root, "ablation") as kernel:
        first = kernel.run_all(cells)
        assert all(s.ok for s in first) and len(first) == len(cells), first[-1].error
        assert not any(s.stderr for s in first), [s.stderr for s in first if s.stderr]
        cells[at] = cells[at].replace("n_models = 4", "n_models = 3")
        second = kernel.run_all(cells)
        assert all(s.ok for s in second) and len(second) == len(cells), second[-1].error
        assert json.loads((study_dir / "fcnn" / "ablation.json").read_text())["n_models"] == 3, "the second Run All ignored the edit"
        for source in cells[at:]:
            assert kernel.run(source).ok, source[:80]
    with session(tmp_path, data_root, "ablation") as kernel:  # after a restart, the check cell first
        shown = kernel.run(cells[at + 2])
        assert len(shown.error) == 1 and shown.error[0].startswith("NameError: `ablation` is not defined yet: run the cell under")
        assert "that starts `from sharplib.core import notebook` first" in shown.error[0], shown.error
