"""The ablation runner, the ρ sweep and the paper builders (sharplib.ablation)."""
from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pandas as pd
import pytest
import torch

from sharplib import ablation as A
from sharplib import reference as R
from sharplib.data import load_abalone
from sharplib.pool import load_model
from sharplib.protocol import TABLE1, sharpness_config
from sharplib.sharpness import estimate_sharpness
from sharplib.task import Task

QUICK = dict(n_restarts=3, n_resamples=200, train_overrides={"max_epochs": 2}, progress=False)


@pytest.fixture(scope="module", autouse=True)
def _one_thread() -> None:
    # before the module-scoped fixtures below: conftest's per-test setting comes after them, and
    # small ops on 2 contended threads run tens of times slower
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def abalone(data_root: Path) -> Task:
    task = load_abalone(data_root)
    return dataclasses.replace(task, x_train=task.x_train[:384], y_train=task.y_train[:384], x_test=task.x_test[:128], y_test=task.y_test[:128])


@pytest.fixture(scope="module")
def ablation_run(abalone: Task, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, pd.DataFrame]:
    """Every default FCNN variant on 5 small models: the end-to-end run the other tests reuse."""
    root = tmp_path_factory.mktemp("fcnn")
    return root, A.run_ablation("fcnn", abalone, range(5), root, **QUICK)


def test_tiny_fcnn_ablation_end_to_end(ablation_run: tuple[Path, pd.DataFrame]) -> None:
    root, df = ablation_run
    assert list(df["variant"]) == ["report", "reference code", *R.APPLIES["fcnn"]]
    assert {"variant", "switches", "tau", "p_value", "ci_low", "ci_high", "n_models", "n_diverged", "seconds"} <= set(df.columns)
    assert (df["n_models"] + df["n_diverged"] == 5).all()
    assert df["tau"].between(-1, 1).all() and (df["ci_low"] <= df["ci_high"]).all()
    # sharpness-only variants reuse the main pool; each training change has its own
    pools = dict(zip(df["variant"], df["pool"]))
    assert pools["report"] == pools["full_set_ascent"] == pools["swapped_bounds"] == "pool"
    assert pools["elu_all_layers"] == "pool_elu_all_layers" and (root / "pool_elu_all_layers" / "variant.json").exists()
    assert pools["reference code"] == "pool_" + "+".join(sorted(R.ReferenceSwitches.notebook("fcnn").training))
    assert (df.loc[df["pool"] == "pool", "train_seconds"] == 0).all() and (df["seconds"] > 0).all()


def test_rerun_recomputes_nothing(ablation_run: tuple[Path, pd.DataFrame], abalone: Task, monkeypatch: pytest.MonkeyPatch) -> None:
    root, first = ablation_run

    def refuse(*args, **kwargs):
        raise AssertionError("recomputed something that was on disk")

    for module, name in ((A, "reference_sharpness"), (R, "train_pool"), (R, "train_reference_model")):
        monkeypatch.setattr(module, name, refuse)
    again = A.run_ablation("fcnn", abalone, range(5), root, **QUICK)
    assert again.drop(columns="wall_seconds").equals(first.drop(columns="wall_seconds"))


def test_cache_follows_config_and_subset(ablation_run: tuple[Path, pd.DataFrame], abalone: Task, monkeypatch: pytest.MonkeyPatch) -> None:
    root, _ = ablation_run
    calls = []
    monkeypatch.setattr(A, "reference_sharpness", lambda *a, **k: calls.append(1) or R.reference_sharpness(*a, **k))
    variants = [A.Variant("report", R.ReferenceSwitches())]
    A.run_ablation("fcnn", abalone, range(5), root, variants=variants, n_models=3, **QUICK)
    assert calls == []  # a subset of the cached models
    A.run_ablation("fcnn", abalone, range(5), root, variants=variants, **{**QUICK, "n_restarts": 4})
    assert len(calls) == 5  # another config: recomputed once per model


def test_bad_arguments_name_the_parameter(abalone: Task, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="n_models"):
        A.run_ablation("fcnn", abalone, range(5), tmp_path, n_models=0)
    with pytest.raises(ValueError, match="train_mode"):
        A.run_ablation("fcnn", abalone, range(5), tmp_path, variants=[A.Variant("x", R.ReferenceSwitches(train_mode=True))])
    with pytest.raises(ValueError, match="rhos"):
        A.rho_sweep({}, abalone, sharpness_config("fcnn"), [0.1, -1.0])


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
    df = A.rho_sweep(models, abalone, cfg, rhos, cache_dir=tmp_path, progress=False)
    assert len(df) == 5 * 3 * 2 and set(df.columns) >= {"seed", "rho", "adaptive", "sharpness"}
    model, _ = load_model(models[2])
    for rho in rhos:
        for adaptive in (True, False):
            expected = estimate_sharpness(model, abalone, dataclasses.replace(cfg, rho=rho, adaptive=adaptive)).mean
            got = df[(df.seed == 2) & (df.rho == rho) & (df.adaptive == adaptive)]["sharpness"].item()
            assert got == pytest.approx(expected, rel=1e-5, abs=1e-7)
    monkeypatch.setattr(A, "load_model", lambda *a, **k: pytest.fail("a cached model was loaded again"))
    assert A.rho_sweep(models, abalone, cfg, rhos, cache_dir=tmp_path, progress=False).equals(df)


