"""The Hessian of the training loss over a stack of models: Hessian-vector products, the top eigenvalue, the trace.

    H(w) = ∇²_w L_D(w),   L_D(w) = (1/|D|) Σ_{z in D} l(w, z)

D is a fixed subset of training rows (measures.py draws it once from the seed). A `Stack` holds M models of one
architecture as flat weights w [M, P]; every function runs all M at once under `torch.func.vmap`, with the same
random vectors for every model (common random numbers), so a model's value does not depend on its stack.
λ_max(H) comes from Lanczos with full reorthogonalization (`hessian_top_eigenvalue`), tr(H) from Hutchinson's
estimator tr(H) = E_v[vᵀ H v] over Rademacher v (`hessian_trace`).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor, nn
from torch.func import grad, vmap
from ..core.notebook import tqdm  # tqdm.auto's bar, on stdout in a notebook without widgets

from ..core.functional import Params, batch_loss, split_state
from ..core.sharpness import flatten, unflatten
from ..core.task import Task


@dataclass(frozen=True)
class Stack:
    """M models of one architecture as one batch: flat weights w [M, P], buffers [M, ...], and the module that runs them."""

    template: nn.Module  # a private copy in eval mode: dropout off, BatchNorm on its running statistics
    like: Params  # one model's parameters, for their names and shapes (`unflatten`)
    w: Tensor  # [M, P]
    buffers: Params  # each [M, ...]

    @property
    def n_models(self) -> int:
        return len(self.w)


def stack_models(models: list[nn.Module], device: torch.device) -> Stack:
    """The trainable parameters and buffers of `models` stacked on `device` (the models are never touched).

    Args:
        models: M networks of one architecture.
        device: where the stack lives.

    Returns:
        Stack with w [M, P], the buffers [M, ...] and a private eval-mode copy of the first network.
    """
    states = [split_state(m) for m in models]
    like = {k: v.to(device) for k, v in states[0][0].items()}
    w = torch.stack([flatten(params) for params, _ in states]).to(device)
    buffers = {k: torch.stack([s[1][k] for s in states]).to(device) for k in states[0][1]}
    return Stack(copy.deepcopy(models[0]).eval(), like, w, buffers)


def over_models(fn: Callable, n_models: int, in_dims: tuple) -> Callable:
    """`fn` of one model (returning one tensor) mapped over the stack: one vmap, or a plain call for a single model.

    Args:
        fn: the function of one model.
        n_models: M; with M = 1 no vmap (and no vmap overhead).
        in_dims: as vmap's: 0 for an argument with one row per model, None for one shared by all.

    Returns:
        A function of the stacked arguments returning [M, ...].
    """
    if n_models > 1:
        return vmap(fn, in_dims=in_dims)

    def single(*args: Tensor | Params) -> Tensor:
        return fn(*(a if d is None else _first(a) for a, d in zip(args, in_dims))).unsqueeze(0)

    return single


def _first(arg: Tensor | Params) -> Tensor | Params:
    """The first model's row of a stacked tensor or of each tensor of a dict (buffers)."""
    return {k: v[0] for k, v in arg.items()} if isinstance(arg, dict) else arg[0]


def loss_on_rows(stack: Stack, task: Task, w: Tensor, buffers: Params, batch_rows: int) -> Tensor:
    """L_D(w) of one model over all training rows of `task`, in chunks: Σ_c (|c|/|D|) L_c(w).

    Chunks bound the memory of a forward pass (and of its double backward); the weighted sum is the mean over D.
    For a graph task the rows are training nodes, whose forward pass sees the whole graph.

    Args:
        stack: gives the module and the parameters' names and shapes.
        task: the task whose training rows are D.
        w: one model's flat weights [P].
        buffers: its buffers.
        batch_rows: rows per chunk.

    Returns:
        L_D(w), a scalar tensor.
    """
    params = unflatten(w, stack.like)
    total = 0.0
    for start in range(0, task.n_train, batch_rows):
        x, y = task.x_train[start : start + batch_rows], task.y_train[start : start + batch_rows]
        total = total + batch_loss(stack.template, task, params, buffers, x, y) * (len(x) / task.n_train)
    return total


def hvp(stack: Stack, task: Task, v: Tensor, batch_rows: int) -> Tensor:
    """H(w_i) v_i for every model i of the stack.

    Reverse-over-reverse, Hv = ∇_w <∇_w L_D(w), v> (on CPU at least as fast as forward-over-reverse for these networks).

    Args:
        stack: the models.
        task: the task whose training rows are D.
        v: one direction per model [M, P].
        batch_rows: rows per chunk of `loss_on_rows`.

    Returns:
        [M, P].
    """

    def one(w: Tensor, buffers: Params, direction: Tensor) -> Tensor:
        # Hv = ∇_w <∇_w L_D(w), v>
        inner = lambda u: torch.dot(grad(loss_on_rows, argnums=2)(stack, task, u, buffers, batch_rows), direction)
        return grad(inner)(w)

    return over_models(one, stack.n_models, (0, 0, 0))(stack.w, stack.buffers, v)


