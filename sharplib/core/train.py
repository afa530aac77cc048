"""Training by the report's protocol: plain SGD, batch 64, stop when the epoch loss settles.

Stopping rule: after epoch e >= max(2, min_epochs), stop when |L_e - L_{e-1}| / L_{e-1} < tol, or after
max_epochs; L_e is the mean of the minibatch losses of epoch e, and a NaN/inf L_e marks the model diverged.
With a target L* (`TrainConfig.target_loss`, models at equal training progress) the rule is instead: stop at
the first epoch e >= min_epochs with L_e <= L*, or after max_epochs.

One SGD step function serves one model and, under `vmap`, a stack of models that train together, each with
its own data order and stopping epoch. `step_rows="train_set"` and `train_mode_epochs=1` reproduce the
FCNN and LeNet-5 reference notebooks' training on the same path.
"""
from __future__ import annotations

import copy
import dataclasses
import math
import time
from dataclasses import dataclass
from functools import partial
from typing import Any, Callable

import torch
from torch import Tensor, nn
from torch.func import grad_and_value, stack_module_state, vmap

from .config import check_choice, check_device, check_number, config_from_dict
from .functional import Params, batch_loss, evaluate, split_state
from .task import Task, resolve_device

# Independent random streams derived from one model seed: init, data order, dropout.
ORDER_STREAM = 1_000_003
DROPOUT_STREAM = 2_000_003


@dataclass(frozen=True)
class TrainConfig:
    """How one model is trained. `seed` drives its init, data order and dropout."""

    lr: float
    batch_size: int = 64
    max_epochs: int = 10
    min_epochs: int = 1
    tol: float = 0.05
    weight_decay: float = 0.0
    init: str = "xavier"
    step_rows: str = "batch"  # what a step's gradient sees: "batch" (the report) or "train_set" (FCNN notebook)
    train_mode_epochs: int | None = None  # epochs in train mode, eval mode after them; None: all (the report)
    seed: int = 0
    device: str = "auto"
    target_loss: float | None = None  # L*: stop at the first epoch with L_e <= L* (max_epochs caps); None: the report's rule

    def __post_init__(self) -> None:
        check_number("TrainConfig", "lr", self.lr, minimum=0, strict=True)
        check_number("TrainConfig", "batch_size", self.batch_size, minimum=1, integer=True)
        check_number("TrainConfig", "max_epochs", self.max_epochs, minimum=1, integer=True)
        check_number("TrainConfig", "min_epochs", self.min_epochs, minimum=1, integer=True)
        check_number("TrainConfig", "tol", self.tol, minimum=0)
        check_number("TrainConfig", "weight_decay", self.weight_decay, minimum=0)
        check_number("TrainConfig", "seed", self.seed, minimum=0, integer=True)
        check_choice("TrainConfig", "init", self.init, ("xavier", "default"))
        check_choice("TrainConfig", "step_rows", self.step_rows, ("batch", "train_set"))
        if self.train_mode_epochs is not None:
            check_number("TrainConfig", "train_mode_epochs", self.train_mode_epochs, minimum=1, integer=True)
        if self.target_loss is not None:
            check_number("TrainConfig", "target_loss", self.target_loss, minimum=0, strict=True)
        if self.min_epochs > self.max_epochs:
            raise ValueError(f"TrainConfig.min_epochs ({self.min_epochs}) must not exceed max_epochs ({self.max_epochs})")
        check_device("TrainConfig", "device", self.device)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "TrainConfig":
        return config_from_dict(cls, values)


@dataclass(frozen=True)
class TrainResult:
    """What training one model produced (losses are means over the whole split, eval mode)."""

    seed: int
    epochs: int
    epoch_losses: list[float]
    train_loss: float
    test_loss: float
    train_accuracy: float | None
    test_accuracy: float | None
    diverged: bool
    seconds: float
    trained_by: str  # "sequential" or "batched": which code path trained it (dropout draws differ)
    reached_target: bool | None = None  # L_e <= cfg.target_loss at the last epoch; None: no target was set

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def should_stop(epoch_losses: list[float], cfg: TrainConfig) -> bool:
    """Whether training stops after the last epoch of `epoch_losses`.

    The report's rule: |L_e - L_{e-1}| / L_{e-1} < tol (from epoch max(2, min_epochs) on), or e = max_epochs,
    or a non-finite L_e. With a target L*: L_e <= L* (from epoch min_epochs on) replaces the relative change.

    Args:
        epoch_losses: L_1, ..., L_e, the mean minibatch loss of each epoch so far.
        cfg: the model's TrainConfig (tol, min_epochs, max_epochs, target_loss).

    Returns:
        True when the model stops now.
    """
    epoch = len(epoch_losses)
    if not math.isfinite(epoch_losses[-1]) or epoch >= cfg.max_epochs:
        return True
    if cfg.target_loss is not None:  # the target rule replaces the relative-change rule
        return epoch >= cfg.min_epochs and reached_target(epoch_losses, cfg)
    if epoch < max(2, cfg.min_epochs):
        return False
    previous, current = epoch_losses[-2], epoch_losses[-1]
    # |L_e - L_{e-1}| / L_{e-1} < tol
    return abs(current - previous) / abs(previous) < cfg.tol


