"""Pools of models: train many seeds, checkpoint each model the moment it is done, resume.

A checkpoint is one file per model (`seed0007.pt`): weights, config, TrainResult, the pool's resume key
and a SHA-256 digest of all of these, written atomically. A rerun reuses a checkpoint only when it
verifies and its key (`pool_hash`: arch, variant, `Task.fingerprint`, TrainConfig but the device) matches.
Batched (`vmap`) and sequential training agree only to float rounding, so a folder never mixes the two paths.
On the CPU a resumed pool is the uninterrupted one bit for bit: a batched stack's numbers depend on which
seeds train together (dropout draws, kernels), so a resumed stack is re-formed whole from the requested seeds.
"""
from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import functools
import errno
import hashlib
import io
import json
import multiprocessing.process
import os
import signal
import sys
import threading
import time
import warnings
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import torch
from torch import nn
from ..core.notebook import tqdm  # tqdm.auto's bar, on stdout in a notebook without widgets

from ..core.config import check_choice, check_number, check_writable_dir, config_hash
from ..core.functional import check_fits
from ..core.sharpness import Estimator, SharpnessConfig, SharpnessResult, ascent
from ..core.sharpness import estimate_pool_sharpness as estimate_here
from ..core.models import build_model, check_variant
from ..core.task import Task, hash_tensors, resolve_device
from ..core.train import TrainConfig, TrainResult, train_batched, train_model

WORKER_THREADS = 1  # torch's intra-op threads in a worker process, and for a model the calling process trains
FORMAT = "sharplib-checkpoint-2"  # a checkpoint's marker: a file without it is not one of this package's (or an older one)
BACKENDS = ("auto", "batched", "processes", "ray")


@dataclass(frozen=True)
class PoolEntry:
    seed: int
    checkpoint: Path
    result: TrainResult
    reused: bool  # True when the checkpoint was already on disk


def checkpoint_path(out_dir: Path, seed: int) -> Path:
    """Where the checkpoint of `seed` lives in a pool's folder.

    Args:
        out_dir: the pool's folder.
        seed: the model's seed.

    Returns:
        `<out_dir>/seed<seed, 4 digits>.pt`.
    """
    return Path(out_dir) / f"seed{seed:04d}.pt"


# TrainConfig fields added after pools were checkpointed: left out of the key while unset, so existing keys still match.
KEY_OMITS_WHEN_NONE = ("target_loss",)


def pool_hash(arch: str, task: Task, cfg: TrainConfig, variant: str = "standard") -> str:
    """What makes two trained models interchangeable: arch, network variant, data and config (not the device).

    Args:
        arch: the architecture.
        task: the data, by its name and fingerprint.
        cfg: the training config; the device and the fields of KEY_OMITS_WHEN_NONE that are None are left out.
        variant: the network variant.

    Returns:
        The key (`config_hash`) a checkpoint must carry to be reused.
    """
    values = {k: v for k, v in dataclasses.asdict(cfg).items() if k != "device" and not (k in KEY_OMITS_WHEN_NONE and v is None)}
    return config_hash(arch, variant, task.name, task.fingerprint, values)


def init_model(arch: str, cfg: TrainConfig, variant: str = "standard") -> nn.Module:
    """The untrained model of one seed: the init draw comes from its own seeded generator.

    Args:
        arch: the architecture.
        cfg: gives the seed and the init scheme.
        variant: the network variant.

    Returns:
        The initialized nn.Module (on CPU).
    """
    return build_model(arch, torch.Generator().manual_seed(cfg.seed), cfg.init, variant)


class CheckpointError(ValueError):
    """A file where a checkpoint belongs that is not an intact checkpoint of this package."""


def _digest(payload: dict[str, Any]) -> str:
    """SHA-256 of a checkpoint's content but the digest: the weights' bytes and everything else as JSON."""
    digest = hashlib.sha256(json.dumps({k: v for k, v in payload.items() if k not in ("digest", "state_dict")}, sort_keys=True).encode())
    hash_tensors(digest, payload["state_dict"])
    return digest.hexdigest()


