"""The Ray back end of the pool functions: the local back ends' checkpoints and results, from a cluster.

`pool.train_pool(..., backend="ray")` lands in `train_on_ray`: one Ray task per model (the "processes"
path, the same weights bit for bit on CPU), or on GPUs one task per shard of seeds trained as one `vmap`
stack. The driver writes each returned model's checkpoint with `pool.save_checkpoint`, so files, hashes
and resumption are the other back ends'. `estimate_pool_sharpness` shards models the same way.
Connecting follows Ray's convention (`connect`). A task whose worker died is rerun up to TASK_RETRIES
times; a model that still fails is named in an error raised after the others are checkpointed.
Ray is an optional extra: `pip install -e ".[cluster]"`.
"""
from __future__ import annotations

import contextlib
import copy
import dataclasses
import importlib.util
import math
import os
import socket
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
from torch import nn

from ..core.sharpness import Estimator, SharpnessConfig, SharpnessResult, ascent
from ..core.sharpness import estimate_pool_sharpness as estimate_here
from ..core.task import Task, resolve_device
from ..core.train import TrainConfig, TrainResult, train_batched, train_model

INSTALL_HINT = 'pip install -e ".[cluster]"'
CONNECT_TIMEOUT_S = 30.0  # how long `connect` waits for a named cluster's head to answer (Ray itself retries for 10 min and more)
CONNECT_TIMEOUT_VAR = "SHARPLIB_RAY_CONNECT_TIMEOUT_S"  # the environment's say on it, for a notebook or make
TASK_RETRIES = 3  # Ray's default for a task whose worker died; the tests set 0 to see a failure through


def import_ray() -> Any:
    """The `ray` module, or an ImportError that says how to install it."""
    try:
        import ray
    except ImportError as err:
        raise ImportError(f'backend="ray" needs Ray, an optional extra of sharplib: {INSTALL_HINT}') from err
    return ray


def connect(address: str | None = None, num_cpus: int | None = None, num_gpus: int | None = None, timeout_s: float | None = None) -> Any:
    """Ray, connected: as initialized in this process, else to `address` or $RAY_ADDRESS, else to a new local instance.

    num_cpus, num_gpus: the local instance's resources (default: Ray counts them); a running cluster
    brings its own. A local instance started here lives until `disconnect()` or the end of this
    process, so the next pool reuses it (and its warm workers).
    timeout_s: how long a named cluster's head may take to accept a connection before a ConnectionError
    names the address (default: $SHARPLIB_RAY_CONNECT_TIMEOUT_S, else 30 s).
    """
    global _CONNECTED_HERE
    timeout_s = _connect_timeout(timeout_s)
    ray = import_ray()
    if ray.is_initialized():
        return ray
    address = address or os.environ.get("RAY_ADDRESS") or None
    if address:
        _wait_for_head(address, timeout_s)
        try:
            ray.init(address=address)
        except ConnectionError as err:
            raise ConnectionError(f"no Ray cluster reachable at {address}; is it up? Ray starts clusters with token authentication: "
                                  "a driver given an address needs RAY_AUTH_MODE=token and the cluster's token (~/.ray/auth_token or "
                                  "RAY_AUTH_TOKEN)") from err
    else:
        with _lean_ray_processes():
            ray.init(address="local", num_cpus=num_cpus, num_gpus=num_gpus, include_dashboard=False)
    _CONNECTED_HERE = True
    return ray


def _connect_timeout(timeout_s: float | None) -> float:
    """timeout_s, else $SHARPLIB_RAY_CONNECT_TIMEOUT_S, else CONNECT_TIMEOUT_S: a finite number of seconds > 0."""
    name, value = "connect.timeout_s", timeout_s
    if value is None and os.environ.get(CONNECT_TIMEOUT_VAR):
        name, value = f"${CONNECT_TIMEOUT_VAR}", os.environ[CONNECT_TIMEOUT_VAR]
        with contextlib.suppress(ValueError):
            value = float(value)
    if value is None:
        return CONNECT_TIMEOUT_S
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < math.inf:
        raise ValueError(f"{name} must be a number of seconds > 0, got {value!r}")
    return float(value)


def _head_endpoint(address: str) -> tuple[str, int] | None:
    """The (host, port) that ray.init(address=...) dials: Ray Client's 'ray://host[:port]', else Ray's own reading of
    the address ('auto': the cluster `ray start` recorded; 127.0.0.1: this node's IP). None where Ray finds no
    address ('local', 'auto' with no cluster, a malformed one): then ray.init says so itself, at once."""
    if address.startswith("ray://"):
        host, colon, port = address.removeprefix("ray://").rpartition(":")
        return (host.strip("[]"), int(port)) if colon and port.isdigit() else (address.removeprefix("ray://"), 10001)
    from ray._private.services import canonicalize_bootstrap_address  # pinned Ray (2.60): the parsing ray.init does

    try:
        resolved = canonicalize_bootstrap_address(address)
    except Exception:  # Ray's own error, from ray.init, names the problem
        return None
    if resolved is None:
        return None
    host, _, port = resolved.rpartition(":")
    return host.strip("[]"), int(port)


