"""Random-perturbation and norm measures (sharplib.panel.flatness) against plain loops over nn.Modules."""
from __future__ import annotations

import copy
import dataclasses
import math

import pytest
import torch
from torch import nn
from torch.nn.utils import parameters_to_vector, vector_to_parameters

from sharplib.panel.flatness import (average_sharpness, bisection_ratio, distance_from_init, fisher_rao_norm, pac_bayes_sigma,
                                     weight_norm)
from sharplib.panel.hessian import random_vectors, stack_models
from sharplib.core.models import build_model
from sharplib.experiments.protocol import train_config
from sharplib.core.task import Task
from sharplib.core.train import train_model

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def fcnn_task(abalone_task: Task) -> Task:
    return dataclasses.replace(abalone_task, x_train=abalone_task.x_train[:300], y_train=abalone_task.y_train[:300])


@pytest.fixture(scope="module")
def fcnns(abalone_task: Task) -> list[nn.Module]:
    out = []
    for seed in (0, 1):
        cfg = train_config("fcnn", max_epochs=2, seed=seed, device="cpu")
        out.append(train_model(build_model("fcnn", torch.Generator().manual_seed(seed)), abalone_task, cfg)[0])
    return out


@pytest.fixture(scope="module")
def lenet(fmnist_small: Task) -> tuple[nn.Module, Task]:
    """A LeNet-5 after one epoch on 512 images, and 48 of them as D (BatchNorm and dropout are in play)."""
    task = dataclasses.replace(fmnist_small, x_train=fmnist_small.x_train[:512], y_train=fmnist_small.y_train[:512])
    model, _ = train_model(
        build_model("lenet5", torch.Generator().manual_seed(0)), task, train_config("lenet5", max_epochs=1, seed=0, device="cpu")
    )
    return model, dataclasses.replace(task, x_train=task.x_train[:48], y_train=task.y_train[:48])


def plain_loss(model: nn.Module, flat: torch.Tensor, task: Task) -> float:
    """L_D at weights `flat`, by the nn.Module itself in eval mode."""
    probe = copy.deepcopy(model).eval()
    vector_to_parameters(flat, probe.parameters())
    with torch.no_grad():
        return task.loss_fn(probe(task.x_train), task.y_train).item()


def plain_deviation(model: nn.Module, scale: torch.Tensor, z: torch.Tensor, task: Task) -> list[float]:
    """For each draw, (L(w + s z) + L(w − s z)) / 2 − L(w), one model, one draw at a time."""
    w = parameters_to_vector(model.parameters()).detach()
    base = plain_loss(model, w, task)
    return [(plain_loss(model, w + scale * z_k, task) + plain_loss(model, w - scale * z_k, task)) / 2 - base for z_k in z]


@pytest.mark.parametrize("which", ["fcnn", "lenet5"])
def test_average_sharpness_equals_a_plain_loop_with_the_same_draws(which: str, fcnns, fcnn_task, lenet) -> None:
    models, task = (fcnns, fcnn_task) if which == "fcnn" else ([lenet[0]], lenet[1])
    rho, n_draws, seed = 0.05, 6, 7
    result = average_sharpness(stack_models(models, CPU), task, rho, n_draws, seed, batch_rows=100)
    z = random_vectors(n_draws, result_dim(models[0]), seed, "normal")
    for i, model in enumerate(models):
        w = parameters_to_vector(model.parameters()).detach()
        values = torch.tensor(plain_deviation(model, rho * w.abs(), z, task), dtype=torch.float64)
        assert result.value[i].item() == pytest.approx(values.mean().item(), rel=1e-3, abs=1e-6)
        assert result.stderr[i].item() == pytest.approx(values.std().item() / math.sqrt(n_draws), rel=1e-2, abs=1e-7)
        assert result.value[i].item() > 0, "a trained model sits near a minimum: noise should raise the loss"