def save_checkpoint(path: Path, arch: str, task: Task, cfg: TrainConfig, model: nn.Module, result: TrainResult, variant: str = "standard",
                    trained_on: str | None = None) -> None:
    """Write one model's checkpoint atomically, with a SHA-256 digest of its content.

    Args:
        path: the checkpoint file (`checkpoint_path`).
        arch, task, cfg, variant: what trained it (the key is `pool_hash`).
        model: the trained network; its state_dict is saved on CPU.
        result: its training outcome.
        trained_on: the device it trained on, where that is not this machine's `cfg.device` (a Ray worker's GPU).

    Raises:
        OSError: on a full disk, naming the checkpoint.
    """
    payload = {
        "format": FORMAT, "arch": arch, "variant": variant, "task": task.name, "data": task.fingerprint,
        "config": dataclasses.asdict(cfg), "config_hash": pool_hash(arch, task, cfg, variant),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "result": result.as_dict(), "torch_version": str(torch.__version__),
        "device": trained_on or str(resolve_device(cfg.device)),
    }
    payload["digest"] = _digest(payload)
    buffer = io.BytesIO()
    torch.save(payload, buffer)  # in memory first: torch's file writer reports a full disk as "unexpected pos 5056 vs 4944"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        _write(tmp, buffer.getbuffer(), path)
        if _orphaned():  # a worker whose pool is gone must not add a model to it
            tmp.unlink()
            os._exit(1)
        os.replace(tmp, path)  # atomic: a reader sees the old file or the whole new one
    finally:
        tmp.unlink(missing_ok=True)


def _write(tmp: Path, data: memoryview, path: Path) -> None:
    """Write `data` to the file `tmp`; a full disk is an OSError that says so and names the checkpoint `path`."""
    try:
        with open(tmp, "wb") as file:
            file.write(data)
    except OSError as err:
        if err.errno != errno.ENOSPC:
            raise
        raise OSError(errno.ENOSPC, f"no space left on device for the checkpoint {path} (the checkpoints already in "
                                    f"{path.parent} are intact: free some space and rerun to train the rest)", str(path)) from err


def _verified(path: Path) -> dict[str, Any]:
    """The contents of the checkpoint at `path`, or a CheckpointError saying why it is not an intact one of ours."""
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)  # plain data and tensors: a foreign pickle runs no code
    except Exception as err:
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else ""
        raise CheckpointError(f"{path} is not readable as a checkpoint ({type(err).__name__}: {first_line})") from err
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a checkpoint of this sharplib version (no {FORMAT!r} marker)")
    try:
        intact = payload["digest"] == _digest(payload)
    except Exception:  # a missing field or one of the wrong type: not what save_checkpoint wrote
        intact = False
    if not intact:
        raise CheckpointError(f"{path} is damaged: its content does not match the SHA-256 digest saved with it")
    return payload


def read_checkpoint(path: Path) -> dict[str, Any] | None:
    """The checkpoint's contents, if it is intact.

    Args:
        path: the checkpoint file.

    Returns:
        The saved dict; None when the file is missing, and (with a warning) when it is not intact: then it is retrained.
    """
    if not path.exists():
        return None
    try:
        return _verified(path)
    except CheckpointError as err:  # never reused, never a crash of the pool
        warnings.warn(f"{err}; it is not reused (the pool retrains its seed)", stacklevel=2)
        return None


