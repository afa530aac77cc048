"""The measures panel: many flatness and norm measures of a pool of trained models, one row per model.

`compute_panel(models, task, inits, cfg)` measures every model of one architecture (MEASURES lists the
columns, each with its equation and whether it is invariant to the rescalings of reparam.py). The
worst-case sharpness (adaptive and standard) is the study's estimator on random m-batches of the whole
training set; every other data-dependent measure reads one fixed subset D of `subset_rows` training rows,
drawn from the seed, the same for every model. All models run in eval mode; buffers are never perturbed.
"""
from __future__ import annotations

import copy
import dataclasses
import numbers
from dataclasses import dataclass
from typing import Any, Sequence

import pandas as pd
import torch
from torch import Tensor, nn
from ..core.notebook import tqdm  # tqdm.auto's bar, on stdout in a notebook without widgets

from ..core.config import check_choice, check_device, check_number, config_from_dict
from .flatness import average_sharpness, distance_from_init, fisher_rao_norm, pac_bayes_sigma, weight_norm
from ..core.functional import check_fits, evaluate
from .hessian import Stack, hessian_top_eigenvalue, hessian_trace, stack_models
from ..core.models import VARIANTS, build_model
from ..core.sharpness import SharpnessConfig, estimate_pool_sharpness, flatten, receptive_field
from ..core.task import Task, resolve_device

# Offsets of the seed for each random part, so that no two measures share draws.
STREAMS = {"subset": 0, "lanczos": 101, "hutchinson": 202, "gaussian": 303, "pac_bayes": 404}


@dataclass(frozen=True)
class MeasuresConfig:
    """How the panel is measured. rho and lr as the study's (protocol.sharpness_config); the rest are this panel's own."""

    rho: float  # ρ of the adaptive worst-case sharpness (Table I)
    lr: float  # η of the report's gradient ascent: the training learning rate
    rho_standard: float | None = None  # ρ of the standard (c = 1) worst-case sharpness; None: rho
    rho_average: float | None = None  # ρ of the adaptive average-case sharpness; None: rho
    n_restarts: int = 50  # worst-case restarts (the study's 50), each a new m-batch
    batch_size: int = 64  # m
    step: str = "gradient"  # the ascent's step rule (SharpnessConfig.step): the report's "gradient", or "steepest"
    n_gaussian_draws: int = 20  # draws z of every Gaussian measure (each used with its mirror −z)
    hessian_iters: int = 20  # Lanczos steps for λ_max
    n_hutchinson_probes: int = 20  # Rademacher probes for tr(H)
    pac_bayes_target: float = 0.1  # the deviation of the loss E_u[L(w + u)] − L(w) that defines σ' (loss units)
    pac_bayes_eps: float = 1e-3  # ε of u_i ~ N(0, σ'² w_i² + ε²) (Jiang et al.'s value)
    pac_bayes_steps: int = 16  # bisection steps (final bracket: bisection_ratio(steps))
    subset_rows: int | None = 1024  # |D|, the training rows of the measures but worst-case sharpness; None or > n: all
    batch_rows: int = 1024  # rows per forward pass over D (memory, not the result)
    init: str = "xavier"  # the pool's TrainConfig.init: how an initial model is rebuilt from its seed
    models_per_call: int | None = None  # models in one vmapped call; None: all, but one at a time for conv models on CPU
    seed: int = 0
    device: str = "auto"

    def __post_init__(self) -> None:
        name = "MeasuresConfig"
        check_number(name, "rho", self.rho, minimum=0, strict=True)
        check_number(name, "lr", self.lr, minimum=0, strict=True)
        for field in ("rho_standard", "rho_average"):
            if getattr(self, field) is not None:
                check_number(name, field, getattr(self, field), minimum=0, strict=True)
        for field in (
            "n_restarts",
            "batch_size",
            "n_gaussian_draws",
            "hessian_iters",
            "n_hutchinson_probes",
            "pac_bayes_steps",
            "batch_rows",
        ):
            check_number(name, field, getattr(self, field), minimum=1, integer=True)
        check_choice(name, "step", self.step, ("gradient", "steepest"))
        check_number(name, "pac_bayes_target", self.pac_bayes_target, minimum=0, strict=True)
        check_number(name, "pac_bayes_eps", self.pac_bayes_eps, minimum=0)
        if self.subset_rows is not None:
            check_number(name, "subset_rows", self.subset_rows, minimum=1, integer=True)
        if self.models_per_call is not None:
            check_number(name, "models_per_call", self.models_per_call, minimum=1, integer=True)
        check_choice(name, "init", self.init, ("xavier", "default"))
        check_number(name, "seed", self.seed, minimum=0, integer=True)
        check_device(name, "device", self.device)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "MeasuresConfig":
        return config_from_dict(cls, values)

    def sharpness_config(self, adaptive: bool, device: torch.device | None = None) -> SharpnessConfig:
        """The study's estimator with this panel's ρ, restarts, m, step and seed (ℓ∞, 5 steps, eval mode), on `device`."""
        rho = self.rho if adaptive else (self.rho_standard or self.rho)
        return SharpnessConfig(rho=rho, lr=self.lr, adaptive=adaptive, step=self.step, n_restarts=self.n_restarts,
                               batch_size=self.batch_size, seed=self.seed, device=self.device if device is None else str(device))