def _wait_for_head(address: str, timeout_s: float) -> None:
    """Return once something at `address` accepts a TCP connection; a ConnectionError naming it after `timeout_s`.

    ray.init(address=...) on an address where nothing listens retries for 10 minutes and more, saying
    nothing; a head that is still starting gets the whole timeout (a refused connection is tried again).
    """
    endpoint = _head_endpoint(address)
    if endpoint is None:
        return
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with socket.create_connection(endpoint, timeout=max(0.1, deadline - time.monotonic())):
                return
        except OSError as err:
            left = deadline - time.monotonic()
            if left <= 0:
                raise ConnectionError(f"no Ray cluster reachable at {address}: nothing accepted a connection at "
                                      f"{endpoint[0]}:{endpoint[1]} within {timeout_s:g} s "
                                      f"({err.strerror or err}). Is the head up (`ray start --head`)? The wait is {CONNECT_TIMEOUT_VAR} "
                                      "or connect(timeout_s=...)") from None
        time.sleep(min(0.5, left))


def disconnect() -> None:
    """Undo `connect`: end the local instance it started, or leave the cluster it joined (which stays up).

    A Ray that this process initialized itself is left alone. Without a call, Ray does the same at
    exit; a notebook calls it at its end so that its kernel stops promptly when papermill asks.
    """
    global _CONNECTED_HERE
    if _CONNECTED_HERE:
        import_ray().shutdown()
        _CONNECTED_HERE = False


_CONNECTED_HERE = False  # whether `connect` called ray.init (then `disconnect` may undo it)


_STUB_DIR: tempfile.TemporaryDirectory | None = None  # lives as long as the local instance's processes


@contextlib.contextmanager
def _lean_ray_processes() -> Iterator[None]:
    """Start Ray's processes without the optional `rfc3987_syntax` (jsonschema's IRI checks, unused by Ray).

    Every Ray process imports jsonschema, which imports `rfc3987_syntax` when it is installed (JupyterLab
    brings it), and that module builds some 30 parsers at import, seconds of CPU per process. The raylet
    waits a fixed 15 s for its agent processes (Ray issue #65983), which a loaded small machine can miss.
    A module on PYTHONPATH that raises ImportError in its place makes jsonschema skip those checks in the
    processes started here (their environment is this one, at start), and nowhere else.
    """
    global _STUB_DIR
    if importlib.util.find_spec("rfc3987_syntax") is None:
        yield
        return
    if _STUB_DIR is None:
        _STUB_DIR = tempfile.TemporaryDirectory(prefix="sharplib-ray-")
        Path(_STUB_DIR.name, "rfc3987_syntax.py").write_text(
            'raise ImportError("left out of the Ray processes sharplib starts (slow import)")\n'
        )
    before = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (_STUB_DIR.name, before) if p)
    try:
        yield
    finally:
        if before is None:
            del os.environ["PYTHONPATH"]
        else:
            os.environ["PYTHONPATH"] = before


def _gpus(ray: Any, device: str) -> int:
    """How many GPUs the cluster offers to work that may use one (none when the config asks for the CPU)."""
    return 0 if device == "cpu" else int(ray.cluster_resources().get("GPU", 0))


def training_path(cfg: TrainConfig) -> str:
    """The TrainResult.trained_by that `train_on_ray` gives under `cfg`: stacks on GPU workers, one model a task on CPUs."""
    return "batched" if _gpus(connect(), cfg.device) else "sequential"


def _per_task(n: int, gpus: int, cap: int) -> int:
    # A GPU takes a stack of models at once: spread the pool over the GPUs, at most `cap` per stack.
    return min(cap, math.ceil(n / gpus)) if gpus else 1


# ---------------------------------------------------------------- training

