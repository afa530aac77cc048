"""Adaptive worst-case m-sharpness, estimated by projected gradient ascent (PGA).

    S(w) = E_{S ~ P^m} max_{||δ ⊘ c||_p <= ρ} L_S(w + δ) - L_S(w),   c = |w| (adaptive) or 1

Each of `n_restarts` restarts draws a batch S of m training samples with replacement, starts at δ = 0,
takes `n_steps` ascent steps, each followed by the exact projection onto {||δ ⊘ c||_p <= ρ}, and keeps the
highest L_S(w + δ_t); the estimate is the mean over restarts of (that loss - L_S(w)), negative values kept.
The reference notebooks' deviations (REFERENCE_HOOKS) are branches of the same ascent, off by default.
`ascent` runs all restarts of one model under `vmap`; `estimate_pool_sharpness` adds a second `vmap` over models.
"""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from functools import partial
from typing import Any, Callable

import torch
from torch import Tensor, nn
from torch.func import functional_call, grad_and_value, vmap

from .config import check_choice, check_device, check_number, config_from_dict
from .functional import Params, batch_loss, check_fits, in_mode, split_state
from .task import Task, resolve_device


@dataclass(frozen=True)
class SharpnessConfig:
    """How sharpness is measured. Defaults are the report's: p = ∞, m = 64, 5 steps, 50 restarts."""

    rho: float
    lr: float | None = None  # η of the "gradient" step: the training learning rate
    p: str | int = "inf"
    adaptive: bool = True
    kind: str = "worst"
    step: str = "gradient"
    step_size: float = 0.2  # "steepest" step length, as a fraction of rho
    n_steps: int = 5
    n_restarts: int = 50
    batch_size: int = 64
    random_start: bool = False
    mode: str = "eval"
    seed: int = 0
    device: str = "auto"
    # The reference notebooks' deviations, as branches of the one ascent (False: the report's estimator).
    swapped_bounds: bool = False  # FCNN: the box [w - ρw, w + ρw], so clamp pins a negative w at w - ρ|w|
    drifting_anchor: bool = False  # LeNet-5: the box is centred where the first, unprojected step lands
    collapse_duplicates: bool = False  # GAT: a sample drawn twice into S counts once
    loss_on_train_set: bool = False  # GAT: each iterate's loss is the notebook's Σ of batch means over all training rows

    def __post_init__(self) -> None:
        name = "SharpnessConfig"
        check_number(name, "rho", self.rho, minimum=0)
        check_choice(name, "p", self.p, ("inf", 2))
        check_choice(name, "adaptive", self.adaptive, (True, False))
        check_choice(name, "kind", self.kind, ("worst", "average"))
        check_choice(name, "step", self.step, ("gradient", "steepest"))
        check_number(name, "step_size", self.step_size, minimum=0, strict=True)
        check_number(name, "n_steps", self.n_steps, minimum=1, integer=True)
        check_number(name, "n_restarts", self.n_restarts, minimum=1, integer=True)
        check_number(name, "batch_size", self.batch_size, minimum=1, integer=True)
        check_choice(name, "random_start", self.random_start, (True, False))
        check_choice(name, "mode", self.mode, ("eval", "train"))
        check_number(name, "seed", self.seed, minimum=0, integer=True)
        if self.step == "gradient" and self.kind == "worst":
            if self.lr is None:
                raise ValueError(f"{name}.lr (η, the training learning rate) is required for step='gradient'")
            check_number(name, "lr", self.lr, minimum=0, strict=True)
        for hook in REFERENCE_HOOKS:
            check_choice(name, hook, getattr(self, hook), (True, False))
            if getattr(self, hook) and (self.p, self.kind, self.step, self.random_start) != ("inf", "worst", "gradient", False):
                raise ValueError(f"{name}.{hook} is one of the notebooks' ℓ∞ gradient ascents: it needs p='inf', kind='worst', "
                                 f"step='gradient', random_start=False")
        check_device(name, "device", self.device)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "SharpnessConfig":
        return config_from_dict(cls, values)


REFERENCE_HOOKS = ("swapped_bounds", "drifting_anchor", "collapse_duplicates", "loss_on_train_set")


