"""The sharpness estimator written plainly: one restart at a time, autograd, a Python loop.

It follows the report's rule line by line (and the notebooks' hooks, REFERENCE_HOOKS) and shares nothing with the batched estimator
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
    c = [(wi if cfg.swapped_bounds else wi.abs()) if cfg.adaptive else torch.ones_like(wi) for wi in w]
    buffers0 = {k: b.clone() for k, b in net.named_buffers()}
    batches = draw_batches(task.n_train, cfg).to(task.device)
    names = [name for name, p in net.named_parameters() if p.requires_grad]
    draws = perturbation_draws(dict(zip(names, w)), cfg)
    splits = torch.Generator().manual_seed(cfg.seed + 3)  # the train-set loss's shuffles, in `draw`'s order
    torch.manual_seed(cfg.seed + 2)
    zero = [torch.zeros_like(wi) for wi in w]
    train_set_start = _train_set_loss(net, task, params, w, buffers0, zero, cfg.batch_size, splits) if cfg.loss_on_train_set else None
    unperturbed, traces = [], []
    for r in range(cfg.n_restarts):
        rows = batches[r].unique() if cfg.collapse_duplicates else batches[r]
        x, y = task.x_train[rows], task.y_train[rows]

        def loss_at(delta: list[torch.Tensor]) -> torch.Tensor:
            _load(net, params, w, buffers0, delta)
            return task.loss_fn(task.predict(net, x), y)  # noqa: B023 (called in this iteration only)

        with torch.no_grad():
            loss0 = loss_at(zero).item() if train_set_start is None else train_set_start
        if cfg.kind == "average":
            with torch.no_grad():
                trace = [loss0] + [loss_at([ci * draws[n][r, t] for ci, n in zip(c, names)]).item() for t in range(cfg.n_steps)]
        else:
            delta = zero if draws is None else [ci * draws[n][r, 0] for ci, n in zip(c, names)]
            center, box, trace, after = zero, c, [], []
            for step in range(cfg.n_steps):
                net.zero_grad()
                loss = loss_at(delta)
                loss.backward()
                trace.append(loss.item())
                moved = _update(delta, [p.grad for p in params], box, cfg)
                if cfg.drifting_anchor and step == 0:  # the box moves to where the first step landed
                    center, box = moved, [(wi + m).abs() for wi, m in zip(w, moved)]
                delta = [a + d for a, d in zip(center, _project([m - a for m, a in zip(moved, center)], box, cfg))]
                if cfg.loss_on_train_set:
                    after.append(_train_set_loss(net, task, params, w, buffers0, delta, cfg.batch_size, splits))
            with torch.no_grad():
                trace.append(loss_at(delta).item())
            if cfg.loss_on_train_set:
                trace = [train_set_start] + after
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


def _load(
    net: nn.Module, params: list[torch.Tensor], w: list[torch.Tensor], buffers0: dict[str, torch.Tensor], delta: list[torch.Tensor]
) -> None:
    """Put w + δ into the net's parameters and its original buffers back (BatchNorm statistics never carry over)."""
    net.load_state_dict(buffers0, strict=False)
    with torch.no_grad():
        for p, wi, d in zip(params, w, delta):
            p.copy_(wi + d)


@torch.no_grad()
def _train_set_loss(net: nn.Module, task: Task, params: list[torch.Tensor], w: list[torch.Tensor], buffers0: dict[str, torch.Tensor],
                    delta: list[torch.Tensor], m: int, order: torch.Generator) -> float:
    """The GAT notebook's `train(do_update=False)`: Σ over a shuffled split into batches of m of each batch's mean loss."""
    _load(net, params, w, buffers0, delta)
    total = 0.0
    for rows in torch.randperm(task.n_train, generator=order).split(m):
        rows = rows.to(task.device)
        total += task.loss_fn(task.predict(net, task.x_train[rows]), task.y_train[rows]).item()
    return total


def _project(delta: list[torch.Tensor], c: list[torch.Tensor], cfg: SharpnessConfig) -> list[torch.Tensor]:
    if cfg.p == "inf":
        # min(max(δ, -ρc), ρc), torch.clamp's order: with the swapped bounds' c < 0 it returns ρc
        return [torch.minimum(torch.maximum(d, -cfg.rho * ci), cfg.rho * ci) for d, ci in zip(delta, c)]
    u = [torch.where(ci > 0, d / torch.where(ci > 0, ci, 1), 0) for d, ci in zip(delta, c)]
    norm = torch.sqrt(sum((ui**2).sum() for ui in u))
    scale = min(1.0, cfg.rho / max(norm.item(), 1e-30))
    return [ci * ui * scale for ci, ui in zip(c, u)]
