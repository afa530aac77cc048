"""The model as a pure function of its weights: the one code path behind training and sharpness.

`functional_call` runs an `nn.Module` with weights passed in as a dict, so the same
function serves one model, or many models / many restarts under `torch.func.vmap`.
"""
from __future__ import annotations

import contextlib
from typing import Callable, Iterator

import torch
from torch import Tensor, nn
from torch.func import functional_call

from .task import Task

Params = dict[str, Tensor]


def split_state(model: nn.Module) -> tuple[Params, Params]:
    """Detached copies of a model's trainable parameters and buffers (the model itself is never touched).

    Args:
        model: the network.

    Returns:
        (params, buffers), each a dict name -> tensor.
    """
    params = {name: p.detach().clone() for name, p in model.named_parameters() if p.requires_grad}
    buffers = {name: b.detach().clone() for name, b in model.named_buffers()}
    return params, buffers


def batch_loss(
    model: nn.Module, task: Task, params: Params, buffers: Params, x: Tensor, y: Tensor, weights: Tensor | None = None
) -> Tensor:
    """L_S(w) = (1/m) Σ_{z in S} l(w, z) on the batch S = (x, y), the model run with weights `params`.

    Args:
        model: the network whose forward pass is used (never modified).
        task: the task (its loss, and the graph for a graph task).
        params, buffers: the weights w and the buffers, by name.
        x, y: the batch's inputs (rows or node ids) and targets.
        weights: optional per-sample weights; then Σ_z weights_z l(w, z).

    Returns:
        The scalar loss.
    """
    call: Callable[..., Tensor] = lambda *inputs: functional_call(model, (params, buffers), inputs)
    return task.loss_fn(task.predict(call, x), y, weights)


@torch.no_grad()
def evaluate(model: nn.Module, task: Task, split: str = "test", chunk: int = 4096) -> tuple[float, float | None]:
    """Mean loss and accuracy over a whole split, in eval mode (the model's train/eval flag is restored).

    Args:
        model: the network.
        task: the task.
        split: "train" or "test".
        chunk: rows per forward pass (memory only; a graph task takes one pass).

    Returns:
        (mean loss, accuracy); accuracy is None for regression.
    """
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    x, y = getattr(task, f"x_{split}"), getattr(task, f"y_{split}")
    with in_mode(model, training=False):
        outputs = _predict_in_chunks(model, task, x, chunk)
    # Sum of per-sample losses over chunks divided by n = the mean over the split.
    loss = task.loss_fn(outputs, y).item()
    accuracy = (outputs.argmax(-1) == y).float().mean().item() if task.loss == "cross_entropy" else None
    return loss, accuracy


@contextlib.contextmanager
def in_mode(model: nn.Module, training: bool) -> Iterator[nn.Module]:
    """The model in train (True) or eval mode, its own flag put back afterwards, also on errors."""
    was_training = model.training
    model.train(training)
    try:
        yield model
    finally:
        model.train(was_training)


def _predict_in_chunks(model: nn.Module, task: Task, x: Tensor, chunk: int) -> Tensor:
    if task.is_graph:  # one pass over the whole graph serves every node
        return task.predict(model, x)
    return torch.cat([task.predict(model, x[i : i + chunk]) for i in range(0, len(x), chunk)])


def check_fits(model: nn.Module, task: Task) -> None:
    """Check that a model runs on the task, with one forward pass on one training sample.

    A graph model needs a graph task and a table model rows; regression needs one output per sample.
    Callers check before any work rather than fail inside it.

    Args:
        model: the network (not modified; run in eval mode).
        task: the task.

    Raises:
        ValueError: naming the model's class and the task, when it does not fit.
    """
    state = {k: v.to(task.device) for k, v in model.state_dict().items()}
    # eval mode: no dropout draw from the global generator, no BatchNorm statistics written
    try:
        with in_mode(model, training=False), torch.no_grad():
            out = task.predict(lambda *inputs: functional_call(model, state, inputs), task.x_train[:1])
        if task.loss == "mse" and out.numel() != 1:
            raise ValueError(f"it gives {out.numel()} outputs for one sample, a regression task needs 1")
        if task.loss == "cross_entropy" and out.dim() != 2:
            raise ValueError(f"it gives outputs of shape {list(out.shape)} for one sample, a classification task needs [1, classes]")
    except Exception as err:
        raise ValueError(f"model {type(model).__name__} does not fit task {task.name!r}: {type(err).__name__}: {err}") from err