@dataclass(frozen=True)
class SharpnessResult:
    """One model's estimate and what it is made of (lists are per restart)."""

    mean: float  # the sharpness estimate: mean over restarts
    values: list[float]  # per restart: best perturbed loss - unperturbed loss
    unperturbed: list[float]  # L_S(w) of each restart's batch
    frac_below: float  # fraction of restarts whose best perturbed loss stayed below L_S(w)
    trace: list[list[float]]  # per restart, L_S(w + δ_t) for t = 0..n_steps
    seconds: float

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# ---------------------------------------------------------------- the constraint set and the steps
# δ, ∇L and c are flat: one row of D scalars per restart (`flatten`), so a step is a handful of
# element-wise ops on an [R, D] tensor, not one small op per parameter tensor per restart.

def flatten(tree: Params) -> Tensor:
    """The tensors of `tree` as one vector, in the dict's order.

    Args:
        tree: named tensors (a model's parameters, or δ).

    Returns:
        One flat tensor of Σ numel entries.
    """
    return torch.cat([v.reshape(-1) for v in tree.values()])


def unflatten(flat: Tensor, like: Params) -> Params:
    """The inverse of `flatten`: views of `flat` shaped as the tensors of `like`.

    Args:
        flat: a flat tensor of Σ numel entries.
        like: tensors giving the names, order and shapes.

    Returns:
        {name: view of `flat`}.
    """
    parts = flat.split([v.numel() for v in like.values()])
    return {k: part.view(v.shape) for (k, v), part in zip(like.items(), parts)}


def scale_of(w: Tensor, adaptive: bool, signed: bool = False) -> Tensor:
    """The scale c of the constraint set {||δ ⊘ c||_p <= ρ}.

    Args:
        w: the weights.
        adaptive: c = |w| if True, else c = 1 (standard sharpness).
        signed: c = w instead of |w|, the FCNN notebook's swapped bounds.

    Returns:
        c, shaped as w.
    """
    if not adaptive:
        return torch.ones_like(w)
    return w if signed else w.abs()


def _norm(rows: Tensor) -> Tensor:
    """||·||₂ of each row, as a column that broadcasts against the rows."""
    return torch.linalg.vector_norm(rows, dim=-1, keepdim=True)


def project(delta: Tensor, c: Tensor, rho: float, p: str | int) -> Tensor:
    """Exact projection of each row of δ onto {||δ ⊘ c||_p <= ρ} (coordinates with c = 0 are pinned at 0).

    Args:
        delta: δ, one row per restart [R, D].
        c: the scale c (|w| or 1), broadcastable to δ.
        rho: ρ.
        p: "inf" or 2.

    Returns:
        The projected δ [R, D].
    """
    if p == "inf":
        # |δ_i| <= ρ c_i  (with a signed c < 0, min > max and clamp returns max = ρc: the swapped bounds)
        return torch.clamp(delta, -rho * c, rho * c)
    # u = δ ⊘ c;  u <- u · min(1, ρ / ||u||₂);  δ = c ⊙ u
    u = torch.where(c > 0, delta / torch.where(c > 0, c, 1), 0)
    shrink = torch.clamp(rho / (_norm(u) + 1e-30), max=1.0)
    return c * u * shrink


def ascent_step(delta: Tensor, grad: Tensor, c: Tensor, cfg: SharpnessConfig) -> Tensor:
    """One PGA update of each row of δ followed by the projection.

    Args:
        delta: δ [R, D], one row per restart.
        grad: ∇L at w + δ [R, D].
        c: the scale (`scale_of`), broadcastable to δ.
        cfg: the estimator's settings (ρ, p, step rule, η or α).

    Returns:
        The new δ [R, D], inside the constraint set.
    """
    return project(move(delta, grad, c, cfg), c, cfg.rho, cfg.p)