def reached_target(epoch_losses: list[float], cfg: TrainConfig) -> bool | None:
    """Whether the last epoch's loss L_e is at most the target L* (cfg.target_loss).

    Args:
        epoch_losses: L_1, ..., L_e.
        cfg: the TrainConfig whose target_loss is L*.

    Returns:
        L_e <= L* (False for no epoch or a non-finite L_e); None when no target is set.
    """
    if cfg.target_loss is None:
        return None
    return bool(epoch_losses) and math.isfinite(epoch_losses[-1]) and epoch_losses[-1] <= cfg.target_loss


def sgd_step(
    model: nn.Module, task: Task, lr: float, weight_decay: float, params: Params, buffers: Params, x: Tensor, y: Tensor
) -> tuple[Params, Tensor]:
    """One plain SGD step on the batch (x, y): w <- w - lr (∇L_S(w) + λ w).

    In train mode BatchNorm updates `buffers` in place.

    Args:
        model: the network whose forward pass is run with `params` (`functional.batch_loss`).
        task: the task whose loss is used.
        lr: learning rate η.
        weight_decay: λ.
        params, buffers: the weights w and the buffers, by name.
        x, y: the batch's inputs (rows or node ids) and targets.

    Returns:
        (the updated weights, the batch loss L_S(w) before the step).
    """
    grads, loss = grad_and_value(partial(batch_loss, model, task))(params, buffers, x, y)
    # w <- w - lr (∇L_S(w) + λ w)
    return {k: w - lr * (grads[k] + weight_decay * w) for k, w in params.items()}, loss


def train_model(model: nn.Module, task: Task, cfg: TrainConfig) -> tuple[nn.Module, TrainResult]:
    """Train one model (already initialized) one epoch at a time until the stopping rule fires.

    The same seed gives bit-identical weights on CPU.

    Args:
        model: the initialized network; it is trained in place.
        task: the training data.
        cfg: how to train (learning rate, batch size, stopping rule, seed, device).

    Returns:
        (`model` itself, on cfg.device, trained and in eval mode; its TrainResult).
    """
    return train_batched([model], task, [cfg], trained_by="sequential")[0]


