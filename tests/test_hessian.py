"""Hessian measures (sharplib.panel.hessian): Lanczos and Hutchinson against the exact Hessian of a small FCNN."""
from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

from sharplib.core.functional import batch_loss, split_state
from sharplib.panel.hessian import hessian_top_eigenvalue, hessian_trace, hvp, stack_models
from sharplib.core.models import FCNN, xavier_init_
from sharplib.core.sharpness import flatten, unflatten
from sharplib.core.task import Task
from sharplib.core.train import TrainConfig, train_model

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def small_task(abalone_task: Task) -> Task:
    return dataclasses.replace(abalone_task, x_train=abalone_task.x_train[:256], y_train=abalone_task.y_train[:256])


@pytest.fixture(scope="module")
def small_models(small_task: Task) -> list[nn.Module]:
    """Three FCNNs 10 -> 8 -> 8 -> 1 (169 parameters), trained a few epochs: an exact Hessian is cheap."""
    models = []
    for seed in range(3):
        model = xavier_init_(FCNN(width=8), torch.Generator().manual_seed(seed))
        with torch.no_grad():  # nonzero biases, so their rows of H are not special
            for p in model.parameters():
                if p.dim() == 1:
                    p.normal_(0.0, 0.1, generator=torch.Generator().manual_seed(seed + 10))
        models.append(train_model(model, small_task, TrainConfig(lr=0.05, max_epochs=5, seed=seed, device="cpu"))[0])
    return models


def exact_hessian(model: nn.Module, task: Task) -> torch.Tensor:
    """∇²L_D(w) [P, P] of the mean loss over all training rows, by torch.autograd.functional.hessian."""
    params, buffers = split_state(model)
    loss = lambda flat: batch_loss(model, task, unflatten(flat, params), buffers, task.x_train, task.y_train)
    return torch.autograd.functional.hessian(loss, flatten(params))


def test_hvp_is_the_exact_hessian_times_v(small_models, small_task) -> None:
    stack = stack_models(small_models, CPU)
    v = torch.randn(stack.w.shape, generator=torch.Generator().manual_seed(0))
    products = hvp(stack, small_task, v, batch_rows=256)
    for i, model in enumerate(small_models):
        torch.testing.assert_close(products[i], exact_hessian(model, small_task) @ v[i], rtol=1e-4, atol=1e-4)
    # Chunks of rows add up to the mean over all rows: Σ_c (|c|/|D|) H_c v = H v (100 does not divide 256).
    torch.testing.assert_close(hvp(stack, small_task, v, batch_rows=100), products, rtol=1e-4, atol=1e-5)


def test_top_eigenvalue_matches_eigvalsh(small_models, small_task) -> None:
    stack = stack_models(small_models, CPU)
    top = hessian_top_eigenvalue(stack, small_task, iters=30, seed=0, batch_rows=256)
    for i, model in enumerate(small_models):
        exact = torch.linalg.eigvalsh(exact_hessian(model, small_task).double())[-1].item()
        assert abs(top.value[i].item() - exact) <= 1e-3 * abs(exact)
        # The residual bound β_k |s_k| holds and says the estimate has converged.
        assert abs(top.value[i].item() - exact) <= top.residual[i].item() + 1e-4 * abs(exact)
        assert top.residual[i].item() <= 1e-3 * abs(exact)


def test_trace_within_three_standard_errors(small_models, small_task) -> None:
    stack = stack_models(small_models, CPU)
    trace = hessian_trace(stack, small_task, n_probes=40, seed=0, batch_rows=256)
    for i, model in enumerate(small_models):
        exact = torch.trace(exact_hessian(model, small_task).double()).item()
        assert trace.stderr[i].item() > 0, "Hutchinson with ±1 probes is random unless H is diagonal"
        assert abs(trace.value[i].item() - exact) <= 3 * trace.stderr[i].item()


def test_batched_over_models_equals_one_at_a_time(small_models, small_task) -> None:
    stack = stack_models(small_models, CPU)
    top, trace = hessian_top_eigenvalue(stack, small_task, 12, 1, 256), hessian_trace(stack, small_task, 5, 1, 256)
    for i, model in enumerate(small_models):
        alone = stack_models([model], CPU)
        torch.testing.assert_close(hessian_top_eigenvalue(alone, small_task, 12, 1, 256).value[0], top.value[i], rtol=1e-5, atol=0)
        torch.testing.assert_close(hessian_trace(alone, small_task, 5, 1, 256).value[0], trace.value[i], rtol=1e-5, atol=0)


def test_lenet5_batched_equals_alone(fmnist_small: Task) -> None:
    # BatchNorm (eval, stacked running statistics) and max pooling under the double backward and vmap.
    task = dataclasses.replace(fmnist_small, x_train=fmnist_small.x_train[:32], y_train=fmnist_small.y_train[:32])
    from sharplib.core.models import build_model

    models = []
    for seed in (0, 1):
        model = build_model("lenet5", torch.Generator().manual_seed(seed))
        model.train()
        with torch.no_grad():
            model(task.x_train)  # running statistics that differ between the two models
        models.append(model.eval())
    stack = stack_models(models, CPU)
    v = torch.randn(stack.w.shape, generator=torch.Generator().manual_seed(0))
    both = hvp(stack, task, v, batch_rows=32)
    for i, model in enumerate(models):
        torch.testing.assert_close(hvp(stack_models([model], CPU), task, v[i : i + 1], batch_rows=32)[0], both[i], rtol=1e-4, atol=1e-6)