# Step rules. "gradient" (the report's): p = ∞: δ <- clamp(δ + η ∇L, -ρc, ρc), η the training learning rate;
# p = 2: ascent in u = δ ⊘ c, whose gradient is c ⊙ ∇L: δ <- Proj(δ + η c² ⊙ ∇L). "steepest": a step of length
# α·ρ in u along sign(c ⊙ ∇L) (p = ∞) or c ⊙ ∇L / ||c ⊙ ∇L||₂ (p = 2).
# Only "steepest" is exactly reparametrization-invariant: if w' = w ⊙ r leaves the function unchanged, then
# ∇L(w') = ∇L(w) ⊘ r and c' = c ⊙ r, so everything written in u is the same and the iterates map by δ' = δ ⊙ r.
# The gradient step adds η ∇L(w) ⊘ r in δ-space, a step that changes with r: the path (not the set) changes.
def move(delta: Tensor, grad: Tensor, c: Tensor, cfg: SharpnessConfig) -> Tensor:
    """The PGA update of each row of δ, before the projection.

    Args:
        delta, grad, c, cfg: as for `ascent_step`.

    Returns:
        The moved δ [R, D].
    """
    if cfg.step == "gradient" and cfg.p == "inf":
        # δ <- δ + η ∇L
        moved = delta + cfg.lr * grad
    elif cfg.step == "gradient":
        # u <- u + η c ⊙ ∇L, i.e. δ <- δ + η c² ⊙ ∇L
        moved = delta + cfg.lr * c * c * grad
    elif cfg.p == "inf":
        # u <- u + αρ sign(c ⊙ ∇L), i.e. δ <- δ + αρ c ⊙ sign(∇L)
        moved = delta + cfg.step_size * cfg.rho * c * torch.sign(grad)
    else:
        # u <- u + αρ (c ⊙ ∇L) / ||c ⊙ ∇L||₂
        scaled = c * grad
        length = cfg.step_size * cfg.rho / (_norm(scaled) + 1e-30)
        moved = delta + length * c * scaled
    return moved


# ---------------------------------------------------------------- random draws (shared with the plain loop)

def draw_batches(n_train: int, cfg: SharpnessConfig) -> Tensor:
    """S ~ P^m for every restart, uniform with replacement, seeded on CPU from cfg.seed.

    Args:
        n_train: how many training rows there are to draw from.
        cfg: gives n_restarts R, the batch size m and the seed.

    Returns:
        [R, m] indices of training rows.
    """
    generator = torch.Generator().manual_seed(cfg.seed)
    return torch.randint(n_train, (cfg.n_restarts, cfg.batch_size), generator=generator)


def draw_perturbations(w: Params, cfg: SharpnessConfig, count: int) -> Params:
    """`count` uniform draws of u per restart in the ρ-ball of ||·||_p (c not applied), seeded from cfg.seed + 1.

    Args:
        w: the parameters, for names and shapes.
        cfg: gives R, ρ, p and the seed.
        count: draws per restart.

    Returns:
        {name: [R, count, *shape]}.
    """
    generator = torch.Generator().manual_seed(cfg.seed + 1)
    shape = lambda v: (cfg.n_restarts, count, *v.shape)
    if cfg.p == "inf":
        return {k: (2 * torch.rand(shape(v), generator=generator) - 1) * cfg.rho for k, v in w.items()}
    # uniform in the D-ball: a Gaussian direction, radius ρ U^(1/D)
    direction = {k: torch.randn(shape(v), generator=generator) for k, v in w.items()}
    length = torch.sqrt(sum((d * d).flatten(2).sum(-1) for d in direction.values()))
    n_dims = sum(v.numel() for v in w.values())
    radius = cfg.rho * torch.rand(cfg.n_restarts, count, generator=generator) ** (1.0 / n_dims)
    return {k: d * (radius / length).reshape(*radius.shape, *[1] * (d.dim() - 2)) for k, d in direction.items()}


def perturbation_draws(w: Params, cfg: SharpnessConfig) -> Params | None:
    """What the random parts of the estimator need beyond the batches.

    Args:
        w: the parameters, for names and shapes.
        cfg: T draws per restart for average-case sharpness, one for a random start.

    Returns:
        `draw_perturbations`' dict, or None when nothing else is random.
    """
    if cfg.kind == "average":
        return draw_perturbations(w, cfg, cfg.n_steps)
    if cfg.random_start:
        return draw_perturbations(w, cfg, 1)
    return None


def first_occurrence_weights(idx: Tensor) -> Tensor:
    """Weight 1/|unique(S)| on each sample's first occurrence in its batch S, 0 on repeats.

    Σ_i weights_i l_i is then the mean loss over the distinct samples of S, as the GAT notebook's
    boolean node mask computed it (a node drawn twice counts once).

    Args:
        idx: [R, m] batch indices (`draw_batches`).

    Returns:
        [R, m] weights, each row summing to 1.
    """
    repeat = (idx[:, :, None] == idx[:, None, :]).tril(diagonal=-1).any(-1)  # drawn earlier in the same batch
    keep = (~repeat).to(torch.get_default_dtype())
    return keep / keep.sum(dim=1, keepdim=True)