def train_on_ray(task: Task, cfg: TrainConfig, seeds: list[int], batch_models: int, build: Callable[[TrainConfig], nn.Module],
                 save: Callable[[int, dict[str, torch.Tensor], TrainResult, str], None], models_per_task: int | None = None) -> None:
    """Train `seeds` as Ray tasks; `save(seed, weights, result, device)` is called in the driver as each task returns.

    build(cfg) makes the untrained model of cfg.seed (in the workers: a picklable function, `pool.init_model`'s);
    the pool's `save` writes the checkpoint, so this module knows nothing of checkpoint files. models_per_task: 1
    trains each model alone with `train.train_model` (the "processes" back end's path); k > 1 trains shards of k
    seeds as one `train.train_batched` stack (the "batched" back end's, with batch_models = k). Default: 1 on
    CPUs; on a cluster with GPUs, one shard per GPU task of at most `batch_models`.
    """
    ray = connect()
    gpus = _gpus(ray, cfg.device)
    per_task = models_per_task or _per_task(len(seeds), gpus, batch_models)
    remote = ray.remote(_train_shard).options(num_cpus=1, num_gpus=1 if gpus else 0, max_retries=TASK_RETRIES)
    task_ref = ray.put(task.to("cpu"))  # once into the object store, not once per task
    shards = [seeds[i : i + per_task] for i in range(0, len(seeds), per_task)]
    pending = {remote.remote(build, task_ref, cfg, shard, per_task > 1): shard for shard in shards}

    def save_shard(shard: list[int], returned: list[tuple[dict, dict, str]]) -> None:
        for seed, (state, result, device) in zip(shard, returned):
            save(seed, state, TrainResult(**result), device)

    failed = _gather(ray, pending, save_shard)
    if failed:
        seeds_failed = sorted(s for shard, _ in failed for s in shard)
        raise RuntimeError(f"{len(seeds_failed)} of {len(seeds)} models failed on Ray (seeds {seeds_failed}); the other models are "
                           f"checkpointed, so a rerun trains only these. First error: {failed[0][1]}") from failed[0][1]


def _train_shard(build: Callable[[TrainConfig], nn.Module], task: Task, cfg: TrainConfig, seeds: list[int],
                 stacked: bool) -> list[tuple[dict, dict, str]]:
    """In a Ray worker: train the seeds (alone or as one stack) and return (weights on CPU, TrainResult dict, device) each."""
    torch.set_num_threads(1)  # one core per task, as the processes back end's workers: small convolutions scale badly
    cfgs = [dataclasses.replace(cfg, seed=s) for s in seeds]
    models = [build(c) for c in cfgs]
    trained = train_batched(models, task, cfgs) if stacked else [train_model(models[0], task, cfgs[0])]
    device = str(resolve_device(cfg.device))
    return [({k: v.detach().cpu() for k, v in model.state_dict().items()}, result.as_dict(), device) for model, result in trained]


def _gather(ray: Any, pending: dict[Any, Any], use: Callable[[Any, Any], None]) -> list[tuple[Any, Exception]]:
    """Hand each task's value to `use(key, value)` as it arrives; return the (key, error) of the tasks that failed.

    A failure does not stop the others, so everything that can finish is kept. If this loop stops
    (an error in `use`, Ctrl-C), the tasks still pending are cancelled: nothing trains for nobody.
    """
    failed = []
    try:
        while pending:
            (ref,), _ = ray.wait(list(pending), num_returns=1)
            key = pending.pop(ref)
            try:
                value = ray.get(ref)
            except ray.exceptions.RayError as err:  # the task raised, or its worker or node died for good
                failed.append((key, err))
                continue
            use(key, value)
    finally:
        for ref in pending:
            ray.cancel(ref, force=True)
    return failed


# ---------------------------------------------------------------- sharpness

def estimate_pool_sharpness(models: list[nn.Module], task: Task, cfg: SharpnessConfig, *, estimator: Estimator = ascent,
                            models_per_task: int | None = None) -> list[SharpnessResult]:
    """`sharpness.estimate_pool_sharpness` over Ray tasks, one result per model in order.

    Every model sees the same batches (they come from cfg.seed), so in eval mode a model's estimate
    does not depend on which task measures it: on CPU it equals the local one bit for bit. In train
    mode the dropout draws run on from model to model, so the pool goes to one task (the local
    numbers, computed elsewhere). models_per_task: default 1 on CPUs, one shard per GPU on a cluster with GPUs.
    """
    if not models:
        raise ValueError("estimate_pool_sharpness needs at least one model")
    ray = connect()
    gpus = _gpus(ray, cfg.device)
    per_task = len(models) if cfg.mode == "train" else models_per_task or _per_task(len(models), gpus, len(models))
    remote = ray.remote(_sharpness_shard).options(num_cpus=1, num_gpus=1 if gpus else 0, max_retries=TASK_RETRIES)
    task_ref = ray.put(task.to("cpu"))
    on_cpu = [copy.deepcopy(m).cpu() for m in models]  # a copy: the caller's models stay where they are
    pending = {remote.remote(on_cpu[i : i + per_task], task_ref, cfg, estimator): i for i in range(0, len(models), per_task)}
    results: dict[int, list[SharpnessResult]] = {}
    failed = _gather(ray, pending, results.__setitem__)
    if failed:
        raise RuntimeError(
            f"sharpness of {len(failed)} shard(s) of {per_task} model(s) failed on Ray; first error: {failed[0][1]}"
        ) from failed[0][1]
    return [r for start in sorted(results) for r in results[start]]


def _sharpness_shard(models: list[nn.Module], task: Task, cfg: SharpnessConfig, estimator: Estimator) -> list[SharpnessResult]:
    """In a Ray worker: the local estimator on these models, on the worker's device."""
    torch.set_num_threads(1)
    device = resolve_device(cfg.device)
    return estimate_here([m.to(device) for m in models], task.to(device), cfg, estimator=estimator)