def result_dim(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_pac_bayes_bisection_ends_where_the_condition_switches(fcnns, fcnn_task) -> None:
    target, eps, n_draws, steps, seed = 0.1, 1e-3, 4, 14, 3
    result = pac_bayes_sigma(stack_models(fcnns, CPU), fcnn_task, target, eps, n_draws, steps, seed, batch_rows=300)
    z = random_vectors(n_draws, result_dim(fcnns[0]), seed, "normal")
    for i, model in enumerate(fcnns):
        w = parameters_to_vector(model.parameters()).detach()
        deviation = lambda sigma: sum(plain_deviation(model, torch.sqrt(sigma**2 * w**2 + eps**2), z, fcnn_task)) / n_draws  # noqa: B023 (used in this iteration)
        sigma, upper = result.sigma[i].item(), result.upper[i].item()
        assert 1e-6 < sigma < upper < 1e2, "the condition should switch inside the range"
        assert upper / sigma == pytest.approx(bisection_ratio(steps), rel=1e-6)
        assert deviation(sigma) <= target < deviation(upper)
        assert result.deviation[i].item() == pytest.approx(deviation(sigma), rel=1e-3)


def test_pac_bayes_collapses_onto_the_range_end_when_the_condition_never_switches(fcnns, fcnn_task) -> None:
    stack = stack_models(fcnns[:1], CPU)
    huge = pac_bayes_sigma(stack, fcnn_task, target=1e30, eps=0.0, n_draws=2, steps=3, seed=0, batch_rows=300)
    assert huge.sigma.item() == huge.upper.item() == 1e2
    tiny = pac_bayes_sigma(stack, fcnn_task, target=1e-12, eps=1.0, n_draws=2, steps=3, seed=0, batch_rows=300)
    assert tiny.sigma.item() == tiny.upper.item() == 1e-6


def per_sample_fisher_rao(model: nn.Module, task: Task) -> float:
    """(1/n) Σ_i <w, ∇_w l_i>², one autograd backward per sample."""
    model = copy.deepcopy(model).eval()
    params = [p for p in model.parameters()]
    total = 0.0
    for i in range(task.n_train):
        loss = task.loss_fn(model(task.x_train[i : i + 1]), task.y_train[i : i + 1])
        grads = torch.autograd.grad(loss, params)
        total += sum((p.detach() * g).sum() for p, g in zip(params, grads)).item() ** 2
    return total / task.n_train


@pytest.mark.parametrize("which", ["fcnn", "lenet5"])
def test_fisher_rao_equals_a_per_sample_autograd_loop(which: str, fcnns, fcnn_task, lenet) -> None:
    models, task = (fcnns, dataclasses.replace(fcnn_task, x_train=fcnn_task.x_train[:64], y_train=fcnn_task.y_train[:64])) \
        if which == "fcnn" else ([lenet[0]], lenet[1])
    values = fisher_rao_norm(stack_models(models, CPU), task, batch_rows=20)  # chunks of 20 rows: 64 and 48 leave a remainder
    for i, model in enumerate(models):
        assert values[i].item() == pytest.approx(per_sample_fisher_rao(model, task), rel=1e-4)
        assert values[i].item() > 0


def test_norms_by_hand(fcnns) -> None:
    stack = stack_models(fcnns, CPU)
    init = build_model("fcnn", torch.Generator().manual_seed(0))
    w0 = parameters_to_vector(init.parameters()).detach().expand_as(stack.w)
    for i, model in enumerate(fcnns):
        by_hand = math.sqrt(sum((p.double() ** 2).sum().item() for p in model.parameters()))
        assert weight_norm(stack.w)[i].item() == pytest.approx(by_hand, rel=1e-6)
        distance = math.sqrt(sum(((p.double() - q.double()) ** 2).sum().item() for p, q in zip(model.parameters(), init.parameters())))
        assert distance_from_init(stack.w, w0)[i].item() == pytest.approx(distance, rel=1e-6)
