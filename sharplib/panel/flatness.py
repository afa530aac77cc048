"""Flatness measures of a stack of models that perturb the weights at random or look along them.

All run on the fixed subset D of training rows (a `Task` whose training rows are D, see measures.py), in eval
mode, for M models at once under vmap (hessian.Stack), with the same random draws for every model:

- adaptive average-case sharpness   E_{δ ~ N(0, ρ² diag(|w|²))} [L_D(w + δ)] − L_D(w)
- magnitude-aware PAC-Bayes σ'       the largest σ' with E_u[L_D(w + u)] − L_D(w) <= target, u_i ~ N(0, σ'² w_i² + ε²)
- Fisher–Rao norm                    (1/|D|) Σ_{z in D} <w, ∇_w l(w, z)>²
- ℓ2 norm and distance from initialization, ||w||₂ and ||w − w₀||₂
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.func import jvp, vmap
from ..core.notebook import tqdm  # tqdm.auto's bar, on stdout in a notebook without widgets

from ..core.functional import Params, batch_loss
from .hessian import Stack, random_vectors, loss_on_rows, over_models
from ..core.sharpness import unflatten
from ..core.task import Task

SIGMA_RANGE = (1e-6, 1e2)  # where the PAC-Bayes bisection looks for σ' (geometric bisection: any scale is as close)


def losses_at(stack: Stack, task: Task, w: Tensor, batch_rows: int) -> Tensor:
    """L_D(w_i) of every model i at weights w (with the stack's buffers), without gradients.

    Args:
        stack: the models.
        task: the task whose training rows are D.
        w: weights [M, P], one row per model.
        batch_rows: rows per chunk of `hessian.loss_on_rows`.

    Returns:
        [M].
    """
    run = lambda u, buffers: loss_on_rows(stack, task, u, buffers, batch_rows)
    with torch.no_grad():
        return over_models(run, stack.n_models, (0, 0))(w, stack.buffers)


def mirrored_deviation(
    stack: Stack, task: Task, scale: Tensor, z: Tensor, batch_rows: int, base: Tensor, progress: str | None = None
) -> Tensor:
    """[M, K]: for each draw z_k, (L_D(w + s ⊙ z_k) + L_D(w − s ⊙ z_k)) / 2 − L_D(w).

    Each draw is averaged with its mirror −z (antithetic pairs): E[L(w + δ)] is unchanged, as δ and −δ are
    equally likely, and the first-order term ∇Lᵀδ, which dominates the noise of a plain Monte-Carlo mean at
    small ρ, cancels exactly.

    Args:
        stack, task: the models and the task whose training rows are D.
        scale: s [M, P], the per-weight scale of the draws.
        z: [K, P] draws, shared by every model.
        batch_rows: rows per forward pass.
        base: L_D(w) [M].
        progress: a progress bar's label, or None for no bar.

    Returns:
        [M, K] tensor of mirrored loss deviations.
    """
    columns = []
    for z_k in tqdm(z, desc=progress, disable=progress is None, leave=False):
        delta = scale * z_k.to(scale)
        columns.append(
            (losses_at(stack, task, stack.w + delta, batch_rows) + losses_at(stack, task, stack.w - delta, batch_rows)) / 2 - base
        )
    return torch.stack(columns, 1)


@dataclass(frozen=True)
class AverageSharpness:
    value: Tensor  # [M] the Monte-Carlo mean over the K mirrored draws
    stderr: Tensor  # [M] its standard error: sd over the draws / sqrt(K)


def average_sharpness(
    stack: Stack, task: Task, rho: float, n_draws: int, seed: int, batch_rows: int, progress: bool = False
) -> AverageSharpness:
    """Adaptive average-case sharpness E_{δ ~ N(0, ρ² diag(|w|²))}[L_D(w + δ)] − L_D(w), δ = ρ |w| ⊙ z, z ~ N(0, I).

    Args:
        stack: the models.
        task: the task whose training rows are D.
        rho: ρ.
        n_draws: K, mirrored draws z (`mirrored_deviation`).
        seed: the draws' seed.
        batch_rows: rows per forward pass.
        progress: show a progress bar.

    Returns:
        AverageSharpness: the mean over the K draws [M] and its standard error [M] (NaN for K = 1), float64 on CPU.
    """
    z = random_vectors(n_draws, stack.w.shape[1], seed, "normal")
    base = losses_at(stack, task, stack.w, batch_rows)
    values = (
        mirrored_deviation(stack, task, rho * stack.w.abs(), z, batch_rows, base, "average-case sharpness" if progress else None)
        .double()
        .cpu()
    )
    stderr = values.std(1) / n_draws**0.5 if n_draws > 1 else torch.full((len(values),), float("nan"), dtype=torch.float64)
    return AverageSharpness(values.mean(1), stderr)


def pac_bayes_deviation(stack: Stack, task: Task, sigma: Tensor, eps: float, z: Tensor, batch_rows: int, base: Tensor) -> Tensor:
    """E_u[L_D(w + u)] − L_D(w) of every model, u = sqrt(σ'² w² + ε²) ⊙ z over the mirrored draws z.

    Args:
        stack, task: the models and the task whose training rows are D.
        sigma: σ' [M], one per model.
        eps: ε.
        z: the draws [K, P].
        batch_rows: rows per forward pass.
        base: L_D(w) [M].

    Returns:
        [M].
    """
    scale = torch.sqrt(sigma.to(stack.w)[:, None] ** 2 * stack.w**2 + eps**2)
    return mirrored_deviation(stack, task, scale, z, batch_rows, base).mean(1)


@dataclass(frozen=True)
class PacBayesSigma:
    sigma: Tensor  # [M] σ', the largest σ found with deviation <= target (SIGMA_RANGE's end when the condition never switches)
    upper: Tensor  # [M] the bracket's other end: the smallest σ found with deviation > target (= sigma at a range end)
    deviation: Tensor  # [M] E_u[L_D(w + u)] − L_D(w) at σ'


def pac_bayes_sigma(stack: Stack, task: Task, target: float, eps: float, n_draws: int, steps: int, seed: int, batch_rows: int,
                    progress: bool = False) -> PacBayesSigma:
    """Bisection (geometric, in SIGMA_RANGE) for the largest σ' with E_u[L_D(w + u)] − L_D(w) <= target, u_i ~ N(0, σ'² w_i² + ε²).

    Jiang et al. (2020), "Fantastic generalization measures", §C magnitude-aware PAC-Bayes: the same draws z at every
    step, so the deviation is a smooth function of σ' and the bisection ends where it crosses the target.

    Args:
        stack, task: the models and the task whose training rows are D.
        target: the allowed deviation of the loss.
        eps: ε.
        n_draws: K, mirrored draws z.
        steps: bisection steps (`bisection_ratio` gives the final bracket's width).
        seed: the draws' seed.
        batch_rows: rows per forward pass.
        progress: show a progress bar.

    Returns:
        PacBayesSigma: σ' [M], the bracket's upper end [M], and the deviation at σ' [M].
    """
    z = random_vectors(n_draws, stack.w.shape[1], seed, "normal")
    base = losses_at(stack, task, stack.w, batch_rows)
    deviation = lambda s: pac_bayes_deviation(stack, task, s, eps, z, batch_rows, base)
    n = stack.n_models
    lo, hi = (torch.full((n,), s, dtype=torch.float64) for s in SIGMA_RANGE)
    dev_lo, dev_hi = deviation(lo).cpu(), deviation(hi).cpu()
    # Where the condition does not switch inside the range, the bracket collapses onto the range's end.
    lo = torch.where(dev_hi <= target, hi, lo)
    hi = torch.where(dev_lo > target, lo, hi)
    dev_at = torch.where(dev_hi <= target, dev_hi, dev_lo)
    for _ in tqdm(range(steps), desc="PAC-Bayes σ' (bisection)", disable=not progress, leave=False):
        mid = torch.sqrt(lo * hi)
        dev_mid = deviation(mid).cpu()
        ok = dev_mid <= target
        lo, hi, dev_at = torch.where(ok, mid, lo), torch.where(ok, hi, mid), torch.where(ok, dev_mid, dev_at)
    return PacBayesSigma(lo, hi, dev_at.double())


def per_sample_losses(stack: Stack, task: Task, w: Tensor, buffers: Params, x: Tensor, y: Tensor) -> Tensor:
    """l(w, z_i) for each row (x_i, y_i), from the task's own loss.

    One-hot sample weights under vmap: the forward pass runs once (the weights only enter after it).

    Args:
        stack: gives the module and the parameters' shapes.
        task: gives the loss.
        w: one model's flat weights [P].
        buffers: its buffers.
        x, y: n rows.

    Returns:
        [n].
    """
    params = unflatten(w, stack.like)
    one_hot = torch.eye(len(x), dtype=w.dtype, device=w.device)
    return vmap(lambda e: batch_loss(stack.template, task, params, buffers, x, y, e))(one_hot)


def fisher_rao_norm(stack: Stack, task: Task, batch_rows: int) -> Tensor:
    """(1/|D|) Σ_{z in D} <w, ∇_w l(w, z)>² of every model (Liang et al. 2019; Jiang et al. 2020 without the
    (depth + 1)² factor, a constant within one architecture).

    <w, ∇_w l> is the derivative of l along w, so one jvp with tangent w gives it for every sample of a chunk at once.

    Args:
        stack: the models.
        task: the task whose training rows are D.
        batch_rows: rows per chunk.

    Returns:
        [M], float64 on CPU.
    """

    def one(w: Tensor, buffers: Params) -> Tensor:
        total = 0.0
        for start in range(0, task.n_train, batch_rows):
            x, y = task.x_train[start : start + batch_rows], task.y_train[start : start + batch_rows]
            _, along_w = jvp(lambda u: per_sample_losses(stack, task, u, buffers, x, y), (w,), (w,))  # noqa: B023 (called at once)
            total = total + (along_w**2).sum()
        return total / task.n_train

    return over_models(one, stack.n_models, (0, 0))(stack.w, stack.buffers).double().cpu()


def weight_norm(w: Tensor) -> Tensor:
    """||w||₂ of each row of w [M, P]: every trainable parameter, biases and BatchNorm affine included."""
    return torch.linalg.vector_norm(w.double(), dim=1).cpu()


def distance_from_init(w: Tensor, w0: Tensor) -> Tensor:
    """||w − w₀||₂ of each row [M]."""
    return torch.linalg.vector_norm((w - w0).double(), dim=1).cpu()


def bisection_ratio(steps: int) -> float:
    """hi/lo of the final PAC-Bayes bracket: SIGMA_RANGE's ratio halved in log `steps` times."""
    return math.exp(math.log(SIGMA_RANGE[1] / SIGMA_RANGE[0]) / 2**steps)
