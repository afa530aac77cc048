"""The reference notebooks' procedures, as named switches over the main trainer and estimator.

The paper follows the report's text; the authors' public notebooks (github.com/HadiHammoud44/
CS439_Sharpness) computed something else, per architecture. Each difference is one field of
`ReferenceSwitches`; every field defaults to the report's method (False) and True is what the
notebooks did. All off, every function here hands over to the main path unchanged
(`train.train_model`, `pool.train_pool`, `sharpness.estimate_sharpness`).

Switch (arch)                   notebooks' behaviour (True)
------------------------------  --------------------------------------------------------------------
Training (each needs its own pool):
default_init (all)              PyTorch's / PyG's default initialization instead of Xavier.
elu_all_layers (fcnn)           ELU after every layer, the output included (so outputs >= -1).
full_set_steps (fcnn)           each of the ceil(n/64) SGD steps of an epoch on the whole training set.
notebook_lr (fcnn) *            lr 0.102 (the notebook's LR-finder value) for training and ascent,
                                not Table I's 0.014.
eval_after_first_epoch (lenet5)* epochs >= 2 train in eval() mode: the per-epoch test pass called
                                model.eval() and never switched back (dropout off, BN frozen).
attention_dropout (gat) *       PyG's `GAT` model: dropout 0.6 on the attention coefficients and on the
                                hidden features, none on the input features.
Sharpness (reuse the pool):
full_set_ascent (fcnn, lenet5)  ascent passes over the whole training set, no m-batches, no restarts;
                                sharpness = full-training-set loss difference (see the estimators).
swapped_bounds (fcnn)           clamp(w, w0 - ρ w0, w0 + ρ w0): bounds swapped for w0 < 0, which pins
                                every negative weight at w0 - ρ|w0|.
drifting_anchor (lenet5) *      the box is centred on the weights after the first, unprojected ascent
                                step (`clone_w = [p.detach() ...]` shares storage with the parameters,
                                so the first in-place SGD step moved the anchor too).
train_mode (lenet5, gat)        ascent (and GAT's losses) in train() mode: dropout on, BN updated.
five_restarts (gat)             5 restarts instead of 50.
collapse_duplicates (gat)       the m = 64 nodes drawn with replacement become a boolean mask, so a
                                node drawn twice counts once.
all_train_nodes_loss (gat)      after each step the loss is taken on all 140 training nodes, as the
                                notebook's `train(do_update=False)`: the sum of the batch-mean losses of
                                a shuffled split into batches of 64, 64, 12 nodes, one forward each;
                                the unperturbed loss is that same quantity, taken once.

* not in PROTOCOL.md's list of the notebooks' differences: found reading the notebooks themselves.

Left as they are (too small to matter, or not reproducible here; the paper's notes should list them):
the FCNN notebook's signed stopping rule and up to 12 epochs, its lost first Abalone row and
sklearn split; GAT's stopping check from epoch 11 instead of 10; LeNet's full-set losses as means
of batch means.
"""
from __future__ import annotations

import copy
import dataclasses
import json
import math
import os
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import grad_and_value
from tqdm.auto import tqdm

from . import protocol
from .functional import Params, batch_loss, evaluate, split_state
from .models import FCNN, GAT, LeNet5, build_model, xavier_init_
ModelFactory = Callable[..., nn.Module]  # interim: the one-path rewrite removes factories
from .pool import PoolEntry, checkpoint_path, init_model, pool_hash, read_checkpoint, save_checkpoint, train_pool
from .sharpness import SharpnessConfig, SharpnessResult, draw_batches, estimate_sharpness
from .task import Task, resolve_device
from .train import DROPOUT_STREAM, ORDER_STREAM, TrainConfig, TrainResult, should_stop, sgd_step, train_model

NOTEBOOK_FCNN_LR = 0.102  # FCNN_model.ipynb: `learning_rate = 1.02e-01`, used for training and for the ascent
FCNN_ASCENT_PASSES = 6  # `for epoch in range(nbepochs + 1)` with nbepochs = 5
LENET_ASCENT_EPOCHS = 5  # `nb_pga_epochs = 5`
GAT_RESTARTS = 5  # `nb_pga_trials = 5`

