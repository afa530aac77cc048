"""The measures panel (sharplib.panel.measures): its config, its columns, batched == alone, and which measures ignore rescaling."""
from __future__ import annotations

import dataclasses
import math
import re
from pathlib import Path

import pandas as pd
import pytest
import torch
from torch import nn

from sharplib.core.functional import evaluate
from sharplib.panel.measures import DIAGNOSTICS, MEASURES, MeasuresConfig, compute_panel, initial_model, measure_subset
from sharplib.pools.pool import init_model
from sharplib.experiments.protocol import train_config
from sharplib.core.reparam import rescale
from sharplib.core.sharpness import estimate_pool_sharpness
from sharplib.core.task import Task
from sharplib.core.train import TrainResult, train_batched

DOC = Path(__file__).resolve().parents[1] / "docs" / "measures.md"

# The measures a function-preserving rescaling leaves unchanged, stated here independently of MEASURES' flags.
EXPECTED_INVARIANT = {"sharpness_adaptive", "sharpness_average", "fisher_rao_norm", "train_loss", "epochs"}

# Settings small enough for 2 CPU cores; ρ large enough that every sharpness is well above float32's noise.
QUICK = dict(n_restarts=4, n_gaussian_draws=3, hessian_iters=6, n_hutchinson_probes=3, pac_bayes_steps=14, device="cpu")


def _lenet_task(fmnist_small: Task, n: int) -> Task:
    return dataclasses.replace(fmnist_small, x_train=fmnist_small.x_train[:n], y_train=fmnist_small.y_train[:n])


@pytest.fixture(scope="module")
def pools(abalone_task: Task, fmnist_small: Task) -> dict[str, tuple[list[nn.Module], list[TrainResult], Task]]:
    """Per architecture: models of seeds 0, 1, 2 trained together briefly (FCNN 2 epochs; LeNet-5 1 epoch on 512 images)."""
    out = {}
    for arch, task, epochs, n_models in (("fcnn", abalone_task, 2, 3), ("lenet5", _lenet_task(fmnist_small, 512), 1, 2)):
        cfgs = [train_config(arch, max_epochs=epochs, seed=s, device="cpu") for s in range(n_models)]
        trained = train_batched([init_model(arch, c) for c in cfgs], task, cfgs)
        out[arch] = ([m for m, _ in trained], [r for _, r in trained], task)
    return out


def _cfg(arch: str, **overrides) -> MeasuresConfig:
    # LeNet-5's average-case ρ is larger: its loss changes less per unit of relative noise, and float32 rounds the loss at ~1e-7.
    base = dict(rho=0.025, lr=0.014, rho_average=0.05, subset_rows=256) if arch == "fcnn" else \
        dict(rho=2e-3, lr=0.05, rho_average=0.1, subset_rows=24, batch_rows=16)
    return MeasuresConfig(**{**base, **QUICK, **overrides})


# ---------------------------------------------------------------- config and columns

@pytest.mark.parametrize("field, value", [
    ("rho", 0.0), ("lr", -1.0), ("n_restarts", 0), ("n_gaussian_draws", 2.0), ("hessian_iters", True), ("n_hutchinson_probes", 0),
    ("pac_bayes_target", 0.0), ("pac_bayes_eps", -1e-3), ("subset_rows", 0), ("batch_rows", "64"), ("models_per_call", 0),
    ("step", "sign"), ("init", "he"), ("seed", -1), ("device", "tpu"), ("rho_standard", float("inf")),
])
def test_config_errors_name_the_parameter(field: str, value) -> None:
    with pytest.raises(ValueError, match=rf"MeasuresConfig\.{field}"):
        MeasuresConfig(**{"rho": 0.1, "lr": 0.1, field: value})


def test_config_builds_the_studys_estimator() -> None:
    cfg = MeasuresConfig(rho=0.025, lr=0.014, rho_standard=0.5, n_restarts=7, batch_size=32, seed=3, device="cpu")
    adaptive, standard = cfg.sharpness_config(True), cfg.sharpness_config(False)
    assert (adaptive.rho, adaptive.adaptive, adaptive.lr, adaptive.n_restarts, adaptive.batch_size, adaptive.seed) == (
        0.025,
        True,
        0.014,
        7,
        32,
        3,
    )
    assert (adaptive.p, adaptive.kind, adaptive.mode, adaptive.n_steps) == ("inf", "worst", "eval", 5)
    assert (standard.rho, standard.adaptive) == (0.5, False)


