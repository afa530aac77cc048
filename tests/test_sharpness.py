"""The batched PGA estimator: equal to the plain oracle, exact where the theory is exact, safe to call."""
from __future__ import annotations

import copy
import dataclasses
import math

import pytest
import torch
from torch import nn

from sharplib.core.archs import ARCHS
from sharplib.experiments.protocol import sharpness_config
from sharplib.core.reparam import rescale
from sharplib.core.sharpness import (REFERENCE_HOOKS, SharpnessConfig, ascent_step, draw_batches, estimate_pool_sharpness,
                                     estimate_sharpness, first_occurrence_weights, project, split_weights)
from sharplib.core.sharpness_plain import estimate_sharpness_plain
from sharplib.core.task import Task



def _cfg(arch: str, **overrides) -> SharpnessConfig:
    return sharpness_config(arch, **{"device": "cpu", "n_restarts": 4, **overrides})


def _relative_change(a: float, b: float) -> float:
    return abs(a - b) / abs(a)


# ---------------------------------------------------------------- batched == plain oracle

@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("p", ["inf", 2])
@pytest.mark.parametrize("adaptive", [True, False])
def test_batched_equals_plain(arch: str, p: str | int, adaptive: bool, trained, tasks) -> None:
    # Standard sharpness at an adaptive ρ barely moves the weights; a larger ρ makes it a real ascent.
    rho = sharpness_config(arch).rho * (1 if adaptive else 10)
    cfg = _cfg(arch, p=p, adaptive=adaptive, rho=rho)
    batched = estimate_sharpness(trained[arch], tasks[arch], cfg)
    plain = estimate_sharpness_plain(trained[arch], tasks[arch], cfg)
    torch.testing.assert_close(torch.tensor(batched.values), torch.tensor(plain.values), rtol=0, atol=1e-5)
    torch.testing.assert_close(torch.tensor(batched.trace), torch.tensor(plain.trace), rtol=1e-5, atol=1e-5)
    assert max(batched.values) > 0, "the ascent should raise the loss, or this comparison proves little"


@pytest.mark.parametrize("overrides", [
    dict(step="steepest"), dict(step="steepest", p=2), dict(kind="average"), dict(kind="average", p=2),
    dict(random_start=True), dict(mode="train"),
])
def test_batched_equals_plain_for_the_other_options(overrides: dict, trained, tasks) -> None:
    cfg = _cfg("fcnn", **overrides)
    batched = estimate_sharpness(trained["fcnn"], tasks["fcnn"], cfg)
    plain = estimate_sharpness_plain(trained["fcnn"], tasks["fcnn"], cfg)
    torch.testing.assert_close(torch.tensor(batched.values), torch.tensor(plain.values), rtol=0, atol=1e-5)


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("hook", REFERENCE_HOOKS)
def test_the_notebooks_hooks_equal_the_plain_loop(arch: str, hook: str, trained, tasks) -> None:
    # Each hook of the one ascent against the plain loop, which implements it separately restart by restart.
    cfg = _cfg(arch, **{hook: True})
    batched = estimate_sharpness(trained[arch], tasks[arch], cfg)
    plain = estimate_sharpness_plain(trained[arch], tasks[arch], cfg)
    scale = max(1.0, max(abs(v) for v in plain.unperturbed))  # the train-set loss is a sum of batch means
    torch.testing.assert_close(torch.tensor(batched.values), torch.tensor(plain.values), rtol=0, atol=1e-5 * scale)
    torch.testing.assert_close(torch.tensor(batched.trace), torch.tensor(plain.trace), rtol=1e-5, atol=1e-5 * scale)
    assert batched.values != estimate_sharpness(trained[arch], tasks[arch], _cfg(arch)).values, "the hook should change something"


def test_swapped_bounds_pin_negative_weights_at_w_minus_rho_abs_w() -> None:
    w = torch.tensor([-2.0, -0.5, 0.5, 2.0])
    for pushed in (torch.full((4,), -100.0), torch.full((4,), 100.0), torch.zeros(4)):
        swapped, correct = project(pushed, w, 0.1, "inf"), project(pushed, w.abs(), 0.1, "inf")
        negative = w < 0
        assert torch.equal(swapped[negative], 0.1 * w[negative])  # w + δ = w - ρ|w|, whatever the ascent asked for
        assert torch.equal(swapped[~negative], correct[~negative])  # the same box where w >= 0