def split_weights(n_train: int, m: int, count: int, generator: torch.Generator) -> Tensor:
    """For each of `count` random splits of the training rows into batches of m, 1/|batch| per row.

    Σ_i v_i l_i is then the GAT notebook's `train(do_update=False)` loss: the sum of the batch-mean
    losses of a shuffled split (140 nodes: 64, 64 and 12).

    Args:
        n_train: n, the training rows.
        m: the batch size.
        count: how many splits.
        generator: the seeded generator of the shuffles.

    Returns:
        [count, n] weights.
    """
    sizes = torch.tensor([len(b) for b in torch.arange(n_train).split(m)])
    by_position = (1.0 / sizes).repeat_interleave(sizes)
    weights = torch.empty(count, n_train)
    for k in range(count):
        weights[k, torch.randperm(n_train, generator=generator)] = by_position
    return weights


@dataclass(frozen=True)
class Draws:
    """Everything random the estimator uses, drawn once on CPU from cfg.seed and shared by all models."""

    idx: Tensor  # S ~ P^m of each restart: [R, m] indices of training samples
    u: Tensor | None  # uniform draws in the set of u = δ ⊘ c: [R, count, D] (average case, random start)
    weights: Tensor | None  # per-sample weights of each batch [R, m] (collapsed duplicates)
    splits: Tensor | None  # [R, T + 1, n] `split_weights` of the train-set loss at δ_0 (one split for all) .. δ_T

    def to(self, device: torch.device) -> "Draws":
        return Draws(*(None if t is None else t.to(device) for t in (self.idx, self.u, self.weights, self.splits)))


def draw(n_train: int, w: Params, cfg: SharpnessConfig) -> Draws:
    """The batches S of every restart and whatever else `cfg` makes random, from cfg.seed.

    Args:
        n_train: the training rows to draw from.
        w: one model's parameters, for names and shapes.
        cfg: the estimator's settings.

    Returns:
        Draws on CPU, shared by every model.
    """
    idx = draw_batches(n_train, cfg)
    perturbations = perturbation_draws(w, cfg)
    u = None if perturbations is None else torch.cat([d.flatten(2) for d in perturbations.values()], dim=2)
    splits = None
    if cfg.loss_on_train_set:
        generator = torch.Generator().manual_seed(cfg.seed + 3)
        start = split_weights(n_train, cfg.batch_size, 1, generator).expand(cfg.n_restarts, 1, n_train)
        steps = split_weights(n_train, cfg.batch_size, cfg.n_restarts * cfg.n_steps, generator).view(cfg.n_restarts, cfg.n_steps, n_train)
        splits = torch.cat([start, steps], dim=1)
    return Draws(idx, u, first_occurrence_weights(idx) if cfg.collapse_duplicates else None, splits)


# ---------------------------------------------------------------- the batched estimator

def _over_restarts(fn: Callable, in_dims: tuple, vectorize: bool) -> Callable:
    """`fn` mapped over the restarts (dim 0 of the arguments whose in_dim is 0): one vmap, or a loop.

    The loop is for convolutional models on CPU, where vmap turns the per-restart convolutions into grouped
    ones and BatchNorm into permuted element-wise ops, slower than one restart at a time (same losses).
    """
    if vectorize:
        return vmap(fn, in_dims=in_dims, randomness="different")

    def looped(*args: Any) -> Any:
        n = len(args[0])  # args[0] is δ, one row per restart
        outs = [fn(*(a if d is None else a[r] for a, d in zip(args, in_dims))) for r in range(n)]
        if isinstance(outs[0], tuple):
            return tuple(torch.stack(parts) for parts in zip(*outs))
        return torch.stack(outs)

    return looped


def _vectorize_restarts(model: nn.Module, device: torch.device, cfg: SharpnessConfig) -> bool:
    """vmap the restarts, except for a convolutional model on CPU in eval mode (see `_over_restarts`).

    Train mode keeps vmap: a loop would draw the dropout masks in another order.
    """
    has_conv = any(isinstance(m, nn.modules.conv._ConvNd) for m in model.modules())
    return device.type != "cpu" or cfg.mode == "train" or not has_conv