def test_panel_columns_controls_and_seeds(pools) -> None:
    models, rows, task = pools["fcnn"]
    df = compute_panel(models, task, [0, 1, 2], _cfg("fcnn"), train_rows=rows, progress=False)
    assert list(df.columns) == [*MEASURES, *DIAGNOSTICS] and len(df) == 3
    assert df["train_loss"].tolist() == [r.train_loss for r in rows] and df["epochs"].tolist() == [r.epochs for r in rows]
    assert df["seed"].tolist() == [0, 1, 2]
    assert df[list(MEASURES)].notna().all().all() and (df[list(MEASURES)] > 0).all().all()
    # The rows as a table (a pool's models.csv, a grid's table) and its seed column's NumPy integers do as well.
    table = pd.DataFrame([r.as_dict() for r in rows])
    from_table = compute_panel(models, task, list(table["seed"]), _cfg("fcnn"), train_rows=table, progress=False)
    pd.testing.assert_frame_equal(from_table, df)
    # Without the pool's rows the loss is measured on the whole training set; the epochs are unknown.
    alone = compute_panel(models[:1], task, [0], _cfg("fcnn"), progress=False)
    assert alone["train_loss"].iloc[0] == pytest.approx(evaluate(models[0], task, "train")[0], rel=1e-6)
    assert alone["epochs"].isna().all()


def test_distance_from_init_rebuilds_the_pools_initial_weights(pools) -> None:
    models, rows, task = pools["fcnn"]
    for seed, model in enumerate(models):
        cfg = train_config("fcnn", seed=seed)
        rebuilt, pools_init = initial_model(model, seed, "xavier"), init_model("fcnn", cfg)
        assert all(torch.equal(a, b) for a, b in zip(rebuilt.state_dict().values(), pools_init.state_dict().values()))
    cfg = _cfg("fcnn")
    by_seed = compute_panel(models, task, [0, 1, 2], cfg, rows, progress=False)["distance_from_init"]
    by_model = [init_model("fcnn", train_config("fcnn", seed=s)) for s in range(3)]
    by_hand = [math.sqrt(sum(((p.double() - q.double()) ** 2).sum().item() for p, q in zip(m.parameters(), m0.parameters())))
               for m, m0 in zip(models, by_model)]
    assert by_seed.tolist() == pytest.approx(by_hand, rel=1e-6)
    given = compute_panel(models, task, by_model, cfg, rows, progress=False)["distance_from_init"]
    assert given.tolist() == pytest.approx(by_hand, rel=1e-6)


def test_the_subset_is_fixed_by_the_seed_and_capped(abalone_task: Task) -> None:
    a, b = measure_subset(abalone_task, 100, seed=5), measure_subset(abalone_task, 100, seed=5)
    assert a.n_train == 100 and torch.equal(a.x_train, b.x_train)
    assert not torch.equal(a.x_train, measure_subset(abalone_task, 100, seed=6).x_train)
    assert measure_subset(abalone_task, 10**6, seed=5) is abalone_task and measure_subset(abalone_task, None, seed=5) is abalone_task


def test_bad_inputs_are_refused(pools) -> None:
    models, rows, task = pools["fcnn"]
    with pytest.raises(ValueError, match="one per model"):
        compute_panel(models, task, [0, 1], _cfg("fcnn"), progress=False)
    with pytest.raises(ValueError, match="train_rows"):
        compute_panel(models, task, [0, 1, 2], _cfg("fcnn"), train_rows=rows[:2], progress=False)
    with pytest.raises(ValueError, match="one architecture"):
        compute_panel([models[0], pools["lenet5"][0][0]], task, [0, 1], _cfg("fcnn"), progress=False)


# ---------------------------------------------------------------- batched == one model at a time

@pytest.mark.parametrize("arch", ["fcnn", "lenet5"])
def test_batched_panel_equals_one_model_at_a_time(arch: str, pools) -> None:
    models, rows, task = pools[arch]
    batched = compute_panel(models, task, list(range(len(models))), _cfg(arch, models_per_call=len(models)), rows, progress=False)
    alone = compute_panel(models, task, list(range(len(models))), _cfg(arch, models_per_call=1), rows, progress=False)
    for column in [*MEASURES, *DIAGNOSTICS]:
        if column in (
            "hessian_top_eigenvalue_residual",
            "sharpness_adaptive_frac_below",
            "sharpness_standard_frac_below",
            "epochs",
            "seed",
        ):
            continue  # a residual near 0 has no relative precision; the rest are not computed in the stack
        # Float32 rounding only: vmap runs LeNet-5's convolutions as grouped ones, which sum in another order, and vᵀHv sums
        # 175 546 products of both signs (in float64 the two agree to 1e-15).
        # The sd of 3 probes' vᵀHv amplifies that rounding again.
        rtol = 1e-2 if column == "hessian_trace_stderr" else 1e-3 if column.startswith("hessian") else 2e-4
        torch.testing.assert_close(torch.tensor(batched[column].tolist()), torch.tensor(alone[column].tolist()), rtol=rtol, atol=1e-7,
                                   msg=lambda m: f"{column}: {m}")  # noqa: B023 (called in this iteration)