TRAINING_SWITCHES = ("default_init", "elu_all_layers", "full_set_steps", "notebook_lr", "eval_after_first_epoch", "attention_dropout")
SHARPNESS_SWITCHES = ("full_set_ascent", "swapped_bounds", "drifting_anchor", "train_mode", "five_restarts", "collapse_duplicates", "all_train_nodes_loss")
APPLIES: dict[str, tuple[str, ...]] = {
    "fcnn": ("default_init", "elu_all_layers", "full_set_steps", "notebook_lr", "full_set_ascent", "swapped_bounds"),
    "lenet5": ("default_init", "eval_after_first_epoch", "full_set_ascent", "drifting_anchor", "train_mode"),
    "gat": ("default_init", "attention_dropout", "train_mode", "five_restarts", "collapse_duplicates", "all_train_nodes_loss"),
}
LABELS: dict[str, str] = {  # as printed in the paper's ablation table
    "default_init": "default init", "elu_all_layers": "ELU on all layers", "full_set_steps": "full-set SGD steps",
    "notebook_lr": "lr 0.102", "eval_after_first_epoch": "eval-mode training", "attention_dropout": "attention dropout",
    "full_set_ascent": "full-set ascent", "swapped_bounds": "swapped bounds", "drifting_anchor": "drifting anchor",
    "train_mode": "train-mode ascent", "five_restarts": "5 restarts", "collapse_duplicates": "collapsed duplicates",
    "all_train_nodes_loss": "all-nodes loss",
}


@dataclass(frozen=True)
class ReferenceSwitches:
    """Which of the notebooks' deviations to apply (all False = the report's method); see the module doc."""

    default_init: bool = False
    elu_all_layers: bool = False
    full_set_steps: bool = False
    notebook_lr: bool = False
    eval_after_first_epoch: bool = False
    attention_dropout: bool = False
    full_set_ascent: bool = False
    swapped_bounds: bool = False
    drifting_anchor: bool = False
    train_mode: bool = False
    five_restarts: bool = False
    collapse_duplicates: bool = False
    all_train_nodes_loss: bool = False

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            if not isinstance(getattr(self, f.name), bool):
                raise ValueError(f"ReferenceSwitches.{f.name} must be True or False, got {getattr(self, f.name)!r}")

    @classmethod
    def notebook(cls, arch: str) -> "ReferenceSwitches":
        """Everything the notebook of `arch` did."""
        return cls(**{name: True for name in applicable(arch)})

    @classmethod
    def only(cls, *names: str) -> "ReferenceSwitches":
        unknown = sorted(set(names) - set(TRAINING_SWITCHES + SHARPNESS_SWITCHES))
        if unknown:
            raise ValueError(f"unknown switch(es) {unknown}; known: {list(TRAINING_SWITCHES + SHARPNESS_SWITCHES)}")
        return cls(**{name: True for name in names})

    @property
    def on(self) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(self) if getattr(self, f.name))

    @property
    def training(self) -> tuple[str, ...]:
        """The switches that change the trained models (so need their own pool)."""
        return tuple(name for name in self.on if name in TRAINING_SWITCHES)

    @property
    def sharpness(self) -> tuple[str, ...]:
        return tuple(name for name in self.on if name in SHARPNESS_SWITCHES)

    def check(self, arch: str) -> "ReferenceSwitches":
        """Raise unless every switch that is on applies to `arch`."""
        wrong = [name for name in self.on if name not in applicable(arch)]
        if wrong:
            raise ValueError(f"switch(es) {wrong} do not apply to arch {arch!r}; its switches are {list(applicable(arch))}")
        return self


def applicable(arch: str) -> tuple[str, ...]:
    if arch not in APPLIES:
        raise ValueError(f"arch must be one of {sorted(APPLIES)}, got {arch!r}")
    return APPLIES[arch]


def arch_of(model: nn.Module) -> str:
    for arch, cls in (("fcnn", FCNN), ("lenet5", LeNet5), ("gat", GAT)):
        if isinstance(model, cls):
            return arch
    raise ValueError(f"model must be an FCNN, LeNet5 or GAT (or a subclass), got {type(model).__name__}")


# ---------------------------------------------------------------- models and training