def ascent(
    model: nn.Module, task: Task, cfg: SharpnessConfig, w: Params, buffers: Params, draws: Draws, vectorize: bool = True
) -> tuple[Tensor, Tensor]:
    """All restarts of one model at once.

    Worst-case: t = 0 is the start, t = 1..T follow the ascent steps. Average-case: the T entries t = 1..T
    are random perturbations in the set. The notebooks' hooks (REFERENCE_HOOKS) change the box (swapped
    bounds, drifting anchor), the batch's weights or the loss that is recorded.

    Args:
        model: the network whose forward pass is used (never modified).
        task: the task (its training rows).
        cfg: the estimator's settings (ρ, p, c, steps, hooks).
        w, buffers: the model's weights and buffers, by name.
        draws: the batches S and other random draws (`draw`).
        vectorize: vmap the restarts (else loop over them).

    Returns:
        (L_S(w) [R], the trace L_S(w + δ_t) [R, T+1]).
    """
    w_flat = flatten(w)
    c = scale_of(w_flat, cfg.adaptive, signed=cfg.swapped_bounds)
    n_restarts = len(draws.idx)
    # BatchNorm in train mode writes its running statistics: give each restart a private copy.
    restart_buffers = {k: b.expand(n_restarts, *b.shape).clone() for k, b in buffers.items()} if cfg.mode == "train" else buffers
    buffer_dim = 0 if cfg.mode == "train" else None
    batches = (restart_buffers, task.x_train[draws.idx], task.y_train[draws.idx], draws.weights)  # [R, m, ...] each
    in_dims = (0, buffer_dim, 0, 0, None if draws.weights is None else 0)

    def loss_at(delta: Tensor, buf: Params, xb: Tensor, yb: Tensor, weights: Tensor | None) -> Tensor:
        return batch_loss(model, task, unflatten(w_flat + delta, w), buf, xb, yb, weights)

    forward = _over_restarts(loss_at, in_dims, vectorize)
    zero = torch.zeros(n_restarts, len(w_flat), dtype=w_flat.dtype, device=w_flat.device)
    if cfg.kind == "average":
        unperturbed = forward(zero, *batches)
        trace = [unperturbed] + [forward(c * draws.u[:, t], *batches) for t in range(cfg.n_steps)]
        return unperturbed, torch.stack(trace, dim=1)
    # Without dropout and from δ_0 = 0, the loss of the first iterate is L_S(w): no separate forward.
    reuse_start = cfg.mode == "eval" and draws.u is None
    unperturbed = None if reuse_start else forward(zero, *batches)
    grad_and_loss = _over_restarts(grad_and_value(loss_at), in_dims, vectorize)
    delta = zero if draws.u is None else c * draws.u[:, 0]
    center, deltas, trace = torch.zeros_like(delta), [], []
    for t in range(cfg.n_steps):
        grad, loss = grad_and_loss(delta, *batches)
        trace.append(loss)
        moved = move(delta, grad, c, cfg)
        if cfg.drifting_anchor and t == 0:  # the anchor shared storage with the weights until this first projection
            center, c = moved, scale_of(w_flat + moved, cfg.adaptive)
        # δ <- centre + Proj(δ + step - centre): the box around the anchor (centre 0 but for the drifting anchor)
        delta = center + project(moved - center, c, cfg.rho, cfg.p)
        if cfg.loss_on_train_set:  # kept only where they are evaluated again: T copies of δ weigh on a stack of models
            deltas.append(delta)
    trace.append(forward(delta, *batches))
    if cfg.loss_on_train_set:
        return _train_set_trace(loss_at, task, cfg, buffers, restart_buffers, buffer_dim, zero, deltas, draws.splits, vectorize)
    return trace[0] if reuse_start else unperturbed, torch.stack(trace, dim=1)


def _train_set_trace(loss_at: Callable, task: Task, cfg: SharpnessConfig, buffers: Params, restart_buffers: Params, buffer_dim: int | None,
                     zero: Tensor, deltas: list[Tensor], splits: Tensor, vectorize: bool) -> tuple[Tensor, Tensor]:
    """The GAT notebook's record: the train-set loss (Σ of batch means, `split_weights`) at w, taken once,
    and at every iterate δ_1..δ_T of each restart."""
    on_train_set = _over_restarts(loss_at, (0, buffer_dim, None, None, 0), vectorize)
    start = loss_at(zero[0], buffers, task.x_train, task.y_train, splits[0, 0]).expand(len(zero))
    after = [on_train_set(delta, restart_buffers, task.x_train, task.y_train, splits[:, t + 1]) for t, delta in enumerate(deltas)]
    return start, torch.stack([start, *after], dim=1)