def load_model(path: Path, device: torch.device | str = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """A trained model and its checkpoint contents.

    Args:
        path: the checkpoint file.
        device: where the model goes (a task's device, to measure it there).

    Returns:
        (the model of the checkpoint's arch and variant, in eval mode on `device`; the checkpoint's contents).

    Raises:
        FileNotFoundError: no file at `path`.
        CheckpointError: (a ValueError) the file is not an intact checkpoint.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint at {path}")
    payload = _verified(path)
    model = build_model(payload["arch"], torch.Generator().manual_seed(0), payload["config"]["init"], payload["variant"])
    model.load_state_dict(payload["state_dict"])
    return model.eval().to(device), payload


def _remove_stale_tmp(out_dir: Path) -> None:
    """Delete `.seed0003.pt.<pid>.tmp` files whose writer is gone (a killed run); a live writer's file stays."""
    for tmp in out_dir.glob(".seed*.pt.*.tmp"):
        pid = tmp.name.split(".")[-2]
        if not (pid.isdigit() and _alive(int(pid))):
            tmp.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, owned by someone else
        pass
    return True


def _check_seeds(seeds: Any) -> list[int]:
    seeds = list(seeds)
    bad = [s for s in seeds if isinstance(s, bool) or not isinstance(s, int) or s < 0]
    if bad or not seeds or len(set(seeds)) != len(seeds):
        why = f"{bad[0]!r} ({type(bad[0]).__name__}) is not an integer >= 0" if bad else "empty or repeated"
        raise ValueError(f"train_pool: seeds must be a non-empty list of distinct integers >= 0; {why}: {seeds!r}")
    return seeds


def _check_checkpoint_slots(out_dir: Path, seeds: list[int]) -> None:
    """Refuse a folder (or a device file) where a seed's checkpoint goes: it could not be replaced after training."""
    for seed in seeds:
        path = checkpoint_path(out_dir, seed)
        if path.exists() and not path.is_file():
            raise ValueError(f"train_pool: {path} is not a file, and seed {seed}'s checkpoint goes there: move it out of {out_dir}")


def train_pool(arch: str, task: Task, cfg: TrainConfig, seeds: list[int], out_dir: str | Path, *, variant: str = "standard",
               backend: str = "auto", n_workers: int | None = None, batch_models: int = 50, progress: bool = True) -> list[PoolEntry]:
    """Train one model per seed (cfg with its seed replaced) and checkpoint each in `out_dir`.

    Intact checkpoints of the same pool are reused; other files are retrained (a damaged one with a warning).
    Every argument is checked before any model is trained. Workers are spawned: a script that uses them needs
    the `if __name__ == "__main__":` guard, and they die with the process that started them.

    Args:
        arch: "fcnn", "lenet5" or "gat".
        task: the training data.
        cfg: how each model trains (its seed is replaced by each of `seeds`).
        seeds: distinct integers >= 0, one model each.
        out_dir: the pool's folder.
        variant: the network variant of `arch` (models.VARIANTS); "standard" is the study's.
        backend: "auto" (the path of the models already in `out_dir`, else batched on CUDA or for the FCNN,
            else processes), "batched" (vmap stacks), "processes" (one single-threaded worker per core) or
            "ray" (Ray tasks, `cluster.train_on_ray`; needs the cluster extra).
        n_workers: worker processes for "processes" (default: one per core); 1 trains in this process.
        batch_models: how many models one vmapped stack holds (for "ray": on a GPU worker).
        progress: show a progress bar.

    Returns:
        One PoolEntry (seed, checkpoint path, TrainResult, reused) per seed, in the order of `seeds`.
    """
    seeds = _check_seeds(seeds)
    check_variant(arch, variant)
    check_choice("train_pool", "backend", backend, BACKENDS)
    if n_workers is not None:
        check_number("train_pool", "n_workers", n_workers, minimum=1, integer=True)
    check_number("train_pool", "batch_models", batch_models, minimum=1, integer=True)
    out_dir = check_writable_dir("train_pool", "out_dir", out_dir)
    check_fits(init_model(arch, cfg, variant), task)  # a GAT on a table fails here, not in a worker after the others trained
    out_dir.mkdir(parents=True, exist_ok=True)
    _check_checkpoint_slots(out_dir, seeds)
    _remove_stale_tmp(out_dir)

    members = _members(arch, variant, task, cfg, out_dir)
    done = {s: PoolEntry(s, checkpoint_path(out_dir, s), TrainResult(**members[s]["result"]), reused=True) for s in seeds if s in members}
    todo = [s for s in seeds if s not in done]
    backend = _pick_backend(backend, arch, cfg, {m["result"]["trained_by"] for m in members.values()}, bool(todo), out_dir)
    bar = tqdm(total=len(seeds), initial=len(done), desc=f"train {arch}", disable=not progress)

    def record(seed: int, result: TrainResult) -> None:
        done[seed] = PoolEntry(seed, checkpoint_path(out_dir, seed), result, reused=False)
        bar.update(1)

    if todo and backend == "batched":
        _train_batched_groups(arch, variant, task, cfg, seeds, set(todo), out_dir, batch_models, record)
    elif todo and backend == "ray":
        from .cluster import train_on_ray  # Ray is an optional extra: imported only when asked for

        def save(seed: int, weights: dict[str, torch.Tensor], result: TrainResult, device: str) -> None:
            seed_cfg = dataclasses.replace(cfg, seed=seed)
            model = init_model(arch, seed_cfg, variant)
            model.load_state_dict(weights)
            # trained elsewhere (a GPU worker) or not, the checkpoint says where; the hash ignores the device
            save_checkpoint(checkpoint_path(out_dir, seed), arch, task, seed_cfg, model, result, variant, trained_on=device)
            record(seed, result)

        train_on_ray(task, cfg, todo, batch_models, functools.partial(init_model, arch, variant=variant), save)
    elif todo:
        _train_in_processes(arch, variant, task, cfg, todo, out_dir, n_workers, record)
    bar.close()
    return [done[s] for s in seeds]


def _members(arch: str, variant: str, task: Task, cfg: TrainConfig, out_dir: Path) -> dict[int, dict[str, Any]]:
    """The intact checkpoints in `out_dir` of this pool (its key with their seed), by seed: requested or not."""
    members = {}
    for path in sorted(out_dir.glob("seed*.pt")):
        seed = path.name[4:-3]
        if not seed.isdigit() or path != checkpoint_path(out_dir, int(seed)) or not path.is_file():
            continue
        payload = read_checkpoint(path)
        if payload is not None and payload["config_hash"] == pool_hash(arch, task, dataclasses.replace(cfg, seed=int(seed)), variant):
            members[int(seed)] = payload
    return members


def _pick_backend(backend: str, arch: str, cfg: TrainConfig, folder_paths: set[str], training: bool, out_dir: Path) -> str:
    """The backend to train with, such that the pool's models in `out_dir` all come from one training path."""
    if backend == "auto" and len(folder_paths) == 1:
        backend = "batched" if folder_paths == {"batched"} else "processes"  # carry on as the folder began
    elif backend == "auto":
        backend = "batched" if resolve_device(cfg.device).type == "cuda" or arch == "fcnn" else "processes"
    # Ray's path asks the cluster for its GPUs: only when there is something to train, else Ray is not started
    path = {"batched": "batched", "processes": "sequential"}.get(backend) or (_ray_path(cfg) if training else "")
    if training and folder_paths - {path}:
        raise ValueError(
            f"train_pool: {out_dir} holds models of this pool trained {' and '.join(sorted(folder_paths))}, and backend={backend!r} "
            f"would add models trained {path}. The two paths agree only to float rounding (about 1e-4 in test loss), "
            "so one pool folder does not mix them: pass the backend the folder began with (or 'auto'), or another out_dir."
        )
    return backend


def _ray_path(cfg: TrainConfig) -> str:
    from .cluster import training_path  # Ray is an optional extra: imported only when asked for

    return training_path(cfg)


def batched_groups(seeds: list[int], todo: set[int], batch_models: int) -> list[list[int]]:
    """The stacks that train `todo`: the requested seeds cut into stacks of `batch_models`, each kept whole.

    A stack's numbers depend on its members (one dropout stream for the stack, kernels chosen by its size), so
    a model left over from an interruption trains again with the mates it had, which are trained and not saved.
    """
    stacks = [seeds[start : start + batch_models] for start in range(0, len(seeds), batch_models)]
    return [stack for stack in stacks if todo.intersection(stack)]


def _train_batched_groups(arch, variant, task, cfg, seeds, todo, out_dir, batch_models, record) -> None:
    for group in batched_groups(seeds, todo, batch_models):
        cfgs = [dataclasses.replace(cfg, seed=s) for s in group]

        def on_done(i: int, model: nn.Module, result: TrainResult) -> None:
            # train_batched calls this within the loop's iteration, so it sees that iteration's group and cfgs
            if group[i] in todo:  # noqa: B023
                save_checkpoint(checkpoint_path(out_dir, group[i]), arch, task, cfgs[i], model, result, variant)  # noqa: B023
                record(group[i], result)  # noqa: B023

        train_batched([init_model(arch, c, variant) for c in cfgs], task, cfgs, on_done=on_done)


def _train_one(arch: str, variant: str, task: Task, cfg: TrainConfig, out_dir: Path) -> TrainResult:
    model, result = train_model(init_model(arch, cfg, variant), task, cfg)
    save_checkpoint(checkpoint_path(out_dir, cfg.seed), arch, task, cfg, model, result, variant)
    return result


def estimate_pool_sharpness(models: list[nn.Module], task: Task, cfg: SharpnessConfig, *, backend: str = "auto",
                            estimator: Estimator = ascent) -> list[SharpnessResult]:
    """Sharpness S(w) of a pool's models, measured where `backend` says.

    Args:
        models: trained networks of one architecture (never modified).
        task: the task whose training rows the batches S come from.
        cfg: the estimator's settings.
        backend: "ray" (Ray tasks, `cluster.estimate_pool_sharpness`), else here (`sharpness.estimate_pool_sharpness`:
            batched on a GPU, one model at a time on the CPU); both give the same numbers on the CPU.
        estimator: `sharpness.ascent`, or a function with its contract (reference.py).

    Returns:
        One SharpnessResult per model, in order.
    """
    check_choice("estimate_pool_sharpness", "backend", backend, BACKENDS)
    if backend == "ray":
        from .cluster import estimate_pool_sharpness as on_ray  # Ray is an optional extra: imported only when asked for

        return on_ray(models, task, cfg, estimator=estimator)
    return estimate_here(models, task, cfg, estimator=estimator)


# ---------------------------------------------------------------- worker processes

_WORKER_TASK: Task | None = None  # set once per worker process, so the dataset crosses the pipe once
_PARENT_PID: int | None = None  # in a worker: the process that started it; None in any other process


def _init_worker(task: Task, parent_pid: int) -> None:
    global _WORKER_TASK, _PARENT_PID
    _WORKER_TASK, _PARENT_PID = task, parent_pid
    _die_with_parent(parent_pid)
    torch.set_num_threads(WORKER_THREADS)


def _die_with_parent(parent_pid: int) -> None:
    """End this worker as soon as the process that started it is gone, however it ended (SIGKILL included).

    Otherwise an orphaned worker goes on training and saving models into a pool nobody runs, then
    blocks forever on its pipe (a notebook kernel killed by papermill, a script killed by hand).
    Linux's parent-death signal acts at once but follows the parent *thread* that started the
    worker; the watchdog thread follows the parent process itself, within a fraction of a second.
    """
    if sys.platform.startswith("linux"):
        PR_SET_PDEATHSIG = 1
        ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)

    def watch() -> None:
        while os.getppid() == parent_pid:  # an orphan is re-parented (to init or a subreaper)
            time.sleep(0.2)
        os._exit(1)

    threading.Thread(target=watch, name="sharplib-watch-parent", daemon=True).start()