class EluFCNN(FCNN):
    """The FCNN notebook's network: ELU after every layer, the output included."""

    def forward(self, x: Tensor) -> Tensor:
        x = F.elu(self.fc1(x))
        x = F.elu(self.fc2(x))
        return F.elu(self.fc3(x))


class AttentionDropoutGAT(GAT):
    """PyG's `GAT(..., dropout=0.6, act='elu')` as the notebook built it: conv -> ELU -> dropout -> conv,
    each GATConv dropping attention coefficients with p = 0.6. Same parameters as `GAT`."""

    def __init__(self, dropout: float = 0.6) -> None:
        super().__init__(dropout=dropout)
        self.conv1.dropout = self.conv2.dropout = dropout

    def forward(self, x: Tensor, edge_index: Tensor) -> Tensor:
        x = self.dropout(F.elu(self.conv1(x, edge_index)))
        return self.conv2(x, edge_index)


@dataclass(frozen=True)
class ReferenceFactory:
    """A `pool.ModelFactory` (picklable, for worker processes): the model class the switches ask for."""

    switches: ReferenceSwitches = ReferenceSwitches()

    def __call__(self, arch: str, generator: torch.Generator | None = None, init: str = "xavier") -> nn.Module:
        if init not in ("xavier", "default"):
            raise ValueError(f"init must be 'xavier' or 'default', got {init!r}")
        cls = variant_class(arch, self.switches)
        if init == "xavier":
            return build_model(arch, generator, init) if cls is None else xavier_init_(cls(), generator)
        # PyTorch's default init draws from the global generator: seed it from `generator`, so a seed
        # gives the same model every time (build_model(init="default") alone does not)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(generator.initial_seed() if generator is not None else 0)
            return build_model(arch, None, init) if cls is None else cls()


def variant_class(arch: str, switches: ReferenceSwitches) -> type[nn.Module] | None:
    """The notebook's network class where a switch changes it, else None (models.build_model's)."""
    if arch == "fcnn" and switches.elu_all_layers:
        return EluFCNN
    if arch == "gat" and switches.attention_dropout:
        return AttentionDropoutGAT
    return None


def reference_train_config(arch: str, switches: ReferenceSwitches, **overrides: Any) -> TrainConfig:
    """protocol.train_config(arch) with the switches' init and learning rate, then `overrides`."""
    switches.check(arch)
    values: dict[str, Any] = {}
    if switches.default_init:
        values["init"] = "default"
    if switches.notebook_lr:
        values["lr"] = NOTEBOOK_FCNN_LR
    return protocol.train_config(arch, **{**values, **overrides})


def train_reference_model(model: nn.Module, task: Task, cfg: TrainConfig, switches: ReferenceSwitches) -> tuple[nn.Module, TrainResult]:
    """Train like the notebook (the switches' training loop); all off = `train.train_model`."""
    if not (switches.full_set_steps or switches.eval_after_first_epoch):
        return train_model(model, task, cfg)
    return _train_loop(model, task, cfg, switches.full_set_steps, switches.eval_after_first_epoch)


def _train_loop(model: nn.Module, task: Task, cfg: TrainConfig, full_set: bool, eval_after_first: bool) -> tuple[nn.Module, TrainResult]:
    """train_model's sequential loop with its random streams, plus the two training deviations.

    With both flags off it gives train_model's weights bit for bit (tested), so any difference in a
    variant comes from the flags alone.
    """
    device = resolve_device(cfg.device)
    task, net = task.to(device), copy.deepcopy(model).to(device)
    params, buffers = split_state(net)
    order = torch.Generator().manual_seed(cfg.seed + ORDER_STREAM)
    losses: list[float] = []
    start = time.perf_counter()
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(cfg.seed + DROPOUT_STREAM)
        while not losses or not should_stop(losses, cfg):
            net.train(not (eval_after_first and losses))
            step_losses = []
            for idx in torch.randperm(task.n_train, generator=order).to(device).split(cfg.batch_size):
                # full_set: the gradient of the whole-training-set loss at each of the ceil(n/64) steps
                x, y = (task.x_train, task.y_train) if full_set else (task.x_train[idx], task.y_train[idx])
                params, loss = sgd_step(net, task, cfg.lr, cfg.weight_decay, params, buffers, x, y)
                step_losses.append(loss)
            losses.append(torch.stack(step_losses).mean().item())
    net.load_state_dict({**params, **buffers})
    net.eval()
    train_loss, train_accuracy = evaluate(net, task, "train")
    test_loss, test_accuracy = evaluate(net, task, "test")
    finite = all(math.isfinite(v) for v in losses) and all(torch.isfinite(v).all() for v in params.values())
    result = TrainResult(seed=cfg.seed, epochs=len(losses), epoch_losses=losses, train_loss=train_loss, test_loss=test_loss,
                         train_accuracy=train_accuracy, test_accuracy=test_accuracy, diverged=not finite or not math.isfinite(test_loss),
                         seconds=time.perf_counter() - start, path="reference")
    return net, result