def random_vectors(count: int, n_params: int, seed: int, kind: str) -> Tensor:
    """Draws on CPU from `seed`, shared by every model (common random numbers).

    Args:
        count: how many vectors.
        n_params: P, their length.
        seed: the generator's seed.
        kind: "normal" (standard normal), else Rademacher (±1).

    Returns:
        [count, P] in the default dtype.
    """
    generator = torch.Generator().manual_seed(seed)
    if kind == "normal":
        return torch.randn(count, n_params, generator=generator)
    return torch.randint(0, 2, (count, n_params), generator=generator).mul_(2).sub_(1).to(torch.get_default_dtype())


@dataclass(frozen=True)
class TopEigenvalue:
    value: Tensor  # [M] the largest Ritz value θ_max, an estimate of λ_max(H) from below
    residual: Tensor  # [M] β_k |s_k|: some eigenvalue of H lies within this distance of θ_max


def hessian_top_eigenvalue(stack: Stack, task: Task, iters: int, seed: int, batch_rows: int, progress: bool = False) -> TopEigenvalue:
    """λ_max(H) of every model by Lanczos with full reorthogonalization, from a seeded start vector (the same for all models).

    After k = `iters` products Hq, the estimate is the largest Ritz value θ of the k x k tridiagonal matrix; the
    residual β_k |s_k| bounds |λ − θ| for some eigenvalue λ of H.

    Args:
        stack: the models.
        task: the task whose training rows are D.
        iters: k, capped at P.
        seed: the start vector's seed.
        batch_rows: rows per chunk of `loss_on_rows`.
        progress: show a progress bar.

    Returns:
        TopEigenvalue: θ_max [M] and its residual [M], on CPU.
    """
    n_params = stack.w.shape[1]
    iters = min(iters, n_params)  # a Krylov space of R^P has at most P dimensions
    q = random_vectors(1, n_params, seed, "normal").to(stack.w).expand_as(stack.w)
    q = q / torch.linalg.vector_norm(q, dim=1, keepdim=True)
    basis, alphas, betas = [q], [], []
    for _ in tqdm(range(iters), desc="Hessian λ_max (Lanczos)", disable=not progress, leave=False):
        z = hvp(stack, task, q, batch_rows)
        alphas.append((q * z).sum(1))  # α_j = q_jᵀ H q_j
        # Full reorthogonalization against every earlier q (twice is enough in floating point):
        # the three-term recurrence alone loses orthogonality and produces spurious copies of λ_max.
        for _ in range(2):
            q_all = torch.stack(basis, dim=1)  # [M, j, P]
            z = z - torch.einsum("mjp,mj->mp", q_all, torch.einsum("mjp,mp->mj", q_all, z))
        beta = torch.linalg.vector_norm(z, dim=1)
        betas.append(beta)
        q = z / beta.clamp_min(torch.finfo(z.dtype).tiny)[:, None]
        basis.append(q)
    # T = tridiag(β, α, β), in float64: k is small, and its eigenvalues are the Ritz values
    alpha, beta = torch.stack(alphas, 1).double(), torch.stack(betas, 1).double()
    t = torch.diag_embed(alpha) + torch.diag_embed(beta[:, :-1], 1) + torch.diag_embed(beta[:, :-1], -1)
    theta, s = torch.linalg.eigh(t)
    return TopEigenvalue(theta[:, -1].cpu(), (beta[:, -1] * s[:, -1, -1].abs()).cpu())


@dataclass(frozen=True)
class Trace:
    value: Tensor  # [M] (1/n) Σ_j v_jᵀ H v_j
    stderr: Tensor  # [M] sd_j(v_jᵀ H v_j) / sqrt(n); nan for a single probe


def hessian_trace(stack: Stack, task: Task, n_probes: int, seed: int, batch_rows: int, progress: bool = False) -> Trace:
    """tr(H) of every model by Hutchinson's estimator, tr(H) = E_v[vᵀ H v] over Rademacher v (the same for all models).

    Args:
        stack: the models.
        task: the task whose training rows are D.
        n_probes: how many probes v.
        seed: the probes' seed.
        batch_rows: rows per chunk of `loss_on_rows`.
        progress: show a progress bar.

    Returns:
        Trace: the mean over probes [M] and its standard error [M] (NaN for one probe), float64 on CPU.
    """
    probes = random_vectors(n_probes, stack.w.shape[1], seed, "rademacher")
    quads = []
    for v in tqdm(probes, desc="Hessian trace (Hutchinson)", disable=not progress, leave=False):
        v = v.to(stack.w).expand_as(stack.w)
        quads.append((v * hvp(stack, task, v, batch_rows)).sum(1))  # vᵀ H v
    quads = torch.stack(quads, 1).double().cpu()  # [M, n]
    stderr = quads.std(1) / n_probes**0.5 if n_probes > 1 else torch.full((len(quads),), float("nan"), dtype=torch.float64)
    return Trace(quads.mean(1), stderr)