@dataclass(frozen=True)
class Measure:
    description: str  # what it is, with its equation
    scale_invariant: bool  # unchanged, by construction, by every rescaling w -> w ⊙ r that keeps the network's function


MEASURES: dict[str, Measure] = {
    "sharpness_adaptive": Measure("adaptive worst-case ℓ∞ m-sharpness (the study's): E_S max_{|δ_i| <= ρ|w_i|} L_S(w + δ) − L_S(w)", True),
    "sharpness_standard": Measure("standard worst-case ℓ∞ m-sharpness (c = 1): E_S max_{|δ_i| <= ρ} L_S(w + δ) − L_S(w)", False),
    "sharpness_average": Measure("adaptive average-case sharpness: E_{δ ~ N(0, ρ² diag(|w|²))} L_D(w + δ) − L_D(w)", True),
    "hessian_top_eigenvalue": Measure("largest eigenvalue of the Hessian ∇²L_D(w) (Lanczos)", False),
    "hessian_trace": Measure("trace of the Hessian tr ∇²L_D(w) (Hutchinson, Rademacher probes)", False),
    "pac_bayes_mag_flatness": Measure("1/σ'², σ' the largest σ with E_u L_D(w + u) − L_D(w) <= target, u_i ~ N(0, σ² w_i² + ε²)", False),
    "fisher_rao_norm": Measure("Fisher–Rao norm, ⟨w,∇⟩ form: (1/|D|) Σ_z ⟨w, ∇_w l(w, z)⟩²", True),
    "weight_norm": Measure("ℓ2 norm of the weights ||w||₂", False),
    "distance_from_init": Measure("distance from initialization ||w − w₀||₂", False),
    "train_loss": Measure("training loss L(w) over the whole training set (control)", True),
    "epochs": Measure("epochs trained (control; from the pool's TrainResult)", True),
}

# Columns beside the measures: how far to trust them.
DIAGNOSTICS = ("seed", "sharpness_adaptive_frac_below", "sharpness_standard_frac_below", "sharpness_average_stderr",
               "hessian_top_eigenvalue_residual", "hessian_trace_stderr", "pac_bayes_sigma", "pac_bayes_sigma_upper",
               "pac_bayes_deviation")


def measure_subset(task: Task, rows: int | None, seed: int) -> Task:
    """The task with its training rows cut to the fixed subset D.

    Args:
        task: the whole task.
        rows: |D|, drawn without replacement; None, or as many as the training set or more: all rows.
        seed: the seed of the draw.

    Returns:
        The task whose training rows are D (test rows unchanged).
    """
    if rows is None or rows >= task.n_train:
        return task
    idx = torch.randperm(task.n_train, generator=torch.Generator().manual_seed(seed))[:rows].to(task.device)
    return dataclasses.replace(task, x_train=task.x_train[idx], y_train=task.y_train[idx])


def arch_of(model: nn.Module) -> tuple[str, str]:
    """The architecture a model was built as, read from its class and parameter shapes.

    Args:
        model: a network of models.VARIANTS.

    Returns:
        (arch, variant).

    Raises:
        ValueError: for a network that is none of models.VARIANTS.
    """
    shapes = {k: v.shape for k, v in model.state_dict().items()}
    for arch, variants in VARIANTS.items():
        for variant, make in variants.items():
            candidate = make()
            if type(candidate) is type(model) and {k: v.shape for k, v in candidate.state_dict().items()} == shapes:
                return arch, variant
    raise ValueError(f"cannot rebuild the initial weights of a {type(model).__name__} from a seed: it is none of models.VARIANTS "
                     f"(pass the initial models instead of seeds)")