def train_reference_pool(arch: str, task: Task, cfg: TrainConfig, seeds: list[int], out_dir: str | Path, switches: ReferenceSwitches, *,
                         n_workers: int | None = None, progress: bool = True) -> list[PoolEntry]:
    """A pool trained like the notebook, checkpointed and resumable like `pool.train_pool`.

    A pool folder with training switches on holds a `variant.json` naming them, so two variants can
    never share one folder (the checkpoints' config hash does not see the model class or the loop).
    """
    switches.check(arch)
    out_dir = Path(out_dir)
    if switches.training:
        _claim(out_dir, arch, switches)
    if not (switches.full_set_steps or switches.eval_after_first_epoch):
        return train_or_reuse(arch, task, cfg, seeds, out_dir, ReferenceFactory(switches), n_workers=n_workers, progress=progress)
    todo = [s for s in seeds if not _is_done(arch, task, cfg, out_dir, s)]
    jobs = [dataclasses.replace(cfg, seed=s) for s in todo]
    run_jobs(partial(_train_and_save, arch, out_dir=out_dir, switches=switches), task, jobs, n_workers, f"train {arch} (reference)", progress)
    return [_entry(out_dir, s, reused=s not in todo) for s in seeds]


def _is_done(arch: str, task: Task, cfg: TrainConfig, out_dir: Path, seed: int) -> bool:
    # A checkpoint's hash is that of its own seed's config.
    payload = read_checkpoint(checkpoint_path(out_dir, seed))
    return payload is not None and payload["config_hash"] == pool_hash(arch, task, dataclasses.replace(cfg, seed=seed))


def train_or_reuse(arch: str, task: Task, cfg: TrainConfig, seeds: list[int], out_dir: str | Path, factory: ModelFactory = build_model, *,
                   n_workers: int | None = None, progress: bool = True) -> list[PoolEntry]:
    """`pool.train_pool` for the seeds whose checkpoint is missing or stale; the others are read back.

    Checked here per seed because train_pool compares every checkpoint with the hash of `cfg`'s own
    seed, so it retrains all seeds but one (a harmless double check once that is fixed).
    """
    out_dir = Path(out_dir)
    todo = [s for s in seeds if not _is_done(arch, task, cfg, out_dir, s)]
    fresh = {e.seed: e for e in train_pool(arch, task, cfg, todo, out_dir, factory=factory, n_workers=n_workers, progress=progress)} if todo else {}
    return [fresh.get(s) or _entry(out_dir, s, reused=True) for s in seeds]


def _claim(out_dir: Path, arch: str, switches: ReferenceSwitches) -> None:
    marker = out_dir / "variant.json"
    mine = {"arch": arch, "training_switches": sorted(switches.training)}
    if marker.exists():
        found = json.loads(marker.read_text())
        if found != mine:
            raise ValueError(f"{out_dir} holds the pool of {found}, not {mine}; use another out_dir")
        return
    out_dir.mkdir(parents=True, exist_ok=True)
    marker.write_text(json.dumps(mine, indent=1))


def _entry(out_dir: Path, seed: int, reused: bool) -> PoolEntry:
    payload = read_checkpoint(checkpoint_path(out_dir, seed))
    if payload is None:
        raise FileNotFoundError(f"no checkpoint for seed {seed} in {out_dir}")
    return PoolEntry(seed, checkpoint_path(out_dir, seed), TrainResult(**payload["result"]), reused)


