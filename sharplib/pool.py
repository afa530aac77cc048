"""Pools of models: train many seeds, checkpoint each model the moment it is done, resume.

A checkpoint is one file per model (`seed0007.pt`) holding the weights, the config, its
hash and the TrainResult, written to a temporary name and renamed, so a killed run loses
at most the models in progress. A rerun skips every model whose file carries the same
config hash.

Where models train: "batched" stacks them under `vmap` (GPU, and tiny models on CPU);
"processes" runs one single-threaded worker per core (CPU convolutions use threads poorly);
"ray" sends them to Ray tasks on a cluster (cluster.py) and writes their checkpoints here.
"""
from __future__ import annotations

import dataclasses
import os
import warnings
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from .config import config_hash
from .models import build_model, check_variant
from .task import Task, resolve_device
from .train import TrainConfig, TrainResult, train_batched, train_model

@dataclass(frozen=True)
class PoolEntry:
    seed: int
    checkpoint: Path
    result: TrainResult
    reused: bool  # True when the checkpoint was already on disk


def checkpoint_path(out_dir: Path, seed: int) -> Path:
    return Path(out_dir) / f"seed{seed:04d}.pt"


def pool_hash(arch: str, task: Task, cfg: TrainConfig, variant: str = "standard") -> str:
    """What makes two trained models interchangeable: arch, network variant, dataset and config (not the device)."""
    values = {k: v for k, v in dataclasses.asdict(cfg).items() if k != "device"}
    return config_hash(arch, variant, task.name, values)


def init_model(arch: str, cfg: TrainConfig, variant: str = "standard") -> nn.Module:
    """The untrained model of one seed: the init draw comes from its own seeded generator."""
    return build_model(arch, torch.Generator().manual_seed(cfg.seed), cfg.init, variant)


def save_checkpoint(path: Path, arch: str, task: Task, cfg: TrainConfig, model: nn.Module, result: TrainResult, variant: str = "standard") -> None:
    payload = {
        "arch": arch, "variant": variant, "task": task.name, "config": dataclasses.asdict(cfg),
        "config_hash": pool_hash(arch, task, cfg, variant),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "result": result.as_dict(), "torch_version": torch.__version__, "device": str(resolve_device(cfg.device)),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)  # atomic: a reader sees the old file or the whole new one


def read_checkpoint(path: Path) -> dict[str, Any] | None:
    """The checkpoint's contents, or None when it is missing or unreadable (then it is retrained)."""
    if not path.exists():
        return None
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # a truncated file from another tool: warn and retrain, never crash the pool
        warnings.warn(f"unreadable checkpoint {path} ({err}); it will be retrained")
        return None


def load_model(path: Path) -> tuple[nn.Module, dict[str, Any]]:
    """A trained model (eval mode, CPU) of the checkpoint's arch and variant, and its checkpoint contents."""
    payload = read_checkpoint(Path(path))
    if payload is None:
        raise FileNotFoundError(f"no readable checkpoint at {path}")
    model = build_model(payload["arch"], torch.Generator().manual_seed(0), payload["config"]["init"], payload["variant"])
    model.load_state_dict(payload["state_dict"])
    return model.eval(), payload