def train_batched(
    models: list[nn.Module],
    task: Task,
    cfgs: list[TrainConfig],
    on_done: Callable[[int, nn.Module, TrainResult], None] | None = None,
    trained_by: str = "batched",
    cuda_graph: bool | None = None,
) -> list[tuple[nn.Module, TrainResult]]:
    """Train several models of one architecture together under `vmap`.

    Each model draws its own data order; a model that meets the stopping rule leaves the stack at once.

    Args:
        models: initialized networks of one architecture; each is trained in place (moved to the device).
        task: the training data.
        cfgs: one TrainConfig per model; they may differ only in `seed`.
        on_done: called as `on_done(i, model, result)` the moment model i finishes (a pool checkpoints it there).
        trained_by: "batched" (vmap even for one model) or "sequential" (one model, no vmap); recorded in the result.
        cuda_graph: replay a stack's minibatch steps from a captured CUDA graph (`GraphedEpoch`); None: on CUDA
            when an epoch has at least GRAPH_MIN_STEPS steps (LeNet-5), where a step is launch-bound.

    Returns:
        (model, TrainResult) per model, in the order of `models`.
    """
    _check_same_except_seed(cfgs)
    cfg = cfgs[0]
    device = resolve_device(cfg.device)
    task = task.to(device)
    # The callers' models get the trained weights and are evaluated on `task` (`_finish`): they must live on its device.
    models = [m.to(device) for m in models]
    template = copy.deepcopy(models[0]).to(device)  # runs the stack; its mode is set per epoch, the callers' models keep theirs
    order_generators = [torch.Generator().manual_seed(c.seed + ORDER_STREAM) for c in cfgs]
    batched = len(models) > 1 or trained_by == "batched"
    step = partial(sgd_step, template, task, cfg.lr, cfg.weight_decay)
    if batched:
        step = vmap(step, randomness="different")
        params, buffers = (dict(d) for d in stack_module_state(models))
        params = {k: v.detach() for k, v in params.items()}
    else:
        params, buffers = split_state(template)
    use_graph = _wants_graph(cuda_graph, device, batched, task, cfg)
    graphed = GraphedEpoch(task, cfg.batch_size) if use_graph else None
    results: list[tuple[nn.Module, TrainResult] | None] = [None] * len(models)
    active = list(range(len(models)))
    losses: dict[int, list[float]] = {i: [] for i in active}
    start = time.perf_counter()
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        # Dropout draws come from the global generator (vmap has no per-model generator).
        torch.manual_seed(cfgs[0].seed + DROPOUT_STREAM if not batched else _group_seed(cfgs))
        while active:
            epoch = len(losses[active[0]])  # the stack's models have all trained the same epochs
            template.train(cfg.train_mode_epochs is None or epoch < cfg.train_mode_epochs)
            orders = torch.stack([torch.randperm(task.n_train, generator=order_generators[i]) for i in active]).to(device)
            if graphed is not None:
                params, epoch_loss = graphed.epoch(step, params, buffers, orders, template.training)
            else:
                params, epoch_loss = _eager_epoch(step, params, buffers, task, orders, cfg, batched)
            finished = []
            for slot, i in enumerate(active):
                losses[i].append(epoch_loss[slot])
                if should_stop(losses[i], cfg):
                    finished.append(slot)
            for slot in finished:
                i = active[slot]
                state = {k: (v[slot] if batched else v) for k, v in {**params, **buffers}.items()}
                seconds = (time.perf_counter() - start) / (len(models) if batched else 1)
                results[i] = _finish(models[i], state, task, cfgs[i], losses[i], seconds, trained_by)
                if on_done is not None:
                    on_done(i, *results[i])
            if finished and batched:
                keep = torch.tensor([s for s in range(len(active)) if s not in finished], dtype=torch.long, device=device)
                params = {k: v[keep] for k, v in params.items()}
                buffers = {k: v[keep] for k, v in buffers.items()}
            active = [i for s, i in enumerate(active) if s not in finished]
    return results  # type: ignore[return-value]


def _eager_epoch(
    step: Callable, params: Params, buffers: Params, task: Task, orders: Tensor, cfg: TrainConfig, batched: bool
) -> tuple[Params, list[float]]:
    """One epoch of SGD steps over the rows in `orders` ([models, n_train]); returns the weights and each model's epoch loss L_e."""
    batch_losses = []
    for idx in orders.split(cfg.batch_size, dim=1):
        if cfg.step_rows == "train_set":  # each of the ceil(n / batch_size) steps on every training row
            idx = torch.arange(task.n_train, device=orders.device).expand(len(orders), -1)
        x, y = task.x_train[idx], task.y_train[idx]
        if not batched:
            x, y = x[0], y[0]
        params, loss = step(params, buffers, x, y)
        batch_losses.append(loss)
    # L_e = mean of the epoch's minibatch losses
    return params, torch.stack(batch_losses).mean(0).reshape(-1).tolist()


GRAPH_MIN_STEPS = 64  # fewer full steps an epoch (Abalone: 52, Cora: 2) gain little from a graph


