"""The reference notebooks' procedures, as named switches on the one training and sharpness path.

The paper follows the report's text; the authors' public notebooks (github.com/HadiHammoud44/CS439_Sharpness)
computed something else, per architecture. Each difference is one row of `DEVIATIONS`: the TrainConfig
fields, network variant, data option or SharpnessConfig fields it sets (the table above DEVIATIONS lists
them). `train.train_batched` and `sharpness.ascent` take every switch as a field, so a variant runs
stacked under `vmap`, on CUDA, like the study. The notebooks' estimators that are not m-sharpness at
all (`full_set_passes`, `epoch_ascent`) follow the estimator contract of `sharpness.estimate_pool_sharpness`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn
from torch.func import grad_and_value

from ..core.archs import ARCHS
from ..core.functional import Params, batch_loss
from ..core.sharpness import Draws, SharpnessConfig, flatten, project, scale_of, unflatten
from ..core.task import Task

NOTEBOOK_FCNN_LR = 0.102  # FCNN_model.ipynb: `learning_rate = 1.02e-01`, used for training and for the ascent
FCNN_ASCENT_PASSES = 6  # `for epoch in range(nbepochs + 1)` with nbepochs = 5
LENET_ASCENT_EPOCHS = 5  # `nb_pga_epochs = 5`
GAT_RESTARTS = 5  # `nb_pga_trials = 5`


@dataclass(frozen=True)
class Deviation:
    """One switch: where it applies and what it sets on the main path."""

    label: str  # as printed in the paper's ablation table
    archs: tuple[str, ...]
    train: dict[str, Any] = field(default_factory=dict)  # TrainConfig fields
    variant: str | None = None  # models.VARIANTS entry
    data: dict[str, Any] = field(default_factory=dict)  # options of the dataset's loader
    sharpness: dict[str, Any] = field(default_factory=dict)  # SharpnessConfig fields
    full_set_ascent: bool = False  # the notebook's own estimator (full_set_passes / epoch_ascent)
    notebook: bool = True  # False: a sensitivity row, not part of what the notebook did

    @property
    def retrains(self) -> bool:
        return bool(self.train or self.variant or self.data)


# Switch (arch)                   what the notebook did (or, sensitivity rows, what else we try)
# ------------------------------  --------------------------------------------------------------------
# Training (each needs its own pool):
# default_init (all)              PyTorch's / PyG's default initialization instead of Xavier.
# elu_all_layers (fcnn)           ELU after every layer, the output included (variant "elu_output").
# full_set_steps (fcnn)           each of the ceil(n/64) SGD steps of an epoch on the whole training set.
# notebook_lr (fcnn) *            lr 0.102 (the notebook's LR-finder value) for training and ascent.
# eval_after_first_epoch (lenet5)* epochs >= 2 train in eval() mode: the per-epoch test pass called
#                                 model.eval() and never switched back (dropout off, BN frozen).
# row_normalized_features (gat) s each node's features divided by their sum (the notebook built this
#                                 transform but never applied it); the protocol's GATs stay at chance.
# input_dropout (gat) s           dropout 0.6 on the input features as well (the original GAT recipe).
# Sharpness (reuse the pool):
# full_set_ascent (fcnn, lenet5)  ascent passes over the whole training set, no m-batches, no restarts;
#                                 sharpness = full-training-set loss difference (the two estimators below).
# swapped_bounds (fcnn)           clamp(w, w0 - ρ w0, w0 + ρ w0): bounds swapped for w0 < 0.
# drifting_anchor (lenet5) *      the box is centred on the weights after the first, unprojected ascent
#                                 step (`clone_w = [p.detach() ...]` shares storage with the parameters).
# train_mode (lenet5, gat)        ascent (and GAT's losses) in train() mode: dropout on, BN updated.
# five_restarts (gat)             5 restarts instead of 50.
# collapse_duplicates (gat)       the m = 64 nodes drawn with replacement become a boolean mask.
# all_train_nodes_loss (gat)      after each step the loss is the notebook's `train(do_update=False)` on
#                                 all 140 training nodes: the sum of the batch means of a shuffled split.
#
# * not among the differences the protocol lists: found reading the notebooks themselves.
# s sensitivity rows: not part of the notebook's procedure ("reference code" leaves them off).
#
# Left as they are (too small to matter, or not reproducible here; the paper's notes list them):
# the FCNN notebook's signed stopping rule and up to 12 epochs, its lost first Abalone row and
# sklearn split; GAT's stopping check from epoch 11 instead of 10; LeNet's full-set losses as means
# of batch means; the GAT notebook's one forward pass per batch of the all-nodes loss (here one pass,
# so in train mode its three batches share a dropout draw).
DEVIATIONS: dict[str, Deviation] = {
    "default_init": Deviation("default init", ARCHS, train={"init": "default"}),
    "elu_all_layers": Deviation("ELU on all layers", ("fcnn",), variant="elu_output"),
    "full_set_steps": Deviation("full-set SGD steps", ("fcnn",), train={"step_rows": "train_set"}),
    "notebook_lr": Deviation("lr 0.102", ("fcnn",), train={"lr": NOTEBOOK_FCNN_LR}, sharpness={"lr": NOTEBOOK_FCNN_LR}),
    "eval_after_first_epoch": Deviation("eval-mode training", ("lenet5",), train={"train_mode_epochs": 1}),
    "row_normalized_features": Deviation("row-normalized features", ("gat",), data={"normalize_features": True}, notebook=False),
    "input_dropout": Deviation("input dropout", ("gat",), variant="input_dropout", notebook=False),
    "full_set_ascent": Deviation("full-set ascent", ("fcnn", "lenet5"), full_set_ascent=True),
    "swapped_bounds": Deviation("swapped bounds", ("fcnn",), sharpness={"swapped_bounds": True}),
    "drifting_anchor": Deviation("drifting anchor", ("lenet5",), sharpness={"drifting_anchor": True}),
    "train_mode": Deviation("train-mode ascent", ("lenet5", "gat"), sharpness={"mode": "train"}),
    "five_restarts": Deviation("5 restarts", ("gat",), sharpness={"n_restarts": GAT_RESTARTS}),
    "collapse_duplicates": Deviation("collapsed duplicates", ("gat",), sharpness={"collapse_duplicates": True}),
    "all_train_nodes_loss": Deviation("all-nodes loss", ("gat",), sharpness={"loss_on_train_set": True}),
}


def applicable(arch: str) -> tuple[str, ...]:
    """The switches of `arch`, in the table's order."""
    names = tuple(name for name, d in DEVIATIONS.items() if arch in d.archs)
    if not names:
        raise ValueError(f"arch must be one of fcnn, lenet5, gat, got {arch!r}")
    return names