def train_pool(arch: str, task: Task, cfg: TrainConfig, seeds: list[int], out_dir: str | Path, *, variant: str = "standard",
               backend: str = "auto", n_workers: int | None = None, batch_models: int = 50, progress: bool = True) -> list[PoolEntry]:
    """Train one model per seed (cfg with its seed replaced) and checkpoint each in `out_dir`.

    variant: the network variant of `arch` (models.VARIANTS); "standard" is the study's.
    backend: "auto" (batched on CUDA or for the FCNN, else processes), "batched", "processes", "ray"
        (Ray tasks: `cluster.train_on_ray`; needs the cluster extra).
    n_workers: worker processes for "processes" (default: one per core); 1 trains in this process.
    batch_models: how many models one vmapped stack holds (for "ray": on a GPU worker).
    """
    if len(set(seeds)) != len(seeds) or not seeds:
        raise ValueError(f"seeds must be a non-empty list of distinct integers, got {seeds!r}")
    check_variant(arch, variant)
    out_dir = Path(out_dir)
    done: dict[int, PoolEntry] = {}
    todo = []
    for seed in seeds:
        payload = read_checkpoint(checkpoint_path(out_dir, seed))
        if payload is not None and payload["config_hash"] == pool_hash(arch, task, dataclasses.replace(cfg, seed=seed), variant):
            done[seed] = PoolEntry(seed, checkpoint_path(out_dir, seed), TrainResult(**payload["result"]), reused=True)
        else:
            todo.append(seed)
    backend = _pick_backend(backend, arch, cfg)
    bar = tqdm(total=len(seeds), initial=len(done), desc=f"train {arch}", disable=not progress)

    def record(seed: int, result: TrainResult) -> None:
        done[seed] = PoolEntry(seed, checkpoint_path(out_dir, seed), result, reused=False)
        bar.update(1)

    if todo and backend == "batched":
        _train_batched_groups(arch, variant, task, cfg, todo, out_dir, batch_models, record)
    elif todo and backend == "ray":
        from .cluster import train_on_ray  # Ray is an optional extra: imported only when asked for

        train_on_ray(arch, variant, task, cfg, todo, out_dir, batch_models, record)
    elif todo:
        _train_in_processes(arch, variant, task, cfg, todo, out_dir, n_workers, record)
    bar.close()
    return [done[s] for s in seeds]


BACKENDS = ("auto", "batched", "processes", "ray")


def _pick_backend(backend: str, arch: str, cfg: TrainConfig) -> str:
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend != "auto":
        return backend
    return "batched" if resolve_device(cfg.device).type == "cuda" or arch == "fcnn" else "processes"


def _train_batched_groups(arch, variant, task, cfg, seeds, out_dir, batch_models, record) -> None:
    for start in range(0, len(seeds), batch_models):
        group = seeds[start : start + batch_models]
        cfgs = [dataclasses.replace(cfg, seed=s) for s in group]

        def on_done(i: int, model: nn.Module, result: TrainResult) -> None:
            save_checkpoint(checkpoint_path(out_dir, group[i]), arch, task, cfgs[i], model, result, variant)
            record(group[i], result)

        train_batched([init_model(arch, c, variant) for c in cfgs], task, cfgs, on_done=on_done)


def _train_one(arch: str, variant: str, task: Task, cfg: TrainConfig, out_dir: Path) -> TrainResult:
    model, result = train_model(init_model(arch, cfg, variant), task, cfg)
    save_checkpoint(checkpoint_path(out_dir, cfg.seed), arch, task, cfg, model, result, variant)
    return result


_WORKER_TASK: Task | None = None  # set once per worker process, so the dataset crosses the pipe once


def _init_worker(task: Task) -> None:
    global _WORKER_TASK
    torch.set_num_threads(1)
    _WORKER_TASK = task


def _train_one_in_worker(arch, variant, cfg, out_dir) -> TrainResult:
    assert _WORKER_TASK is not None
    return _train_one(arch, variant, _WORKER_TASK, cfg, out_dir)


def _train_in_processes(arch, variant, task, cfg, seeds, out_dir, n_workers, record) -> None:
    n_workers = min(n_workers or os.cpu_count() or 1, len(seeds))
    cfgs = [dataclasses.replace(cfg, seed=s) for s in seeds]
    if n_workers == 1:
        for c in cfgs:
            record(c.seed, _train_one(arch, variant, task, c, out_dir))
        return
    context = torch.multiprocessing.get_context("spawn")  # fork after torch threads start can deadlock
    with ProcessPoolExecutor(n_workers, mp_context=context, initializer=_init_worker, initargs=(task.to("cpu"),)) as executor:
        futures = {executor.submit(_train_one_in_worker, arch, variant, c, out_dir): c.seed for c in cfgs}
        for future in as_completed(futures):
            record(futures[future], future.result())