def initial_model(model: nn.Module, seed: int, init: str) -> nn.Module:
    """The untrained model of `seed`, as the pool built it (pool.init_model: a generator seeded with the model's seed).

    Args:
        model: a trained network, for its arch and variant (`arch_of`).
        seed: its seed.
        init: the init scheme it was trained with.

    Returns:
        The initial network, on CPU.
    """
    arch, variant = arch_of(model)
    return build_model(arch, torch.Generator().manual_seed(seed), init, variant)


def initial_weights(models: Sequence[nn.Module], inits: Sequence[nn.Module | int], init: str) -> Tensor:
    """w₀ of every model, for the distance from initialization.

    Args:
        models: the trained networks.
        inits: one per model: its initial network, or its seed (the initial network is then rebuilt, `initial_model`).
        init: the init scheme, for rebuilding from a seed.

    Returns:
        w₀ [M, P] on CPU, the trainable parameters flattened.
    """
    if len(inits) != len(models):
        raise ValueError(f"compute_panel: {len(inits)} initial models or seeds for {len(models)} models; give one per model")
    rows = []
    for model, start in zip(models, inits):
        if _is_seed(start):
            start = initial_model(model, int(start), init)
        if not isinstance(start, nn.Module):
            raise ValueError(f"compute_panel: an initial model must be an nn.Module or an int seed, got {type(start).__name__}")
        rows.append(flatten({k: p.detach().cpu() for k, p in start.named_parameters() if p.requires_grad}))
    return torch.stack(rows)


def _controls(train_rows: Sequence[Any] | pd.DataFrame | None, n_models: int) -> list[dict[str, Any]] | None:
    """Each model's TrainResult (or a mapping with train_loss, epochs, and optionally seed) as a dict."""
    if train_rows is None:
        return None
    rows = train_rows.to_dict("records") if isinstance(train_rows, pd.DataFrame) else list(train_rows)
    if len(rows) != n_models:
        raise ValueError(f"compute_panel: {len(rows)} train_rows for {n_models} models; give one per model")
    rows = [r.as_dict() if hasattr(r, "as_dict") else dict(r) for r in rows]
    for i, row in enumerate(rows):
        missing = {"train_loss", "epochs"} - set(row)
        if missing:
            raise ValueError(f"compute_panel: train_rows[{i}] lacks {sorted(missing)}")
    return rows


def _check_one_architecture(models: Sequence[nn.Module]) -> None:
    if not models:
        raise ValueError("compute_panel needs at least one model")
    first = {k: tuple(v.shape) for k, v in models[0].state_dict().items()}
    for i, model in enumerate(models[1:], start=1):
        if type(model) is not type(models[0]) or {k: tuple(v.shape) for k, v in model.state_dict().items()} != first:
            raise ValueError(f"compute_panel takes models of one architecture: model {i} ({type(model).__name__}) differs from model 0 "
                             f"({type(models[0]).__name__})")


def models_per_call(model: nn.Module, n_models: int, device: torch.device, asked: int | None) -> int:
    """How many models one vmapped call takes.

    Args:
        model: one of the networks (is it convolutional?).
        n_models: M, the models measured.
        device: where they run.
        asked: the count asked for (MeasuresConfig.models_per_call), or None.

    Returns:
        `asked` if given; else one for a convolutional model on CPU (there vmap turns convolutions into grouped
        ones, slower than one model at a time: see sharpness._over_restarts), else M.
    """
    if asked is not None:
        return asked
    has_conv = any(isinstance(m, nn.modules.conv._ConvNd) for m in model.modules())
    return 1 if device.type == "cpu" and has_conv else n_models


def stack_measures(stack: Stack, subset: Task, cfg: MeasuresConfig, progress: bool) -> dict[str, Tensor]:
    """Every Gaussian, Hessian and gradient measure on D for one stack of models, with its diagnostics.

    Args:
        stack: the models (`hessian.Stack`).
        subset: the task whose training rows are D (`measure_subset`).
        cfg: the panel's settings; each measure draws from its own stream cfg.seed + STREAMS[...].
        progress: show progress bars.

    Returns:
        {column: [M] tensor}.
    """
    rows = cfg.batch_rows
    average = average_sharpness(
        stack, subset, cfg.rho_average or cfg.rho, cfg.n_gaussian_draws, cfg.seed + STREAMS["gaussian"], rows, progress
    )
    top = hessian_top_eigenvalue(stack, subset, cfg.hessian_iters, cfg.seed + STREAMS["lanczos"], rows, progress)
    trace = hessian_trace(stack, subset, cfg.n_hutchinson_probes, cfg.seed + STREAMS["hutchinson"], rows, progress)
    pac = pac_bayes_sigma(stack, subset, cfg.pac_bayes_target, cfg.pac_bayes_eps, cfg.n_gaussian_draws, cfg.pac_bayes_steps,
                          cfg.seed + STREAMS["pac_bayes"], rows, progress)
    return {
        "sharpness_average": average.value, "sharpness_average_stderr": average.stderr,
        "hessian_top_eigenvalue": top.value, "hessian_top_eigenvalue_residual": top.residual,
        "hessian_trace": trace.value, "hessian_trace_stderr": trace.stderr,
        "pac_bayes_mag_flatness": 1.0 / pac.sigma**2, "pac_bayes_sigma": pac.sigma, "pac_bayes_sigma_upper": pac.upper,
        "pac_bayes_deviation": pac.deviation,
        "fisher_rao_norm": fisher_rao_norm(stack, subset, rows), "weight_norm": weight_norm(stack.w),
    }


