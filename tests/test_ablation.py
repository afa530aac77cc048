"""The ablation runner and the ρ sweep (sharplib.experiments.ablation), on the one main path."""
from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import pandas as pd
import pytest
import torch

from sharplib.experiments import ablation as A
from sharplib.experiments import reference as R
from sharplib.core.data import load_abalone
from sharplib.pools.pool import load_model
from sharplib.experiments.protocol import TABLE1, sharpness_config
from sharplib.core.sharpness import estimate_sharpness
from sharplib.pools.pool import estimate_pool_sharpness
from sharplib.core.task import Task

QUICK = dict(n_restarts=3, n_resamples=200, train_overrides={"max_epochs": 2}, progress=False)


@pytest.fixture(scope="module", autouse=True)
def _one_thread() -> None:
    # before the module-scoped fixtures below: conftest's per-test setting comes after them, and
    # small ops on 2 contended threads run tens of times slower
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def abalone(data_root: Path) -> Task:
    task = load_abalone(data_root)
    return dataclasses.replace(
        task, x_train=task.x_train[:384], y_train=task.y_train[:384], x_test=task.x_test[:128], y_test=task.y_test[:128]
    )


@pytest.fixture(scope="module")
def ablation_run(abalone: Task, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, pd.DataFrame]:
    """Every default FCNN variant on 5 small models: the end-to-end run the other tests reuse."""
    root = tmp_path_factory.mktemp("fcnn")
    return root, A.run_ablation("fcnn", abalone, range(5), root, **QUICK)


def test_tiny_fcnn_ablation_end_to_end(ablation_run: tuple[Path, pd.DataFrame]) -> None:
    root, df = ablation_run
    assert list(df["variant"]) == ["report", "reference code", *R.applicable("fcnn")]
    assert {"variant", "switches", "tau", "p_value", "ci_low", "ci_high", "n_models", "n_diverged", "seconds"} <= set(df.columns)
    assert (df["n_models"] + df["n_diverged"] == 5).all()
    assert df["tau"].between(-1, 1).all() and (df["ci_low"] <= df["ci_high"]).all()
    # sharpness-only variants reuse the main pool; each training change has its own
    pools = dict(zip(df["variant"], df["pool"]))
    assert pools["report"] == pools["full_set_ascent"] == pools["swapped_bounds"] == "pool"
    assert pools["elu_all_layers"] == "pool_elu_all_layers"
    assert pools["reference code"] == "pool_" + "+".join(R.setup("fcnn", R.notebook_switches("fcnn")).retrains)
    assert (df.loc[df["pool"] == "pool", "train_seconds"] == 0).all() and (df["seconds"] > 0).all()


def test_the_report_row_is_the_studys_estimate(ablation_run: tuple[Path, pd.DataFrame], abalone: Task) -> None:
    # All switches off is the main path: the report row's τ comes from the study's own estimator on its own pool.
    root, df = ablation_run
    models = [load_model(root / "pool" / f"seed{s:04d}.pt")[0] for s in range(5)]
    cfg = sharpness_config("fcnn", n_restarts=QUICK["n_restarts"])
    study = [r.mean for r in estimate_pool_sharpness(models, abalone, cfg)]
    cached = [r["sharpness"] for r in A.cached_sharpness({s: root / "pool" / f"seed{s:04d}.pt" for s in range(5)}, abalone, cfg,
                                                         root / "ablation_cache")]
    assert cached == study
    row = df[df["variant"] == "report"].iloc[0]
    test_loss = [load_model(root / "pool" / f"seed{s:04d}.pt")[1]["result"]["test_loss"] for s in range(5)]
    assert row["tau"] == pytest.approx(A._tau_stats(study, test_loss, 200)["tau"])