def test_collapsed_duplicates_weigh_each_distinct_sample_once() -> None:
    idx = torch.tensor([[3, 1, 3, 3], [0, 1, 2, 4]])
    weights = first_occurrence_weights(idx)
    assert torch.equal(weights, torch.tensor([[0.5, 0.5, 0.0, 0.0], [0.25, 0.25, 0.25, 0.25]]))


def test_split_weights_sum_the_batch_means_of_a_shuffled_split() -> None:
    weights = split_weights(140, 64, 3, torch.Generator().manual_seed(0))
    for row in weights:  # 64, 64 and 12 nodes: each batch's weights sum to 1, so the total is 3 batch means
        assert sorted(row.unique().tolist()) == pytest.approx([1 / 64, 1 / 12])
        assert (row == 1 / 12).sum() == 12 and row.sum().item() == pytest.approx(3.0)
    assert not torch.equal(weights[0], weights[1])


def test_hooks_need_the_notebooks_ascent() -> None:
    with pytest.raises(ValueError, match="SharpnessConfig.drifting_anchor"):
        SharpnessConfig(rho=0.1, lr=0.1, p=2, drifting_anchor=True)


def test_pool_equals_one_model_at_a_time(trained, tasks) -> None:
    models = [trained["lenet5"], rescale(trained["lenet5"], 3.0), copy.deepcopy(trained["lenet5"])]
    cfg = _cfg("lenet5")
    pooled = estimate_pool_sharpness(models, tasks["lenet5"], cfg, models_per_call=3)
    for model, result in zip(models, pooled):
        alone = estimate_sharpness(model, tasks["lenet5"], cfg)
        torch.testing.assert_close(torch.tensor(result.values), torch.tensor(alone.values), rtol=1e-5, atol=1e-6)


def test_batches_depend_only_on_the_seed() -> None:
    cfg = SharpnessConfig(rho=0.1, lr=0.1, n_restarts=7, batch_size=5, seed=3)
    idx = draw_batches(100, cfg)
    assert idx.shape == (7, 5) and torch.equal(idx, draw_batches(100, cfg))
    assert not torch.equal(idx, draw_batches(100, dataclasses.replace(cfg, seed=4)))
    assert len({tuple(row.tolist()) for row in idx}) == 7, "each restart draws a new batch"


# ---------------------------------------------------------------- exact where the theory is exact

@pytest.mark.parametrize("arch", ["fcnn", "lenet5"])
@pytest.mark.parametrize("p", ["inf", 2])
def test_steepest_adaptive_sharpness_ignores_rescaling(arch: str, p: str | int, trained, tasks) -> None:
    model, task = trained[arch], tasks[arch]
    # LeNet-5's report ρ = 1e-4 gives a sharpness near float32's resolution of the loss, and its
    # gradient lives mostly in the dense layers: a 20x larger ρ and shrinking conv1 make both
    # the invariance and the change of standard sharpness measurable.
    r, rho = (10.0, sharpness_config(arch).rho) if arch == "fcnn" else (0.1, 20 * sharpness_config(arch).rho)
    rescaled = rescale(model, r, layer=1)
    adaptive = _cfg(arch, step="steepest", p=p, n_restarts=8, rho=rho)
    before, after = estimate_sharpness(model, task, adaptive).mean, estimate_sharpness(rescaled, task, adaptive).mean
    assert before > 0 and _relative_change(before, after) < 1e-4
    standard = dataclasses.replace(adaptive, adaptive=False)
    before, after = estimate_sharpness(model, task, standard).mean, estimate_sharpness(rescaled, task, standard).mean
    assert _relative_change(before, after) > 0.10