def test_gat_panel_on_the_graph(cora_task: Task) -> None:
    # Graph task: D is the 140 training nodes (fewer than subset_rows), every forward pass sees the whole graph.
    cfgs = [train_config("gat", min_epochs=1, max_epochs=2, seed=s, device="cpu") for s in (0, 1)]
    models = [m for m, _ in train_batched([init_model("gat", c) for c in cfgs], cora_task, cfgs)]
    cfg = MeasuresConfig(rho=0.02, lr=0.236, rho_average=0.2, **{**QUICK, "pac_bayes_steps": 8})
    batched = compute_panel(models, cora_task, [0, 1], dataclasses.replace(cfg, models_per_call=2), progress=False)
    alone = compute_panel(models, cora_task, [0, 1], dataclasses.replace(cfg, models_per_call=1), progress=False)
    measured = [m for m in MEASURES if m != "epochs"]
    assert batched[measured].notna().all().all()
    assert (batched[measured] > 0).all().all()
    for column in measured:
        torch.testing.assert_close(torch.tensor(batched[column].tolist()), torch.tensor(alone[column].tolist()), rtol=1e-3, atol=1e-7)


# ---------------------------------------------------------------- invariance to function-preserving rescalings

def _rescaled(arch: str, model: nn.Module) -> nn.Module:
    # Strong factors, so that every measure that is not invariant moves by more than a percent (ε of PAC-Bayes included).
    if arch == "fcnn":
        return rescale(model, 0.01, layer=1)
    return rescale(rescale(model, 0.1, layer=1), 0.1, layer=2)


def _relative_changes(df: pd.DataFrame) -> dict[str, float]:
    out = {}
    for name in MEASURES:
        before, after = df[name].iloc[0], df[name].iloc[1]
        out[name] = 0.0 if pd.isna(before) and pd.isna(after) else abs(after - before) / abs(before)
    return out


@pytest.mark.parametrize("arch", ["fcnn", "lenet5"])
def test_invariance_table(arch: str, pools) -> None:
    model, task = pools[arch][0][0], pools[arch][2]
    x = task.x_train[:64]
    with torch.no_grad():
        torch.testing.assert_close(_rescaled(arch, model).eval()(x), model.eval()(x), rtol=1e-4, atol=1e-4)
    # The steepest step makes the worst-case estimate exactly invariant (sharpness.py); the report's gradient step is tested below.
    df = compute_panel([model, _rescaled(arch, model)], task, [0, 0], _cfg(arch, step="steepest"), progress=False)
    change = _relative_changes(df)
    invariant = {name for name, c in change.items() if c <= 1e-4}
    changed = {name for name, c in change.items() if c > 1e-2}
    assert invariant == EXPECTED_INVARIANT, change
    assert changed == set(MEASURES) - EXPECTED_INVARIANT, change
    assert {name for name, m in MEASURES.items() if m.scale_invariant} == EXPECTED_INVARIANT


def test_pac_bayes_is_invariant_without_its_epsilon(pools) -> None:
    # ε does not scale with the weights: it is the only part of the magnitude-aware noise that breaks invariance.
    model, task = pools["fcnn"][0][0], pools["fcnn"][2]
    df = compute_panel([model, _rescaled("fcnn", model)], task, [0, 0], _cfg("fcnn", pac_bayes_eps=0.0), progress=False)
    before, after = df["pac_bayes_mag_flatness"]
    assert abs(after - before) <= 1e-4 * before


def test_the_reports_gradient_step_is_not_exactly_invariant(pools) -> None:
    # The set {|δ_i| <= ρ|w_i|} is invariant, but the step δ += η ∇L is not: the rescaled ascent takes another path.
    model, task = pools["fcnn"][0][0], pools["fcnn"][2]
    cfg = _cfg("fcnn").sharpness_config(adaptive=True)
    before, after = (r.mean for r in estimate_pool_sharpness([model, rescale(model, 10.0, layer=1)], task, cfg))
    assert abs(after - before) > 0.05 * before


def test_the_docs_table_matches_the_flags() -> None:
    rows = re.findall(r"^\| `(\w+)` \|.*\| (yes|no)\b[^|]*\|$", DOC.read_text(), flags=re.MULTILINE)
    assert [name for name, _ in rows] == list(MEASURES), "docs/measures.md lists every measure, in MEASURES' order"
    assert {name: flag == "yes" for name, flag in rows} == {name: m.scale_invariant for name, m in MEASURES.items()}