def notebook_switches(arch: str) -> tuple[str, ...]:
    """Everything the notebook of `arch` did (the sensitivity rows left out)."""
    return tuple(name for name in applicable(arch) if DEVIATIONS[name].notebook)


@dataclass(frozen=True)
class Setup:
    """What a set of switches asks of the main path, merged."""

    train: dict[str, Any]
    variant: str
    data: dict[str, Any]
    sharpness: dict[str, Any]
    full_set_ascent: bool
    retrains: tuple[str, ...]  # the switches that change the trained models (their pool's name)


def setup(arch: str, switches: tuple[str, ...] | list[str]) -> Setup:
    """Merge the switches' settings; an unknown switch, or one that does not apply to `arch`, is named."""
    wrong = [name for name in switches if name not in applicable(arch)]
    if wrong:
        raise ValueError(f"switch(es) {wrong} do not apply to arch {arch!r}; its switches are {list(applicable(arch))}")
    chosen = [DEVIATIONS[name] for name in switches]
    return Setup(
        train={k: v for d in chosen for k, v in d.train.items()}, variant=next((d.variant for d in chosen if d.variant), "standard"),
        data={k: v for d in chosen for k, v in d.data.items()}, sharpness={k: v for d in chosen for k, v in d.sharpness.items()},
        full_set_ascent=any(d.full_set_ascent for d in chosen), retrains=tuple(sorted(n for n in switches if DEVIATIONS[n].retrains)),
    )


# ---------------------------------------------------------------- the notebooks' own estimators
# Both follow `sharpness.ascent`'s contract: one model's (w, buffers) -> (unperturbed [1], trace [1, T+1]),
# the value being max(trace[1:]) - unperturbed, so `estimate_pool_sharpness(..., estimator=...)` batches them.