@pytest.mark.parametrize("arch", ["gat"])  # LeNet-5's rows are covered one by one in test_reference and test_train (and on CUDA)
def test_every_row_of_the_other_archs_runs_on_a_tiny_pool(arch: str, tasks: dict[str, Task], data_root: Path, tmp_path: Path) -> None:
    task = (
        tasks[arch]
        if arch == "gat"
        else dataclasses.replace(tasks[arch], x_train=tasks[arch].x_train[:192], y_train=tasks[arch].y_train[:192])
    )
    df = A.run_ablation(arch, task, range(3), tmp_path, n_restarts=2, n_resamples=50, train_overrides={"max_epochs": 1, "min_epochs": 1},
                        n_workers=1, data_root=str(data_root), progress=False)
    assert list(df["variant"]) == ["report", "reference code", *R.applicable(arch)]
    assert (df["n_models"] + df["n_diverged"] == 3).all() and df["tau"].notna().all()
    # all switches off is the main path: the report row is the study's estimator on the study's pool
    loaded = [load_model(tmp_path / "pool" / f"seed{s:04d}.pt") for s in range(3)]
    study = estimate_pool_sharpness([m for m, _ in loaded], task, sharpness_config(arch, n_restarts=2))
    row = df[df["variant"] == "report"].iloc[0]
    assert row["tau"] == pytest.approx(A._tau_stats([r.mean for r in study], [p["result"]["test_loss"] for _, p in loaded], 50)["tau"])


def test_rerun_recomputes_nothing(ablation_run: tuple[Path, pd.DataFrame], abalone: Task, monkeypatch: pytest.MonkeyPatch) -> None:
    root, first = ablation_run

    def refuse(*args, **kwargs):
        raise AssertionError("recomputed something that was on disk")

    monkeypatch.setattr(A, "estimate_pool_sharpness", refuse)
    monkeypatch.setattr("sharplib.pools.pool.train_batched", refuse)
    again = A.run_ablation("fcnn", abalone, range(5), root, **QUICK)
    assert again.drop(columns="wall_seconds").equals(first.drop(columns="wall_seconds"))


def test_cache_follows_config_and_subset(ablation_run: tuple[Path, pd.DataFrame], abalone: Task, monkeypatch: pytest.MonkeyPatch) -> None:
    root, _ = ablation_run
    calls = []
    monkeypatch.setattr(
        A, "estimate_pool_sharpness", lambda models, *a, **k: calls.append(len(models)) or estimate_pool_sharpness(models, *a, **k)
    )
    variants = [A.Variant("report", ())]
    A.run_ablation("fcnn", abalone, range(3), root, variants=variants, **QUICK)
    assert calls == []  # a subset of the cached models
    A.run_ablation("fcnn", abalone, range(5), root, variants=variants, **{**QUICK, "n_restarts": 4})
    assert calls == [5]  # another config: recomputed, the five models in one call


def test_cache_follows_the_data(ablation_run: tuple[Path, pd.DataFrame], abalone: Task, monkeypatch: pytest.MonkeyPatch) -> None:
    # The same checkpoints measured on a cut of the training set (the quick profile's train_rows) are new estimates.
    root, _ = ablation_run
    calls = []
    monkeypatch.setattr(
        A, "estimate_pool_sharpness", lambda models, *a, **k: calls.append(len(models)) or estimate_pool_sharpness(models, *a, **k)
    )
    checkpoints = {s: root / "pool" / f"seed{s:04d}.pt" for s in range(3)}
    cfg = sharpness_config("fcnn", n_restarts=QUICK["n_restarts"])
    A.cached_sharpness(checkpoints, abalone, cfg, root / "ablation_cache")
    assert calls == []  # the end-to-end run's report row
    A.cached_sharpness(checkpoints, abalone.first_train_rows(300), cfg, root / "ablation_cache")
    assert calls == [3]