def test_sweep_falls_back_to_one_call_per_rho_where_it_cannot_batch(ablation_run: tuple[Path, pd.DataFrame], abalone: Task) -> None:
    model, _ = load_model(ablation_run[0] / "pool" / "seed0000.pt")
    cfg = sharpness_config("fcnn", n_restarts=3, p=2)  # p = 2 gradient steps scale with c², not c
    combos = [(0.01, True), (0.1, False)]
    got = [r.mean for r in A.sweep_model(model, abalone, cfg, combos)]
    assert got == [estimate_sharpness(model, abalone, dataclasses.replace(cfg, rho=r, adaptive=a)).mean for r, a in combos]


def test_tau_by_rho_ranks_per_rho_and_kind() -> None:
    seeds = range(8)
    test_loss = {s: float(s) for s in seeds}
    rows = [{"seed": s, "rho": rho, "adaptive": a, "sharpness": (s if a else -s) * rho} for s in seeds for rho in (0.1, 1.0) for a in (True, False)]
    tau = A.tau_by_rho(pd.DataFrame(rows), test_loss, n_resamples=100)
    assert len(tau) == 4 and (tau["n_models"] == 8).all()
    assert tau.loc[tau["adaptive"], "tau"].tolist() == pytest.approx([1, 1]) and tau.loc[~tau["adaptive"], "tau"].tolist() == pytest.approx([-1, -1])


# ---------------------------------------------------------------- the paper's builders

def _frame(report: tuple[float, float, float], **taus: float) -> pd.DataFrame:
    rows = [{"variant": "report", "tau": report[0], "ci_low": report[1], "ci_high": report[2], "p_value": 0.01, "n_models": 50}]
    rows += [{"variant": name, "tau": tau, "ci_low": tau - 0.1, "ci_high": tau + 0.1, "p_value": 0.5, "n_models": 50} for name, tau in taus.items()]
    return pd.DataFrame(rows)


def test_paragraph_names_the_switch_that_moves_tau_and_its_direction() -> None:
    shifted = _frame((-0.31, -0.45, -0.15), **{"reference code": 0.10, "swapped_bounds": 0.05, "elu_all_layers": -0.30, "notebook_lr": -0.60})
    text = A.ablation_paragraph({"fcnn": shifted})
    assert "$\\tau = -0.31$" in text and "$[-0.45, -0.15]$" in text
    assert "swapped bounds alone raises it to $0.05$" in text and "lr 0.102 alone lowers it to $-0.60$" in text
    assert "ELU on all layers" not in text and "The other switch alone leaves $\\tau$ inside it." in text
    assert "$\\tau = 0.10$, outside the interval (raises it)" in text


def test_paragraph_says_so_when_nothing_moves_tau() -> None:
    steady = _frame((-0.18, -0.35, 0.00), **{"reference code": -0.20, "train_mode": -0.10, "full_set_ascent": math.nan})
    text = A.ablation_paragraph({"lenet5": steady})
    assert text.startswith("For LeNet-5,") and "No single switch moves $\\tau$ outside that interval." in text
    assert "inside the interval" in text and "undefined for full-set ascent" in text and "raises" not in text and "lowers" not in text


def test_table_marks_taus_outside_the_report_interval() -> None:
    tex = A.ablation_table_tex({"gat": _frame((-0.19, -0.3, -0.05), **{"reference code": 0.2, "five_restarts": -0.1})})
    assert tex.startswith("\\begin{tabular}") and tex.rstrip().endswith("\\end{tabular}") and "\\hline" in tex
    lines = tex.splitlines()
    assert any(line.startswith("GAT & report's method") for line in lines)
    assert any("reference code (all) & $0.20$$^{*}$" in line for line in lines)
    assert any("+ 5 restarts & $-0.10$ &" in line for line in lines)


def test_rho_figure_writes_both_files(tmp_path: Path) -> None:
    frame = pd.DataFrame([{"rho": r, "adaptive": a, "tau": 0.1 * r, "ci_low": -0.2, "ci_high": 0.3} for r in (0.01, 0.1, 1.0) for a in (True, False)])
    A.rho_figure({"fcnn": frame, "gat": frame}, tmp_path / "rho.pdf", tmp_path / "rho.png")
    assert (tmp_path / "rho.pdf").stat().st_size > 0 and (tmp_path / "rho.png").stat().st_size > 0