def compute_panel(models: Sequence[nn.Module], task: Task, init_models_or_seeds: Sequence[nn.Module | int], cfg: MeasuresConfig,
                  train_rows: Sequence[Any] | pd.DataFrame | None = None, progress: bool = True) -> pd.DataFrame:
    """One row per model, one column per measure of MEASURES (in its order), then the DIAGNOSTICS.

    Args:
        models: trained networks of one architecture (never modified).
        task: the task (the panel reads its training set, and D drawn from it).
        init_models_or_seeds: each model's initial model, or its seed (the initial model is then rebuilt as
            the pool built it, with cfg.init): for the distance from initialization.
        cfg: the panel's settings (ρ, η, draws, D's size, seed, device).
        train_rows: each model's TrainResult (or a mapping with train_loss and epochs); None: the training
            loss is measured on the whole training set and the epochs are missing.
        progress: show a progress bar.

    Returns:
        The panel as a DataFrame.
    """
    models = list(models)
    _check_one_architecture(models)
    controls = _controls(train_rows, len(models))
    w0 = initial_weights(models, list(init_models_or_seeds), cfg.init)
    device = resolve_device(cfg.device)
    task = task.to(device)
    check_fits(models[0], task)
    template = copy.deepcopy(models[0]).eval()
    subset = receptive_field(template, measure_subset(task, cfg.subset_rows, cfg.seed + STREAMS["subset"]), device)
    per_call = models_per_call(models[0], len(models), device, cfg.models_per_call)
    columns: dict[str, list[Tensor]] = {}
    bar = tqdm(total=2 + -(-len(models) // per_call), desc="measures panel", disable=not progress)
    for adaptive in (True, False):
        name = "sharpness_adaptive" if adaptive else "sharpness_standard"
        bar.set_postfix_str(name)
        results = estimate_pool_sharpness(models, task, cfg.sharpness_config(adaptive, device), models_per_call=per_call)
        columns[name] = [torch.tensor([r.mean for r in results], dtype=torch.float64)]
        columns[f"{name}_frac_below"] = [torch.tensor([r.frac_below for r in results], dtype=torch.float64)]
        bar.update(1)
    for start in range(0, len(models), per_call):
        bar.set_postfix_str(f"models {start}..{min(start + per_call, len(models)) - 1} on D")
        stack = stack_models(models[start : start + per_call], device)
        for key, values in stack_measures(stack, subset, cfg, progress).items():
            columns.setdefault(key, []).append(values.double().cpu())
        columns.setdefault("distance_from_init", []).append(distance_from_init(stack.w.cpu(), w0[start : start + per_call]))
        bar.update(1)
    bar.close()
    table = {k: torch.cat(v).tolist() for k, v in columns.items()}
    table["train_loss"] = [r["train_loss"] for r in controls] if controls else [evaluate(_on(m, device), task, "train")[0] for m in models]
    table["epochs"] = [r["epochs"] for r in controls] if controls else [None] * len(models)
    table["seed"] = _seeds(init_models_or_seeds, controls)
    order = [*MEASURES, *DIAGNOSTICS]
    return pd.DataFrame({k: table[k] for k in order}).astype({"epochs": "Int64", "seed": "Int64"})


def _on(model: nn.Module, device: torch.device) -> nn.Module:
    """A copy of the model on `device` (the caller's model stays where it is)."""
    return copy.deepcopy(model).to(device)


def _seeds(inits: Sequence[Any], controls: list[dict[str, Any]] | None) -> list[int | None]:
    if controls and all("seed" in r for r in controls):
        return [int(r["seed"]) for r in controls]
    return [int(s) if _is_seed(s) else None for s in inits]


def _is_seed(value: Any) -> bool:
    """An integer seed: a Python int or a NumPy one (a pandas column's values), never a bool."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)