Estimator = Callable[..., tuple[Tensor, Tensor]]  # (model, task, cfg, w, buffers, *, draws, vectorize) -> (unperturbed, trace)


def summarize(unperturbed: Tensor, trace: Tensor, cfg: SharpnessConfig, seconds: float) -> SharpnessResult:
    """Per-restart values and their mean from the losses of one model.

    Args:
        unperturbed: L_S(w) per restart [R].
        trace: L_S(w + δ_t) per restart and step [R, T + 1] (t = 0 the start).
        cfg: its kind: "average" takes the mean over t = 1..T, else the max.
        seconds: the time taken, recorded as is.

    Returns:
        SharpnessResult: S (the mean over restarts), the per-restart values, the fraction below 0, the trace.
    """
    if cfg.kind == "average":
        # E_δ L_S(w + δ) - L_S(w)
        values = trace[:, 1:].mean(dim=1) - unperturbed
    else:
        # max_{t=1..T} L_S(w + δ_t) - L_S(w)
        values = trace[:, 1:].max(dim=1).values - unperturbed
    values = values.double().cpu()
    return SharpnessResult(
        mean=values.mean().item(), values=values.tolist(), unperturbed=unperturbed.double().cpu().tolist(),
        frac_below=(values < 0).double().mean().item(), trace=trace.double().cpu().tolist(), seconds=seconds,
    )


def _check_one_architecture(models: list[nn.Module]) -> None:
    """All models run through the first one's forward pass: refuse other classes or other parameter shapes."""
    classes = {type(m) for m in models}
    if len(classes) > 1:
        names = ", ".join(sorted(c.__name__ for c in classes))
        raise ValueError(f"estimate_pool_sharpness takes models of one architecture per call, got {names}: call it once per architecture")
    shapes = [{k: tuple(v.shape) for k, v in m.state_dict().items()} for m in models]
    for i, other in enumerate(shapes[1:], start=1):
        if other != shapes[0]:
            raise ValueError(
                f"model {i} ({type(models[i]).__name__}) has other parameters or shapes than model 0: "
                "one call takes models of one architecture"
            )


def _device_for(models: list[nn.Module], task: Task, cfg: SharpnessConfig) -> torch.device:
    if cfg.batch_size > task.n_train:
        raise ValueError(
            f"SharpnessConfig.batch_size = {cfg.batch_size} is larger than the {task.n_train} training samples of task {task.name!r}"
        )
    if cfg.device != "auto":
        return resolve_device(cfg.device)
    for i, model in enumerate(models):
        for name, tensor in [*model.named_parameters(), *model.named_buffers()]:
            if tensor.device != task.device:
                raise ValueError(f"model {i} has {name!r} on {tensor.device} but task {task.name!r} is on {task.device}; "
                                 f"move one of them (model.to / task.to) or set SharpnessConfig.device")
    return task.device


def receptive_field(model: nn.Module, task: Task, device: torch.device) -> Task:
    """A graph task cut down to what the outputs of its training nodes depend on (same losses, less work).

    A stack of k message-passing layers computes a node's output from its k-hop in-neighbourhood:
    keep the edges into the (k-1)-hop in-neighbourhood of the training nodes and the nodes they
    touch (GAT on Cora: 1664 of 2708 nodes, 3834 of 10556 edges).

    Args:
        model: the network, whose MessagePassing layers give k.
        task: the task; one that is not a graph is returned as is.
        device: where the cut is checked.

    Returns:
        The cut task, or the whole task where the model's outputs on the cut differ (a model that is no such stack).
    """
    if not task.is_graph:
        return task
    from torch_geometric.nn import MessagePassing  # only a graph task loads PyG

    hops = sum(isinstance(m, MessagePassing) for m in model.modules())
    if hops == 0:
        return task
    src, dst = task.edge_index
    needed = torch.zeros(len(task.node_features), dtype=torch.bool, device=task.device)
    needed[task.x_train] = True
    for _ in range(hops - 1):
        needed[src[needed[dst]]] = True  # in-neighbours of needed nodes are needed one layer earlier
    kept_edges = needed[dst]
    nodes = needed.clone()
    nodes[src[kept_edges]] = True
    ids = nodes.nonzero().squeeze(1)
    new_id = torch.full_like(nodes, -1, dtype=torch.long)
    new_id[ids] = torch.arange(len(ids), device=task.device)
    cut = dataclasses.replace(
        task, node_features=task.node_features[ids], edge_index=new_id[task.edge_index[:, kept_edges]], x_train=new_id[task.x_train],
        x_test=task.x_test[:0], y_test=task.y_test[:0],  # test nodes may lie outside the cut; sharpness never reads them
    )
    state = tuple({k: v.to(device) for k, v in d.items()} for d in split_state(model))
    call: Callable[..., Tensor] = lambda *inputs: functional_call(model, state, inputs)
    with torch.no_grad():
        same = torch.allclose(task.predict(call, task.x_train), cut.predict(call, cut.x_train), rtol=1e-5, atol=1e-6)
    return cut if same else task