def _orphaned() -> bool:
    return _PARENT_PID is not None and os.getppid() != _PARENT_PID


def _train_one_in_worker(arch, variant, cfg, out_dir) -> TrainResult:
    assert _WORKER_TASK is not None
    return _train_one(arch, variant, _WORKER_TASK, cfg, out_dir)


@contextlib.contextmanager
def intra_op_threads(n: int) -> Iterator[None]:
    """torch's intra-op thread count set to `n`, restored afterwards.

    Training here uses a worker's count: CPU results depend on it in the last bits, so a model is the same
    whichever process trains it.

    Args:
        n: the thread count inside the `with` block.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _main_file_workers_cannot_import() -> str | None:
    """The main module's file when it is not a file (code read from standard input: '<stdin>'), else None.

    A spawned worker first runs the main module from its file, as multiprocessing.spawn does: by name
    for `python -m`, not at all where there is no file (a REPL, `python -c`, a notebook kernel)."""
    main = sys.modules.get("__main__")
    file = getattr(main, "__file__", None)
    if getattr(getattr(main, "__spec__", None), "name", None) or file is None:
        return None
    return None if os.path.isfile(os.path.join(multiprocessing.process.ORIGINAL_DIR or "", file)) else file


def _train_in_processes(arch, variant, task, cfg, seeds, out_dir, n_workers, record) -> None:
    n_workers = min(n_workers or os.cpu_count() or 1, len(seeds))
    cfgs = [dataclasses.replace(cfg, seed=s) for s in seeds]
    main_file = _main_file_workers_cannot_import()
    if n_workers > 1 and main_file is not None:
        warnings.warn(f"train_pool: backend='processes' trains in this process only, as its worker processes start by running the "
                      f"main module, and {main_file!r} is not a file: run the code from a script file (with an "
                      f"`if __name__ == \"__main__\":` guard) to train with {n_workers} workers", stacklevel=3)
        n_workers = 1
    if n_workers == 1:
        with intra_op_threads(WORKER_THREADS):
            for c in cfgs:
                record(c.seed, _train_one(arch, variant, task, c, out_dir))
        return
    _ = task.fingerprint  # hashed once here; the workers' copies carry it
    context = torch.multiprocessing.get_context("spawn")  # fork after torch threads start can deadlock
    with ProcessPoolExecutor(n_workers, mp_context=context, initializer=_init_worker, initargs=(task.to("cpu"), os.getpid())) as executor:
        futures = {executor.submit(_train_one_in_worker, arch, variant, c, out_dir): c.seed for c in cfgs}
        try:
            for future in as_completed(futures):
                record(futures[future], future.result())
        except BaseException:
            # Ctrl-C or a failed model: stop the other workers now, rather than wait for their models to finish
            # (the executor's exit waits for running jobs). A killed worker leaves at most a temporary file.
            for process in list((executor._processes or {}).values()):
                process.kill()
            executor.shutdown(wait=False, cancel_futures=True)
            raise