def full_set_passes(model: nn.Module, task: Task, cfg: SharpnessConfig, w: Params, buffers: Params, *, n_passes: int = FCNN_ASCENT_PASSES,
                    **_: Any) -> tuple[Tensor, Tensor]:
    """FCNN notebook: `n_passes` passes of ceil(n/m) ascent steps on the whole training set, each pass
    continuing from the last; the pass with the highest sum of post-step losses is kept, and its final
    weights give the value L_train(w + δ_end) - L_train(w). Bounds as cfg says (swapped_bounds)."""
    w_flat = flatten(w)
    c = scale_of(w_flat, cfg.adaptive, signed=cfg.swapped_bounds)

    def train_loss(delta: Tensor) -> Tensor:
        return batch_loss(model, task, unflatten(w_flat + delta, w), buffers, task.x_train, task.y_train)

    delta = torch.zeros_like(w_flat)
    best_total, best = torch.tensor(-math.inf, device=w_flat.device), delta
    for _ in range(n_passes):
        after_step = []
        for _ in range(math.ceil(task.n_train / cfg.batch_size)):
            # δ <- Clamp(δ + η ∇L_train(w + δ)); the loss that comes with the gradient is the previous step's
            grad, loss = grad_and_value(train_loss)(delta)
            after_step.append(loss)
            delta = project(delta + cfg.lr * grad, c, cfg.rho, "inf")
        total = sum(after_step[1:]) + train_loss(delta)
        best_total, best = torch.where(total > best_total, total, best_total), torch.where(total > best_total, delta, best)
    start = train_loss(torch.zeros_like(w_flat))
    return start.reshape(1), torch.stack([start, train_loss(best)]).reshape(1, 2)


def epoch_ascent(model: nn.Module, task: Task, cfg: SharpnessConfig, w: Params, buffers: Params, *, draws: Draws, chunk: int = 4096,
                 **_: Any) -> tuple[Tensor, Tensor]:
    """LeNet-5 notebook: an epoch of minibatch ascent over each shuffled order of the training set in
    draws.idx (cfg.mode sets dropout/BN; in train mode the BN running statistics drift and are kept);
    after each epoch the full-training-set loss in eval mode. Value: the highest of those minus L_train(w)."""
    w_flat = flatten(w)
    c = scale_of(w_flat, cfg.adaptive)
    drifting = {k: b.clone() for k, b in buffers.items()}  # written in place by BatchNorm in train mode

    def loss_at(delta: Tensor, state: Params, rows: Tensor) -> Tensor:
        return batch_loss(model, task, unflatten(w_flat + delta, w), state, task.x_train[rows], task.y_train[rows])

    @torch.no_grad()
    def train_loss(delta: Tensor, state: Params) -> Tensor:
        model.eval()
        rows = torch.arange(task.n_train, device=w_flat.device).split(chunk)
        return sum(loss_at(delta, state, r) * len(r) for r in rows) / task.n_train

    delta = center = torch.zeros_like(w_flat)
    after_epoch = []
    for epoch, order in enumerate(draws.idx):
        for step, rows in enumerate(order.split(cfg.batch_size)):
            model.train(cfg.mode == "train")
            grad = torch.func.grad(loss_at)(delta, drifting, rows)
            moved = delta + cfg.lr * grad
            if cfg.drifting_anchor and epoch == step == 0:
                center, c = moved, scale_of(w_flat + moved, cfg.adaptive)
            # δ <- centre + Clamp(δ + η ∇L_B - centre)
            delta = center + project(moved - center, c, cfg.rho, "inf")
        after_epoch.append(train_loss(delta, drifting))
    start = train_loss(torch.zeros_like(w_flat), buffers)
    return start.reshape(1), torch.stack([start, *after_epoch]).reshape(1, -1)


def epoch_orders(n_train: int, w: Params, cfg: SharpnessConfig, n_epochs: int = LENET_ASCENT_EPOCHS) -> Draws:
    """The epochs' shuffled orders, [n_epochs, n], from cfg.seed: drawn before the models are mapped over,
    so every model sees the same ones (under vmap a random draw would differ per model)."""
    generator = torch.Generator().manual_seed(cfg.seed)
    return Draws(torch.stack([torch.randperm(n_train, generator=generator) for _ in range(n_epochs)]), None, None, None)


epoch_ascent.draw = epoch_orders  # type: ignore[attr-defined]  # estimate_pool_sharpness draws with it


def notebook_estimator(arch: str):
    """The full-set estimator of `arch`'s notebook."""
    if arch not in ("fcnn", "lenet5"):
        raise ValueError(f"full_set_ascent applies to fcnn and lenet5, not {arch!r}")
    return full_set_passes if arch == "fcnn" else epoch_ascent
