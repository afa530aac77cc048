"""The model as a pure function of its weights: the one code path behind training and sharpness.

`functional_call` runs an `nn.Module` with weights passed in as a dict, so the same
function serves one model, or many models / many restarts under `torch.func.vmap`.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor, nn
from torch.func import functional_call

from .task import Task

Params = dict[str, Tensor]


def split_state(model: nn.Module) -> tuple[Params, Params]:
    """Detached copies of (trainable parameters, buffers): the model itself is never touched."""
    params = {name: p.detach().clone() for name, p in model.named_parameters() if p.requires_grad}
    buffers = {name: b.detach().clone() for name, b in model.named_buffers()}
    return params, buffers


def batch_loss(model: nn.Module, task: Task, params: Params, buffers: Params, x: Tensor, y: Tensor, weights: Tensor | None = None) -> Tensor:
    """L_S(w) = (1/m) Σ_{z in S} l(w, z) for the batch S = (x, y), the model run with weights `params`
    (Σ_z weights_z l(w, z) when per-sample weights are given)."""
    call: Callable[..., Tensor] = lambda *inputs: functional_call(model, (params, buffers), inputs)
    return task.loss_fn(task.predict(call, x), y, weights)


@torch.no_grad()
def evaluate(model: nn.Module, task: Task, split: str = "test", chunk: int = 4096) -> tuple[float, float | None]:
    """Mean loss and accuracy (None for regression) over a whole split, in eval mode.

    The model's train/eval flag is restored afterwards.
    """
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    x, y = getattr(task, f"x_{split}"), getattr(task, f"y_{split}")
    was_training = model.training
    model.eval()
    try:
        outputs = _predict_in_chunks(model, task, x, chunk)
    finally:
        model.train(was_training)
    # Sum of per-sample losses over chunks divided by n = the mean over the split.
    loss = task.loss_fn(outputs, y).item()
    accuracy = (outputs.argmax(-1) == y).float().mean().item() if task.loss == "cross_entropy" else None
    return loss, accuracy


def _predict_in_chunks(model: nn.Module, task: Task, x: Tensor, chunk: int) -> Tensor:
    if task.is_graph:  # one pass over the whole graph serves every node
        return task.predict(model, x)
    return torch.cat([task.predict(model, x[i : i + chunk]) for i in range(0, len(x), chunk)])