@pytest.mark.parametrize("p", ["inf", 2])
@pytest.mark.parametrize("step", ["gradient", "steepest"])
def test_every_iterate_stays_in_the_set(p: str | int, step: str) -> None:
    gen = torch.Generator().manual_seed(0)
    w = torch.randn(3, 50, generator=gen)
    w[:, :5] = 0.0  # c = 0 pins these coordinates
    c = w.abs()
    cfg = SharpnessConfig(rho=0.05, lr=10.0, p=p, step=step, step_size=0.7)
    delta = torch.zeros_like(w)
    for _ in range(20):
        delta = ascent_step(delta, 100 * torch.randn(w.shape, generator=gen), c, cfg)
        u = torch.where(c > 0, delta / torch.where(c > 0, c, 1), 0)
        size = u.abs().amax(-1) if p == "inf" else torch.linalg.vector_norm(u, dim=-1)
        assert (size <= cfg.rho * (1 + 1e-6)).all()
        assert (delta[:, :5] == 0).all()
    assert (size >= cfg.rho * (1 - 1e-6)).all(), "large steps should end on the boundary"


def test_projection_keeps_points_inside() -> None:
    c = torch.tensor([[1.0, 2.0, 0.5]])
    inside = torch.tensor([[0.01, -0.02, 0.004]])
    assert torch.equal(project(inside, c, 0.1, "inf"), inside)
    torch.testing.assert_close(project(inside, c, 0.1, 2), inside)
    assert torch.equal(project(torch.tensor([[1.0, -1.0, 1.0]]), c, 0.1, "inf"), torch.tensor([[0.1, -0.2, 0.05]]))


@pytest.mark.parametrize("arch", ARCHS)
def test_zero_radius_gives_exactly_zero(arch: str, trained, tasks) -> None:
    result = estimate_sharpness(trained[arch], tasks[arch], _cfg(arch, rho=0.0))
    assert result.mean == 0.0 and set(result.values) == {0.0}


class SqrtOfLinear(nn.Module):
    """f(x) = sqrt(w·x + 10), so that the MSE against 0 is L_S(w) = w·mean_S(x) + 10: linear in w."""

    def __init__(self, w: torch.Tensor) -> None:
        super().__init__()
        self.w = nn.Parameter(w.clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sqrt(x @ self.w + 10.0)


@pytest.mark.parametrize("p", ["inf", 2])
def test_linear_loss_reaches_the_closed_form(p: str | int) -> None:
    gen = torch.Generator().manual_seed(1)
    x = torch.rand(200, 6, generator=gen, dtype=torch.float64)
    task = Task("linear", x, torch.zeros(200, dtype=torch.float64), x[:10], torch.zeros(10, dtype=torch.float64), loss="mse")
    w = torch.randn(6, generator=gen, dtype=torch.float64)
    cfg = SharpnessConfig(rho=0.1, p=p, step="steepest", step_size=0.3, n_restarts=5, batch_size=16, device="cpu")
    result = estimate_sharpness(SqrtOfLinear(w), task, cfg)
    # max over ||δ ⊘ c||_p <= ρ of δ·∇L = ρ ||c ⊙ ∇L||_q, q the dual exponent: 1 for p = ∞, 2 for p = 2
    grads = x[draw_batches(200, cfg)].mean(1)  # ∇L_S(w) for each restart's batch
    dual = 1 if p == "inf" else 2
    expected = cfg.rho * torch.linalg.vector_norm(w.abs() * grads, ord=dual, dim=-1)
    torch.testing.assert_close(torch.tensor(result.values, dtype=torch.float64), expected, rtol=1e-9, atol=1e-9)


def test_frac_below_counts_restarts_that_lose(trained, tasks) -> None:
    # A huge step overshoots: the report's rule can end below the start, and that is kept and counted.
    result = estimate_sharpness(trained["fcnn"], tasks["fcnn"], _cfg("fcnn", lr=50.0, rho=0.5, n_restarts=20))
    below = sum(v < 0 for v in result.values) / len(result.values)
    assert result.frac_below == below
    assert len(result.trace) == 20 and len(result.trace[0]) == 6


# ---------------------------------------------------------------- bad input, and the model left alone

@pytest.mark.parametrize("field, value", [
    ("rho", -0.1), ("n_restarts", 0), ("p", 3), ("kind", "best"), ("n_steps", 1.5),
    # Issue #12, rows 6 and 7: infinite or NaN numbers, a GPU the machine lacks; and switches of another type,
    # refused rather than converted (2.0 == 2 and 1 == True would pass a plain `in` test and hash differently).
    ("rho", math.inf), ("rho", math.nan), ("lr", math.inf), ("step_size", math.inf),
    ("p", 2.0), ("p", math.inf), ("adaptive", 1), ("random_start", 0), ("device", "cuda:99"),
])
def test_bad_config_names_the_field(field: str, value: object) -> None:
    with pytest.raises(ValueError, match=f"SharpnessConfig.{field}"):
        SharpnessConfig.from_dict({"rho": 0.1, "lr": 0.1, field: value})


def test_a_gpu_that_is_not_there_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="SharpnessConfig.device"):
        SharpnessConfig(rho=0.1, lr=0.1, device="cuda")