def test_a_variant_that_loads_its_own_data_keeps_the_studys_cut(abalone: Task, data_root: Path, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    # A loader option (GAT's row-normalized features) loads the dataset again: it must hold the rows the study's pool trained on.
    full = load_abalone(data_root)
    monkeypatch.setattr(A, "load_task", lambda dataset, root, device, **options: full)
    monkeypatch.setattr(
        A, "setup", lambda arch, switches: dataclasses.replace(R.setup(arch, switches), data={"option": True} if switches else {})
    )
    seen = []
    monkeypatch.setattr(A, "cached_sharpness", lambda checkpoints, task, *a: seen.append(task.n_train) or
                        [{"sharpness": float(s), "frac_below": 0.0, "seconds": 0.0} for s in checkpoints])
    variants = [A.Variant("report", ()), A.Variant("swapped_bounds", ("swapped_bounds",))]
    A.run_ablation("fcnn", abalone.first_train_rows(200), range(3), tmp_path, variants=variants, train_rows=200, **QUICK)
    assert seen == [200, 200]


def test_bad_arguments_name_the_parameter(abalone: Task, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="train_mode"):
        A.run_ablation("fcnn", abalone, range(5), tmp_path, variants=[A.Variant("x", ("train_mode",))])
    with pytest.raises(ValueError, match="rhos"):
        A.rho_sweep({}, abalone, sharpness_config("fcnn"), [0.1, -1.0])


def test_study_inputs_carry_the_studys_cut(tmp_path: Path) -> None:
    from sharplib.core.stats import KendallResult
    from sharplib.experiments.study import StudyParams, write_results
    from tests.test_report import fake_table

    for arch, rows in (("lenet5", 6000), ("fcnn", None)):
        write_results(
            StudyParams(arch, profile="quick", results_dir=str(tmp_path)),
            fake_table(6, slope=1.0),
            KendallResult(0.5, 0.1, 0.1, 0.9, 6),
            {},
        )
        assert A.study_inputs(tmp_path, arch).train_rows == rows
    path = tmp_path / "lenet5" / "results.json"
    summary = json.loads(path.read_text())
    del summary["train_rows"]  # results written before the cut existed trained on every row
    path.write_text(json.dumps(summary))
    assert A.study_inputs(tmp_path, "lenet5").train_rows is None


@pytest.mark.parametrize("arch", sorted(TABLE1))
def test_default_rho_grid_spans_two_decades_around_the_report_rho(arch: str) -> None:
    grid = A.default_rho_grid(arch)
    assert len(grid) >= 5 and list(grid) == sorted(grid)
    assert any(math.isclose(r, TABLE1[arch].rho) for r in grid)
    assert grid[-1] / grid[0] >= 100 - 1e-9


def test_rho_sweep_matches_the_estimator_and_is_cached(ablation_run: tuple[Path, pd.DataFrame], abalone: Task, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    root, _ = ablation_run
    models = {s: root / "pool" / f"seed{s:04d}.pt" for s in range(5)}
    cfg, rhos = sharpness_config("fcnn", n_restarts=4), A.default_rho_grid("fcnn")[1:4]
    df = A.rho_sweep(models, abalone, cfg, rhos, cache_dir=tmp_path)
    assert len(df) == 5 * 3 * 2 and set(df.columns) >= {"seed", "rho", "adaptive", "sharpness"}
    model, _ = load_model(models[2])
    for rho in rhos:
        for adaptive in (True, False):
            expected = estimate_sharpness(model, abalone, dataclasses.replace(cfg, rho=rho, adaptive=adaptive)).mean
            got = df[(df.seed == 2) & (df.rho == rho) & (df.adaptive == adaptive)]["sharpness"].item()
            assert got == pytest.approx(expected, rel=1e-5, abs=1e-7)
    monkeypatch.setattr(A, "load_model", lambda *a, **k: pytest.fail("a cached model was loaded again"))
    assert A.rho_sweep(models, abalone, cfg, rhos, cache_dir=tmp_path).equals(df)


def test_tau_by_rho_ranks_per_rho_and_kind() -> None:
    seeds = range(8)
    test_loss = {s: float(s) for s in seeds}
    rows = [
        {"seed": s, "rho": rho, "adaptive": a, "sharpness": (s if a else -s) * rho}
        for s in seeds
        for rho in (0.1, 1.0)
        for a in (True, False)
    ]
    tau = A.tau_by_rho(pd.DataFrame(rows), test_loss, n_resamples=100)
    assert len(tau) == 4 and (tau["n_models"] == 8).all()
    assert tau.loc[tau["adaptive"], "tau"].tolist() == pytest.approx([1, 1]) and tau.loc[~tau["adaptive"], "tau"].tolist() == pytest.approx(
        [-1, -1]
    )