def _train_and_save(arch: str, task: Task, cfg: TrainConfig, *, out_dir: Path, switches: ReferenceSwitches) -> None:
    model, result = train_reference_model(init_model(arch, cfg, ReferenceFactory(switches)), task, cfg, switches)
    save_checkpoint(checkpoint_path(out_dir, cfg.seed), arch, task, cfg, model, result)


_WORKER_TASK: Task | None = None


def _init_worker(task: Task) -> None:
    global _WORKER_TASK
    torch.set_num_threads(1)  # one single-threaded worker per core: CPU convolutions use threads poorly
    _WORKER_TASK = task


def _call_in_worker(fn: Callable[[Task, Any], Any], job: Any) -> Any:
    assert _WORKER_TASK is not None
    return fn(_WORKER_TASK, job)


def run_jobs(fn: Callable[[Task, Any], Any], task: Task, jobs: list[Any], n_workers: int | None, desc: str, progress: bool) -> list[Any]:
    """fn(task, job) for every job: in this process (n_workers = 1), else one spawned worker per core."""
    n_workers = min(n_workers or os.cpu_count() or 1, max(len(jobs), 1))
    bar = tqdm(total=len(jobs), desc=desc, disable=not progress or not jobs)
    out = []
    if n_workers == 1:
        for job in jobs:
            out.append(fn(task, job))
            bar.update(1)
    else:
        context = torch.multiprocessing.get_context("spawn")  # fork after torch threads start can deadlock
        with ProcessPoolExecutor(n_workers, mp_context=context, initializer=_init_worker, initargs=(task.to("cpu"),)) as executor:
            for future in [executor.submit(_call_in_worker, fn, job) for job in jobs]:
                out.append(future.result())
                bar.update(1)
    bar.close()
    return out


# ---------------------------------------------------------------- sharpness

def reference_sharpness(model: nn.Module, task: Task, cfg: SharpnessConfig, switches: ReferenceSwitches) -> SharpnessResult:
    """Sharpness as the notebook of the model's arch computed it; all sharpness switches off =
    `estimate_sharpness(model, task, cfg)` itself. The model is never modified."""
    arch = arch_of(model)
    cfg = effective_config(arch, cfg, switches)
    if not (switches.full_set_ascent or switches.swapped_bounds or switches.drifting_anchor or switches.collapse_duplicates or switches.all_train_nodes_loss):
        return estimate_sharpness(model, task, cfg)
    _check_reference_cfg(cfg, task)
    net = copy.deepcopy(model).to(task.device)
    w, buffers = split_state(net)
    start = time.perf_counter()
    with torch.random.fork_rng(devices=[task.device] if task.device.type == "cuda" else []):
        torch.manual_seed(cfg.seed + 2)  # dropout draws in train mode, as the main estimator seeds them
        if switches.full_set_ascent and arch == "fcnn":
            unperturbed, values, trace = full_set_passes(net, task, w, buffers, cfg, switches.swapped_bounds)
        elif switches.full_set_ascent:
            unperturbed, values, trace = epoch_ascent(net, task, w, buffers, cfg, switches.drifting_anchor)
        else:
            unperturbed, values, trace = restart_ascent(net, task, w, buffers, cfg, switches)
    values_t = torch.tensor(values, dtype=torch.float64)
    return SharpnessResult(mean=values_t.mean().item(), values=values, unperturbed=unperturbed,
                           frac_below=(values_t < 0).double().mean().item(), trace=trace, seconds=time.perf_counter() - start)


def effective_config(arch: str, cfg: SharpnessConfig, switches: ReferenceSwitches) -> SharpnessConfig:
    """The SharpnessConfig a variant actually runs with (η, mode and restarts set by the switches)."""
    switches.check(arch)
    changes: dict[str, Any] = {}
    if switches.notebook_lr:
        changes["lr"] = NOTEBOOK_FCNN_LR
    if switches.train_mode:
        changes["mode"] = "train"
    if switches.five_restarts:
        changes["n_restarts"] = GAT_RESTARTS
    return dataclasses.replace(cfg, **changes)