def estimate_sharpness(model: nn.Module, task: Task, cfg: SharpnessConfig) -> SharpnessResult:
    """Sharpness S(w) of one model on `task` (the model is never modified).

    Args:
        model: the trained network.
        task: the task whose training rows S is drawn from.
        cfg: the estimator's settings (ρ, p, adaptive, m, steps, restarts, seed).

    Returns:
        The SharpnessResult: the estimate `mean` and its per-restart parts.
    """
    return estimate_pool_sharpness([model], task, cfg, models_per_call=1)[0]


def estimate_pool_sharpness(models: list[nn.Module], task: Task, cfg: SharpnessConfig, models_per_call: int | None = None,
                            estimator: Estimator = ascent) -> list[SharpnessResult]:
    """Sharpness S(w) of many models of one architecture, `models_per_call` of them per batched call.

    Every model sees the same batches S (common random numbers), so each estimate equals what
    `estimate_sharpness` gives the model alone.

    Args:
        models: trained networks of one architecture (never modified).
        task: the task whose training rows S is drawn from.
        cfg: the estimator's settings.
        models_per_call: models per vmapped call; None: all at once on GPU, one at a time on CPU.
        estimator: `ascent` (m-sharpness), or a function with its signature and (unperturbed, trace)
            result (the notebooks' full-set estimators, reference.py).

    Returns:
        One SharpnessResult per model, in order.
    """
    if not models:
        raise ValueError("estimate_pool_sharpness needs at least one model")
    _check_one_architecture(models)
    device = _device_for(models, task, cfg)
    task = task.to(device)
    check_fits(models[0], task)
    # An estimator that needs other random inputs than `draw`'s brings its own `draw` (reference.epoch_ascent).
    draws = getattr(estimator, "draw", draw)(task.n_train, split_state(models[0])[0], cfg).to(device)
    chunk = models_per_call or (len(models) if device.type == "cuda" else 1)
    results: list[SharpnessResult] = []
    template = models[0]
    vectorize = _vectorize_restarts(template, device, cfg)
    with in_mode(template, cfg.mode == "train"), torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        if cfg.mode == "eval":  # in train mode the dropout draws depend on the graph's size: keep it whole
            task = receptive_field(template, task, device)
        torch.manual_seed(cfg.seed + 2)  # dropout draws in mode="train"
        for start in range(0, len(models), chunk):
            group = models[start : start + chunk]
            results += _estimate_group(partial(estimator, template, task, cfg, draws=draws, vectorize=vectorize), group, cfg, device)
    return results


def _estimate_group(run: Callable[[Params, Params], tuple[Tensor, Tensor]], group: list[nn.Module], cfg: SharpnessConfig,
                    device: torch.device) -> list[SharpnessResult]:
    """`run(w, buffers)` for each model of the group: one call, or one vmap over the stacked models."""
    start = time.perf_counter()
    states = [split_state(m) for m in group]
    if len(group) == 1:
        w, buffers = ({k: v.to(device) for k, v in d.items()} for d in states[0])
        unperturbed, trace = (t.unsqueeze(0) for t in run(w, buffers))
    else:
        w = {k: torch.stack([s[0][k] for s in states]).to(device) for k in states[0][0]}
        buffers = {k: torch.stack([s[1][k] for s in states]).to(device) for k in states[0][1]}
        unperturbed, trace = vmap(run, randomness="different")(w, buffers)
    unperturbed, trace = unperturbed.cpu(), trace.cpu()  # waits for the device, so the clock below is honest
    seconds = (time.perf_counter() - start) / len(group)
    return [summarize(unperturbed[i], trace[i], cfg, seconds) for i in range(len(group))]
