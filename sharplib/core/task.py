"""`Task`: one dataset in memory, ready for training and sharpness.

A task is a set of *samples* with targets, split into train and test, plus the training loss. For image
and tabular data a sample is a row of `x`; for a graph (Cora) a sample is a node id, and every forward pass
sees the whole graph (`node_features`, `edge_index`) before the sampled nodes' rows are picked, so training
and sharpness index batches the same way for all three architectures.

`Task.fingerprint` (SHA-256 of the task's tensors) is the data part of a pool's resume key. It is computed
from the content, not recorded by the loader, so a subset or another split never keeps a stale name.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, fields, replace
from functools import cached_property
from typing import Any, Callable, Literal

import torch
import torch.nn.functional as F
from torch import Tensor

LossName = Literal["mse", "cross_entropy"]


@dataclass(frozen=True)
class Task:
    """A dataset held as tensors.

    x_train, x_test: input rows (tabular, images) or node ids (graph tasks).
    y_train, y_test: regression targets (float, shape [n]) or class labels (long, shape [n]).
    loss: "mse" (regression) or "cross_entropy" (classification).
    node_features, edge_index: the whole graph, for graph tasks only.
    """

    name: str
    x_train: Tensor
    y_train: Tensor
    x_test: Tensor
    y_test: Tensor
    loss: LossName
    node_features: Tensor | None = None
    edge_index: Tensor | None = None

    def __post_init__(self) -> None:
        if self.loss not in ("mse", "cross_entropy"):
            raise ValueError(f"Task {self.name!r}: loss must be 'mse' or 'cross_entropy', got {self.loss!r}")
        for split in ("train", "test"):
            x, y = getattr(self, f"x_{split}"), getattr(self, f"y_{split}")
            if len(x) != len(y):
                raise ValueError(f"Task {self.name!r}: x_{split} has {len(x)} rows but y_{split} has {len(y)}")
        if (self.node_features is None) != (self.edge_index is None):
            raise ValueError(f"Task {self.name!r}: a graph task needs both node_features and edge_index")

    @cached_property
    def fingerprint(self) -> str:
        """SHA-256 of the name, the loss and every tensor (dtype, shape, bytes): equal only for the same data."""
        digest = hashlib.sha256(f"{self.name}:{self.loss};".encode())
        hash_tensors(digest, {f.name: getattr(self, f.name) for f in fields(self) if isinstance(getattr(self, f.name), Tensor)})
        return digest.hexdigest()

    @property
    def is_graph(self) -> bool:
        return self.edge_index is not None

    @property
    def n_train(self) -> int:
        return len(self.x_train)

    @property
    def device(self) -> torch.device:
        return self.x_train.device

    def to(self, device: str | torch.device) -> "Task":
        """A copy of the task with every tensor on `device`."""
        moved = {f.name: getattr(self, f.name).to(device) for f in fields(self) if isinstance(getattr(self, f.name), Tensor)}
        copy = replace(self, **moved)
        if "fingerprint" in self.__dict__:  # same content: keep the hash (a pool's workers get the task this way)
            copy.__dict__["fingerprint"] = self.fingerprint
        return copy

    def first_train_rows(self, n: int | None) -> "Task":
        """A task holding only the first `n` training rows (the test split whole).

        A new Task, so its fingerprint is that of the rows it holds. For a graph task the rows are node ids
        and the graph stays whole.

        Args:
            n: how many training rows to keep (1 to n_train), or None.

        Returns:
            The cut task; this task itself when n is None.
        """
        if n is None:
            return self
        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= self.n_train:
            raise ValueError(f"Task {self.name!r}: train_rows must be an integer from 1 to its {self.n_train} training rows, got {n!r}")
        return replace(self, x_train=self.x_train[:n], y_train=self.y_train[:n])

    def predict(self, call: Callable[..., Tensor], x: Tensor) -> Tensor:
        """Outputs of the network `call` for the samples `x`.

        Args:
            call: the network's forward pass (a module, or a function of its inputs).
            x: rows, or node ids of the graph (then `call` sees the whole graph).

        Returns:
            One output row per sample of `x`.
        """
        if self.is_graph:
            return call(self.node_features, self.edge_index)[x]
        return call(x)

    def loss_fn(self, outputs: Tensor, targets: Tensor, weights: Tensor | None = None) -> Tensor:
        """Loss over a batch: MSE for regression, cross-entropy for classification.

        Args:
            outputs: the network's outputs for the batch.
            targets: the batch's targets.
            weights: optional per-sample weights w_i.

        Returns:
            The mean loss (1/m) Σ_i l_i, or Σ_i w_i l_i when `weights` are given.
        """
        reduction = "mean" if weights is None else "none"
        if self.loss == "mse":
            losses = F.mse_loss(outputs.squeeze(-1), targets, reduction=reduction)
        else:
            losses = F.cross_entropy(outputs, targets, reduction=reduction)
        return losses if weights is None else (weights * losses).sum()


def hash_tensors(digest: Any, tensors: dict[str, Tensor]) -> None:
    """Feed each tensor's name, dtype, shape and bytes into a hash, in the dict's order.

    Args:
        digest: a hashlib object (updated in place).
        tensors: the tensors by name.
    """
    for name, tensor in tensors.items():
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)};".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy())


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """The torch device a config's `device` names, checked against this machine.

    Checked where configs are built, so a missing GPU is reported with the parameter that asked for it
    rather than later by torch.

    Args:
        device: "auto" (CUDA when available, else CPU), "cpu", "cuda" or "cuda:N".

    Returns:
        The device.

    Raises:
        ValueError: for another name, or a device this machine does not have.
    """
    if isinstance(device, str) and device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {device!r}") from err
    if resolved.type not in ("cpu", "cuda"):
        raise ValueError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {device!r}")
    if resolved.type == "cpu" and resolved.index not in (None, 0):  # torch accepts 'cpu:3' and runs on the one CPU device
        raise ValueError(f"device {device!r} does not exist: the CPU is one device, 'cpu'")
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} asked for, but this machine has no usable CUDA device (torch.cuda.is_available() is False)")
    if resolved.type == "cuda" and resolved.index is not None and resolved.index >= torch.cuda.device_count():
        raise ValueError(
            f"device {device!r} does not exist: this machine has {torch.cuda.device_count()} CUDA device(s), "
            f"cuda:0 to cuda:{torch.cuda.device_count() - 1}"
        )
    return resolved