def _check_reference_cfg(cfg: SharpnessConfig, task: Task) -> None:
    for name, value, allowed in (("p", cfg.p, "inf"), ("kind", cfg.kind, "worst"), ("step", cfg.step, "gradient"), ("random_start", cfg.random_start, False)):
        if value != allowed:
            raise ValueError(f"SharpnessConfig.{name} = {value!r}: the reference estimators only do the notebooks' {name} = {allowed!r}")
    if cfg.batch_size > task.n_train:
        raise ValueError(f"SharpnessConfig.batch_size = {cfg.batch_size} is larger than the {task.n_train} training samples of task {task.name!r}")


def box(anchor: Params, cfg: SharpnessConfig, swapped: bool = False) -> tuple[Params, Params]:
    """Bounds of the ℓ∞ box around `anchor`: a ± ρ|a| (adaptive) or a ± ρ.

    swapped (FCNN notebook): a - ρa, a + ρa; torch.clamp with min > max returns max, so a
    negative weight is pinned at a - ρ|a| whatever the gradient says.
    """
    scale = {k: (a if swapped else a.abs()) if cfg.adaptive else torch.ones_like(a) for k, a in anchor.items()}
    return {k: a - cfg.rho * scale[k] for k, a in anchor.items()}, {k: a + cfg.rho * scale[k] for k, a in anchor.items()}


def clamp(w: Params, bounds: tuple[Params, Params]) -> Params:
    low, high = bounds
    return {k: torch.clamp(v, low[k], high[k]) for k, v in w.items()}


_grad_and_loss = grad_and_value(batch_loss, argnums=2)  # ∇_w L_S(w) and L_S(w) for batch_loss(model, task, w, buffers, x, y)


@torch.no_grad()
def full_loss(net: nn.Module, task: Task, w: Params, buffers: Params, chunk: int = 4096) -> float:
    """L(w) over the whole training set, in the net's current mode (chunked; the mean of per-sample losses)."""
    if task.is_graph:
        return batch_loss(net, task, w, buffers, task.x_train, task.y_train).item()
    total = sum(batch_loss(net, task, w, buffers, task.x_train[i : i + chunk], task.y_train[i : i + chunk]).item() * len(task.x_train[i : i + chunk])
                for i in range(0, task.n_train, chunk))
    return total / task.n_train


def full_set_passes(net: nn.Module, task: Task, w0: Params, buffers: Params, cfg: SharpnessConfig, swapped: bool,
                    n_passes: int = FCNN_ASCENT_PASSES) -> tuple[list[float], list[float], list[list[float]]]:
    """FCNN notebook: (unperturbed, [sharpness], per-pass post-step losses).

    Each of `n_passes` passes takes ceil(n/m) steps on the whole training set, continuing from the
    last; the pass with the highest sum of post-step losses is kept, and its final weights give
    sharpness = L_train(w_end) - L_train(w0).
    """
    net.eval()
    bounds, x, y = box(w0, cfg, swapped), task.x_train, task.y_train
    w, best, trace = w0, (-math.inf, w0), []
    for _ in range(n_passes):
        losses = []
        for _ in range(math.ceil(task.n_train / cfg.batch_size)):
            # w <- Clamp(w + η ∇L_train(w)); the loss returned is at w before the step, i.e. after the previous one
            g, loss = _grad_and_loss(net, task, w, buffers, x, y)
            losses.append(loss.item())
            w = clamp({k: v + cfg.lr * g[k] for k, v in w.items()}, bounds)
        losses = losses[1:] + [full_loss(net, task, w, buffers)]
        trace.append(losses)
        if sum(losses) > best[0]:
            best = (sum(losses), w)
    base = full_loss(net, task, w0, buffers)
    return [base], [full_loss(net, task, best[1], buffers) - base], trace