def test_gradient_step_needs_the_learning_rate() -> None:
    with pytest.raises(ValueError, match="lr"):
        SharpnessConfig(rho=0.1)


def test_batch_larger_than_the_training_set(trained, tasks) -> None:
    with pytest.raises(ValueError, match="batch_size = 141 .* 140 training samples"):
        estimate_sharpness(trained["gat"], tasks["gat"], _cfg("gat", batch_size=141))


# Issue #12, row 11: models of two architectures in one call, or a model on a task it cannot run on, failed deep
# inside the ascent (`FCNN has no attribute 'conv1'`, `GAT.forward() missing ... 'edge_index'`).
def test_models_of_different_architectures_are_refused(trained, tasks) -> None:
    with pytest.raises(ValueError, match="one architecture per call, got FCNN, GAT"):
        estimate_pool_sharpness([trained["fcnn"], trained["gat"]], tasks["fcnn"], _cfg("fcnn"))
    wider = nn.Sequential(nn.Linear(10, 8), nn.ReLU(), nn.Linear(8, 1))
    with pytest.raises(ValueError, match="model 1 .* other parameters or shapes"):
        estimate_pool_sharpness([nn.Sequential(nn.Linear(10, 4), nn.ReLU(), nn.Linear(4, 1)), wider], tasks["fcnn"], _cfg("fcnn"))


@pytest.mark.parametrize("arch, on", [("gat", "fcnn"), ("fcnn", "gat"), ("lenet5", "fcnn"), ("fcnn", "lenet5")])
def test_a_model_that_does_not_fit_the_task_is_refused(arch: str, on: str, trained, tasks) -> None:
    with pytest.raises(ValueError, match=f"model {type(trained[arch]).__name__} does not fit task {tasks[on].name!r}"):
        estimate_sharpness(trained[arch], tasks[on], _cfg(on))


def test_model_on_another_device_than_the_task(trained, tasks) -> None:
    elsewhere = copy.deepcopy(trained["fcnn"]).to("meta")
    with pytest.raises(ValueError, match="meta"):
        estimate_sharpness(elsewhere, tasks["fcnn"], _cfg("fcnn", device="auto"))


def _state(model: nn.Module) -> tuple:
    return ({k: v.clone() for k, v in model.state_dict().items()}, model.training, [p.requires_grad for p in model.parameters()])


def _assert_same_state(model: nn.Module, before: tuple) -> None:
    weights, training, requires_grad = before
    assert all(torch.equal(v, weights[k]) for k, v in model.state_dict().items())
    assert model.training == training and [p.requires_grad for p in model.parameters()] == requires_grad


@pytest.mark.parametrize("mode", ["eval", "train"])
def test_model_is_unchanged(mode: str, trained, tasks) -> None:
    model = copy.deepcopy(trained["lenet5"]).train()  # train mode: an estimator that leaves it in eval is caught
    model.fc3.bias.requires_grad_(False)
    before = _state(model)
    estimate_sharpness(model, tasks["lenet5"], _cfg("lenet5", mode=mode))
    _assert_same_state(model, before)


def test_model_is_unchanged_when_the_estimator_raises(trained, tasks) -> None:
    model = copy.deepcopy(trained["lenet5"]).train()
    before = _state(model)
    bad_labels = dataclasses.replace(tasks["lenet5"], y_train=tasks["lenet5"].y_train + 100)  # out of range: raises mid-ascent
    with pytest.raises((IndexError, RuntimeError)):
        estimate_sharpness(model, bad_labels, _cfg("lenet5"))
    _assert_same_state(model, before)
