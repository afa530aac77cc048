"""The sharpness estimator written plainly: one restart at a time, autograd, a Python loop.

It follows the report's rule line by line and shares nothing with the batched estimator
except the random draws and the step/projection formulas' definitions of the set. It is the
oracle in the tests and the baseline in `benchmarks/sharpness.py`.
"""
from __future__ import annotations

import copy
import time

import torch
from torch import nn

from .sharpness import SharpnessConfig, SharpnessResult, draw_batches, perturbation_draws, summarize
from .task import Task


def estimate_sharpness_plain(model: nn.Module, task: Task, cfg: SharpnessConfig) -> SharpnessResult:
    """Same estimate as `estimate_sharpness`, computed restart by restart on a copy of the model."""
    start = time.perf_counter()
    net = copy.deepcopy(model).train(cfg.mode == "train")
    params = [p for p in net.parameters() if p.requires_grad]
    w = [p.detach().clone() for p in params]
    c = [wi.abs() if cfg.adaptive else torch.ones_like(wi) for wi in w]
    buffers0 = {k: b.clone() for k, b in net.named_buffers()}
    batches = draw_batches(task.n_train, cfg).to(task.device)
    names = [name for name, p in net.named_parameters() if p.requires_grad]
    draws = perturbation_draws(dict(zip(names, w)), cfg)
    torch.manual_seed(cfg.seed + 2)
    unperturbed, traces = [], []
    for r in range(cfg.n_restarts):
        x, y = task.x_train[batches[r]], task.y_train[batches[r]]

        def loss_at(delta: list[torch.Tensor]) -> torch.Tensor:
            net.load_state_dict(buffers0, strict=False)  # BatchNorm statistics never carry over
            with torch.no_grad():
                for p, wi, d in zip(params, w, delta):
                    p.copy_(wi + d)
            return task.loss_fn(task.predict(net, x), y)

        zero = [torch.zeros_like(wi) for wi in w]
        with torch.no_grad():
            loss0 = loss_at(zero).item()
        if cfg.kind == "average":
            with torch.no_grad():
                trace = [loss0] + [loss_at([ci * draws[n][r, t] for ci, n in zip(c, names)]).item() for t in range(cfg.n_steps)]
        else:
            delta = zero if draws is None else [ci * draws[n][r, 0] for ci, n in zip(c, names)]
            trace = []
            for _ in range(cfg.n_steps):
                net.zero_grad()
                loss = loss_at(delta)
                loss.backward()
                trace.append(loss.item())
                delta = _project(_update(delta, [p.grad for p in params], c, cfg), c, cfg)
            with torch.no_grad():
                trace.append(loss_at(delta).item())
        unperturbed.append(loss0)
        traces.append(trace)
    return summarize(torch.tensor(unperturbed), torch.tensor(traces), cfg, time.perf_counter() - start)


def _update(delta: list[torch.Tensor], grads: list[torch.Tensor], c: list[torch.Tensor], cfg: SharpnessConfig) -> list[torch.Tensor]:
    """The ascent step before projection, for each rule of SharpnessConfig.step and p."""
    if cfg.step == "gradient" and cfg.p == "inf":
        return [d + cfg.lr * g for d, g in zip(delta, grads)]
    if cfg.step == "gradient":
        return [d + cfg.lr * ci**2 * g for d, g, ci in zip(delta, grads, c)]
    if cfg.p == "inf":
        return [d + cfg.step_size * cfg.rho * ci * torch.sign(g) for d, g, ci in zip(delta, grads, c)]
    norm = torch.sqrt(sum(((ci * g) ** 2).sum() for g, ci in zip(grads, c)))
    return [d + cfg.step_size * cfg.rho * ci * (ci * g) / max(norm.item(), 1e-30) for d, g, ci in zip(delta, grads, c)]


def _project(delta: list[torch.Tensor], c: list[torch.Tensor], cfg: SharpnessConfig) -> list[torch.Tensor]:
    if cfg.p == "inf":
        return [torch.maximum(torch.minimum(d, cfg.rho * ci), -cfg.rho * ci) for d, ci in zip(delta, c)]
    u = [torch.where(ci > 0, d / torch.where(ci > 0, ci, 1), 0) for d, ci in zip(delta, c)]
    norm = torch.sqrt(sum((ui**2).sum() for ui in u))
    scale = min(1.0, cfg.rho / max(norm.item(), 1e-30))
    return [ci * ui * scale for ci, ui in zip(c, u)]