def _wants_graph(cuda_graph: bool | None, device: torch.device, batched: bool, task: Task, cfg: TrainConfig) -> bool:
    possible = device.type == "cuda" and batched and cfg.step_rows == "batch" and task.n_train // cfg.batch_size >= 1
    if cuda_graph and not possible:
        raise ValueError(
            f"cuda_graph=True needs a stack of models stepping on minibatches on CUDA (device {device}, step_rows {cfg.step_rows!r})"
        )
    return possible and (cuda_graph if cuda_graph is not None else task.n_train // cfg.batch_size >= GRAPH_MIN_STEPS)


class GraphedEpoch:
    """An epoch's full minibatches as replays of one captured CUDA graph of the vmapped SGD step.

    A stack of LeNet-5 models takes 938 steps an epoch, each hundreds of tiny kernels launched from Python.
    The graph holds one step with its inputs at fixed addresses (weights, the epoch's row orders, a step
    counter on the GPU), so a replay is one launch; the arithmetic is the eager step's. The last, shorter
    batch runs eagerly. The graph is captured again when its shapes (a model left the stack) or the
    train/eval mode change. `capture=False` runs the same bookkeeping without a graph (the CPU tests).
    """

    def __init__(self, task: Task, batch_size: int, capture: bool = True) -> None:
        self.task, self.batch_size, self.capture = task, batch_size, capture
        self.n_full = task.n_train // batch_size
        self.key: tuple | None = None

    def epoch(self, step: Callable, params: Params, buffers: Params, orders: Tensor, training: bool) -> tuple[Params, list[float]]:
        key = (tuple(orders.shape), training)
        if key != self.key:
            self._capture(step, params, buffers, orders)
            self.key = key
        for name, w in params.items():  # the stack's current weights into the graph's inputs
            if w.data_ptr() != self.params[name].data_ptr():
                self.params[name].copy_(w)
        self.orders.copy_(orders)
        self.counter.zero_()
        for _ in range(self.n_full):
            self.replay()
        tail = orders[:, self.n_full * self.batch_size :]
        if tail.shape[1]:
            new_params, loss = step(self.params, buffers, self.task.x_train[tail], self.task.y_train[tail])
            self.losses[self.n_full].copy_(loss)
            for name, w in new_params.items():
                self.params[name].copy_(w)
        # L_e = mean of the epoch's minibatch losses
        return self.params, self.losses.mean(0).tolist()

    def _one_step(self, step: Callable, buffers: Params) -> None:
        rows = self.orders.index_select(1, self.counter * self.batch_size + self.offsets)
        new_params, loss = step(self.params, buffers, self.task.x_train[rows], self.task.y_train[rows])
        for name, w in new_params.items():
            self.params[name].copy_(w)
        self.losses.index_copy_(0, self.counter.view(1), loss.view(1, -1))
        self.counter.add_(1)

    def _capture(self, step: Callable, params: Params, buffers: Params, orders: Tensor) -> None:
        device = orders.device
        n_batches = self.n_full + (orders.shape[1] % self.batch_size > 0)
        self.params = {name: w.clone() for name, w in params.items()}
        self.orders = orders.clone()
        self.counter = torch.zeros((), dtype=torch.long, device=device)
        self.offsets = torch.arange(self.batch_size, device=device)
        self.losses = torch.zeros(n_batches, orders.shape[0], device=device)
        if not self.capture:
            self.replay = partial(self._one_step, step, buffers)
            return
        # Warm-up steps (on a side stream, as capture requires) must leave no trace: weights, BatchNorm
        # statistics and the dropout generator are put back afterwards.
        saved = (
            {k: v.clone() for k, v in self.params.items()},
            {k: v.clone() for k, v in buffers.items()},
            torch.cuda.get_rng_state(device),
        )
        side = torch.cuda.Stream(device)
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(side):
            for _ in range(2):
                self._one_step(step, buffers)
        torch.cuda.current_stream(device).wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self._one_step(step, buffers)
        self.replay = self.graph.replay
        for source, target in ((saved[0], self.params), (saved[1], buffers)):
            for name, w in source.items():
                target[name].copy_(w)
        torch.cuda.set_rng_state(saved[2], device)


def _finish(
    model: nn.Module, state: Params, task: Task, cfg: TrainConfig, epoch_losses: list[float], seconds: float, trained_by: str
) -> tuple[nn.Module, TrainResult]:
    model.load_state_dict(state)
    model.eval()
    diverged = not all(math.isfinite(v) for v in epoch_losses) or not all(torch.isfinite(v).all() for v in state.values())
    train_loss, train_accuracy = evaluate(model, task, "train")
    test_loss, test_accuracy = evaluate(model, task, "test")
    result = TrainResult(
        seed=cfg.seed, epochs=len(epoch_losses), epoch_losses=epoch_losses,
        train_loss=train_loss, test_loss=test_loss, train_accuracy=train_accuracy, test_accuracy=test_accuracy,
        diverged=diverged or not math.isfinite(test_loss), seconds=seconds, trained_by=trained_by,
        reached_target=reached_target(epoch_losses, cfg),
    )
    return model, result


def _check_same_except_seed(cfgs: list[TrainConfig]) -> None:
    if not cfgs:
        raise ValueError("train_batched needs at least one model")
    first = dataclasses.replace(cfgs[0], seed=0)
    for c in cfgs[1:]:
        if dataclasses.replace(c, seed=0) != first:
            raise ValueError(f"models trained together must share their TrainConfig except the seed: {c} vs {cfgs[0]}")


def _group_seed(cfgs: list[TrainConfig]) -> int:
    # A stack's dropout draws depend on which seeds train together: a resumed pool re-forms its stacks whole
    # (pool.batched_groups), so that a model retrained after an interruption draws what it drew before.
    return (sum(c.seed * 7919 for c in cfgs) + DROPOUT_STREAM) % (2**63)