def epoch_ascent(net: nn.Module, task: Task, w0: Params, buffers0: Params, cfg: SharpnessConfig, drifting_anchor: bool,
                 n_epochs: int = LENET_ASCENT_EPOCHS) -> tuple[list[float], list[float], list[list[float]]]:
    """LeNet notebook: (unperturbed, [sharpness], [full-set loss after each epoch]).

    Each epoch steps through a shuffled pass of the training set in minibatches of m (cfg.mode sets
    dropout/BN; in train mode the BN running statistics drift with the ascent and are kept); after
    each epoch the full-training-set loss is taken in eval mode. Sharpness = the highest of those
    minus the unperturbed eval-mode full-set loss.
    """
    order = torch.Generator().manual_seed(cfg.seed)
    w, buffers, bounds, after_epoch = w0, {k: b.clone() for k, b in buffers0.items()}, box(w0, cfg), []
    for epoch in range(n_epochs):
        net.train(cfg.mode == "train")
        for step, idx in enumerate(torch.randperm(task.n_train, generator=order).to(task.device).split(cfg.batch_size)):
            # w <- Clamp(w + η ∇L_B(w)), BN statistics updated in place in train mode
            g, _ = _grad_and_loss(net, task, w, buffers, task.x_train[idx], task.y_train[idx])
            w = {k: v + cfg.lr * g[k] for k, v in w.items()}
            if drifting_anchor and epoch == step == 0:
                bounds = box(w, cfg)  # the anchor shares storage with the weights until the first projection
            w = clamp(w, bounds)
        net.eval()
        after_epoch.append(full_loss(net, task, w, buffers))
    net.eval()
    base = full_loss(net, task, w0, buffers0)
    return [base], [max(after_epoch) - base], [after_epoch]


def notebook_train_loss(net: nn.Module, task: Task, w: Params, buffers: Params, m: int, order: torch.Generator) -> float:
    """GAT notebook's `train(model, ..., do_update=False)`: Σ_b L_{B_b}(w) over a shuffled split of
    the training nodes into batches of m (140 nodes: 64, 64, 12), one forward pass per batch."""
    with torch.no_grad():
        batches = torch.randperm(task.n_train, generator=order).to(task.device).split(m)
        return sum(batch_loss(net, task, w, buffers, task.x_train[b], task.y_train[b]).item() for b in batches)


def restart_ascent(net: nn.Module, task: Task, w0: Params, buffers0: Params, cfg: SharpnessConfig,
                   switches: ReferenceSwitches) -> tuple[list[float], list[float], list[list[float]]]:
    """The main m-sharpness estimator restart by restart, with the GAT notebook's deviations and the
    FCNN/LeNet projection bugs as options: (unperturbed per restart, value per restart, trace).

    Restart r: S_r = the main estimator's r-th batch (duplicates collapsed if asked), δ <- Clamp(δ + η
    ∇L_S(w+δ)) for n_steps, value = max_t L_eval(w+δ_t) - L_eval(w), where L_eval is L_S, or the
    notebook's all-training-nodes loss. All options off, it equals `estimate_sharpness` (tested).
    """
    net.train(cfg.mode == "train")
    order = torch.Generator().manual_seed(cfg.seed + 3)  # the all-nodes loss's shuffles
    all_nodes = partial(notebook_train_loss, net, task, m=cfg.batch_size, order=order)
    base_all = all_nodes(w0, {k: b.clone() for k, b in buffers0.items()}) if switches.all_train_nodes_loss else None
    unperturbed, values, trace = [], [], []
    for idx in draw_batches(task.n_train, cfg).to(task.device):
        idx = idx.unique() if switches.collapse_duplicates else idx
        x, y, buffers = task.x_train[idx], task.y_train[idx], {k: b.clone() for k, b in buffers0.items()}
        with torch.no_grad():
            base = base_all if base_all is not None else batch_loss(net, task, w0, buffers, x, y).item()
        w, bounds, post = w0, box(w0, cfg, switches.swapped_bounds), []  # post: L_eval(w + δ_t), t = 1..n_steps
        for step in range(cfg.n_steps):
            # w <- Clamp(w + η ∇L_S(w)); the loss that comes with the gradient is L_S after the previous step
            g, loss = _grad_and_loss(net, task, w, buffers, x, y)
            if step and base_all is None:
                post.append(loss.item())
            w = {k: v + cfg.lr * g[k] for k, v in w.items()}
            bounds = box(w, cfg) if switches.drifting_anchor and step == 0 else bounds
            w = clamp(w, bounds)
            if base_all is not None:
                post.append(all_nodes(w, buffers))
        if base_all is None:
            with torch.no_grad():
                post.append(batch_loss(net, task, w, buffers, x, y).item())
        unperturbed.append(base)
        values.append(max(post) - base)
        trace.append([base] + post)
    return unperturbed, values, trace
