"""The Ray back end on a real local Ray instance: the same models and sharpness as the local back ends,
a killed worker loses only its model, and a dead driver leaves no task running."""
from __future__ import annotations

import dataclasses
import functools
import os
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable

import psutil
import pytest
import torch

from sharplib.pools import cluster
from sharplib.experiments import study
from sharplib.experiments.ablation import AblationParams
from sharplib.pools.pool import checkpoint_path, init_model, load_model, read_checkpoint, save_checkpoint, train_pool
from sharplib.experiments.protocol import sharpness_config, spec, train_config
from sharplib.core.sharpness import estimate_pool_sharpness
from sharplib.core.task import Task
from sharplib.experiments.study import StudyParams
from sharplib.core.train import train_model
from tests.notebook_runner import check_parameters

REPO = Path(__file__).resolve().parents[1]
NO_RAY = 'Ray is the optional cluster extra, not installed here: pip install -e ".[cluster]" (make test installs it)'
# A local Ray instance, worker processes and timeouts: about a minute on 2 cores, so the whole module is `slow`
# (`make test-fast` leaves it out; `make test` and CI run it).
pytestmark = pytest.mark.slow


def test_without_ray_the_error_says_how_to_install(abalone_task: Task, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` fails as if it were not installed
    with pytest.raises(ImportError, match=r'pip install -e "\.\[cluster\]"'):
        train_pool("fcnn", abalone_task, train_config("fcnn", max_epochs=1, device="cpu"), [0], tmp_path, backend="ray", progress=False)


def test_the_notebooks_take_the_backend_as_a_parameter() -> None:
    setup = {"study": study, "spec": spec}  # what the imports cell gives the check cell
    namespace = check_parameters("study", setup, arch="gat", backend="ray")
    assert namespace["params"] == StudyParams("gat", profile="quick", backend="ray")  # the notebook's interactive profile
    assert AblationParams("gat", backend="ray").backend == "ray"
    for params in (StudyParams, AblationParams):
        with pytest.raises(ValueError, match="backend"):
            params("gat", backend="threads")


UNREACHABLE = """
import time
from sharplib.pools import cluster
from sharplib.core.data import load_abalone
from sharplib.pools.pool import train_pool
from sharplib.experiments.protocol import train_config
task = load_abalone({root!r})
for call in (cluster.connect, lambda: train_pool("fcnn", task, train_config("fcnn", max_epochs=1, device="cpu"), [0], {out!r},
                                                  backend="ray", progress=False)):
    start = time.monotonic()
    try:
        call()
    except ConnectionError as err:
        print(f"{{time.monotonic() - start:.2f}} s:", err, flush=True)
"""


def _closed_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (bound, then closed)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_an_unreachable_cluster_is_named_within_the_timeout(data_root: Path, tmp_path: Path) -> None:
    """Issue #24 row 2: RAY_ADDRESS=127.0.0.1:1 made connect() and backend="ray" retry for 600 s and more, silently.
    Now a ConnectionError names the address once the timeout ($SHARPLIB_RAY_CONNECT_TIMEOUT_S, here 3 s) is up."""
    pytest.importorskip("ray", reason=NO_RAY)
    address = f"127.0.0.1:{_closed_port()}"
    env = {**os.environ, "RAY_ADDRESS": address, "SHARPLIB_RAY_CONNECT_TIMEOUT_S": "3", "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    code = UNREACHABLE.format(root=str(data_root), out=str(tmp_path / "pool"))
    try:  # in a process of its own: a connect that hangs must not leave a Ray driver in this one
        run = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    except subprocess.TimeoutExpired:
        pytest.fail(f"connect() to {address}, where nothing listens, was still going after 300 s")
    errors = run.stdout.splitlines()
    assert run.returncode == 0 and len(errors) == 2, run.stdout + run.stderr[-3000:]
    for line in errors:
        seconds, message = line.split(" s: ", 1)
        assert message.startswith(f"no Ray cluster reachable at {address}: nothing accepted a connection at ") and "within 3 s" in message
        assert 3 <= float(seconds) < 60, line  # generous: a loaded machine; Ray's own retries took 600 s and more
    assert not (tmp_path / "pool").exists() or not any((tmp_path / "pool").iterdir())


@pytest.mark.parametrize("timeout_s", [0, -1, float("inf"), "30", True])
def test_a_bad_connect_timeout_is_refused_by_name(timeout_s: object) -> None:
    pytest.importorskip("ray", reason=NO_RAY)
    with pytest.raises(ValueError, match=r"connect\.timeout_s must be a number of seconds > 0"):
        cluster.connect(address=f"127.0.0.1:{_closed_port()}", timeout_s=timeout_s)


@pytest.fixture(scope="module")
def ray_local():
    """One local Ray instance with 2 CPUs for the module (it starts in ~15 s on a busy 2-core machine)."""
    ray = pytest.importorskip("ray", reason=NO_RAY)
    assert not ray.is_initialized(), "a Ray instance is already connected in this process"
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("RAY_ADDRESS", raising=False)  # this instance, not a cluster the environment names
        cluster.connect(num_cpus=2)
    yield ray
    cluster.disconnect()
    assert not ray.is_initialized()


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def _same_checkpoint(a: Path, b: Path) -> bool:
    """Same weights and the same checkpoint record, the training time aside."""
    (model_a, pa), (model_b, pb) = load_model(a), load_model(b)
    drop = lambda p: {**p, "state_dict": None, "result": {**p["result"], "seconds": None}, "digest": None}  # the digest covers the time
    return _same_weights(model_a, model_b) and drop(pa) == drop(pb)


def test_ray_pool_equals_processes_pool_and_resumes(ray_local, cora_task: Task, tmp_path: Path) -> None:
    cfg = train_config("gat", max_epochs=3, min_epochs=1, device="cpu")
    on_ray = train_pool("gat", cora_task, cfg, [0, 1, 2], tmp_path / "ray", backend="ray", progress=False)
    here = train_pool("gat", cora_task, cfg, [0, 1, 2], tmp_path / "processes", backend="processes", n_workers=1, progress=False)
    assert [e.seed for e in on_ray] == [0, 1, 2] and not any(e.reused for e in on_ray)
    for a, b in zip(on_ray, here):  # bit-identical on CPU: both train each model alone with train.train_model
        assert a.result.trained_by == "sequential" and _same_checkpoint(a.checkpoint, b.checkpoint), f"seed {a.seed}"
    again = train_pool("gat", cora_task, cfg, [0, 1, 2, 3], tmp_path / "ray", backend="ray", progress=False)
    assert [e.reused for e in again] == [True, True, True, False]
    # The checkpoints are the other back ends': the processes back end reuses what Ray trained.
    assert all(e.reused for e in train_pool("gat", cora_task, cfg, [0, 1, 2, 3], tmp_path / "ray", backend="processes", progress=False))


def test_shards_on_ray_equal_the_batched_backend(ray_local, abalone_task: Task, tmp_path: Path) -> None:
    cfg, seeds = train_config("fcnn", max_epochs=3, device="cpu"), [0, 1, 2, 3, 4]
    recorded = []

    def save(seed: int, weights: dict, result, device: str) -> None:  # what the pool passes: here a checkpoint each
        seed_cfg = dataclasses.replace(cfg, seed=seed)
        model = init_model("fcnn", seed_cfg)
        model.load_state_dict(weights)
        save_checkpoint(checkpoint_path(tmp_path / "ray", seed), "fcnn", abalone_task, seed_cfg, model, result, trained_on=device)
        recorded.append(seed)

    (tmp_path / "ray").mkdir()
    cluster.train_on_ray(abalone_task, cfg, seeds, 50, functools.partial(init_model, "fcnn"), save, models_per_task=2)
    train_pool("fcnn", abalone_task, cfg, seeds, tmp_path / "batched", backend="batched", batch_models=2, progress=False)
    assert sorted(recorded) == seeds
    for seed in seeds:  # the same stacks ([0, 1], [2, 3], [4]) give the same models, dropout draws included
        assert _same_checkpoint(checkpoint_path(tmp_path / "ray", seed), checkpoint_path(tmp_path / "batched", seed)), f"seed {seed}"


@pytest.mark.parametrize("mode", ["eval", "train"])
def test_sharpness_on_ray_equals_local(ray_local, cora_task: Task, mode: str) -> None:
    models = [init_model("gat", train_config("gat", seed=s, device="cpu")) for s in range(3)]
    cfg = sharpness_config("gat", n_restarts=3, mode=mode, device="cpu")
    on_ray = cluster.estimate_pool_sharpness(models, cora_task, cfg)
    here = estimate_pool_sharpness(models, cora_task, cfg)
    assert [(r.values, r.unperturbed, r.trace) for r in on_ray] == [(r.values, r.unperturbed, r.trace) for r in here]


def running_tasks(root: int | None = None) -> list[psutil.Process]:
    """Ray workers under process `root` (default: this one, which started the local instance) running a training task."""
    found = []
    for process in psutil.Process(root or os.getpid()).children(recursive=True):
        try:
            if " ".join(process.cmdline()).startswith("ray::_train_shard"):  # Ray titles a busy worker ray::<task>
                found.append(process)
        except psutil.Error:
            continue
    return found


def alive(process: psutil.Process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def kill_a_running_task(ready: Callable[[], bool], timeout: float = 120) -> int:
    """SIGKILL one worker that is running a training task, as soon as `ready()`; its pid."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        busy = running_tasks() if ready() else []
        if busy:
            busy[0].kill()
            return busy[0].pid
        time.sleep(0.02)
    raise AssertionError("no training task ran to be killed")


def test_killed_worker_loses_only_its_model_and_a_rerun_resumes(ray_local, abalone_task: Task, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = train_config("fcnn", max_epochs=12, tol=0.0, device="cpu")  # tol 0: every model trains 12 epochs, long enough to be caught
    seeds = [0, 1, 2]  # two train at once; the first to finish is saved, then one of the two training is killed
    monkeypatch.setattr(cluster, "TASK_RETRIES", 0)  # no retry: the failure reaches train_pool
    with ThreadPoolExecutor(1) as killer:
        killed = killer.submit(kill_a_running_task, lambda: any(tmp_path.glob("seed*.pt")))
        with pytest.raises(RuntimeError, match="failed on Ray") as failure:
            train_pool("fcnn", abalone_task, cfg, seeds, tmp_path, backend="ray", progress=False)
        killed.result()
    survivors = {s for s in seeds if checkpoint_path(tmp_path, s).exists()}
    lost = sorted(set(seeds) - survivors)
    assert len(lost) == 1 and f"seeds {lost}" in str(failure.value), "only the model in the killed worker is lost"
    assert all(read_checkpoint(checkpoint_path(tmp_path, s)) is not None for s in survivors)

    # With retries (the default), Ray reruns the task of a worker that dies: the rerun completes anyway.
    monkeypatch.setattr(cluster, "TASK_RETRIES", 3)
    with ThreadPoolExecutor(1) as killer:
        killed = killer.submit(kill_a_running_task, lambda: True)
        entries = train_pool("fcnn", abalone_task, cfg, seeds, tmp_path, backend="ray", progress=False)
        killed.result()
    assert {e.seed for e in entries if e.reused} == survivors
    seed_cfg = train_config("fcnn", max_epochs=12, tol=0.0, seed=lost[0], device="cpu")
    reference, _ = train_model(init_model("fcnn", seed_cfg), abalone_task, seed_cfg)
    assert _same_weights(load_model(checkpoint_path(tmp_path, lost[0]))[0], reference)


def test_an_interrupted_driver_cancels_its_tasks(ray_local, abalone_task: Task, tmp_path: Path) -> None:
    """Ctrl-C in a notebook stops train_pool, and the kernel (the driver) lives on: its tasks must not.
    (After the kills above: a cancelled task's worker is killed too, and the next pool starts new ones.)"""
    cfg = train_config("fcnn", max_epochs=1000, tol=0.0, device="cpu")  # minutes a model

    def interrupt() -> None:
        deadline = time.monotonic() + 120
        while not running_tasks() and time.monotonic() < deadline:  # one task at work is enough: a loaded machine starts the second late
            time.sleep(0.05)
        os.kill(os.getpid(), signal.SIGINT)

    # Ctrl-C raises KeyboardInterrupt in the main thread, even in a suite started with `&` by a script (SIGINT ignored from the start)
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with ThreadPoolExecutor(1) as helper:
            helper.submit(interrupt)
            with pytest.raises(KeyboardInterrupt):
                train_pool("fcnn", abalone_task, cfg, list(range(8)), tmp_path, backend="ray", progress=False)
    finally:
        signal.signal(signal.SIGINT, previous)
    deadline = time.monotonic() + 10
    while running_tasks() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not running_tasks(), "the interrupted pool's tasks are still running"


DRIVER = """
import sys
from sharplib.core.data import load_abalone
from sharplib.pools.pool import train_pool
from sharplib.experiments.protocol import train_config
task = load_abalone(sys.argv[1])
cfg = train_config("fcnn", max_epochs=1000, tol=0.0, device="cpu")  # minutes a model: still training when killed
train_pool("fcnn", task, cfg, [0, 1, 2, 3], sys.argv[2], backend="ray", progress=False)
"""


def test_a_dead_driver_leaves_no_task_running(ray_local, data_root: Path, tmp_path: Path) -> None:
    """A second driver, connected to the running instance as to a cluster (RAY_ADDRESS), is killed mid-pool."""
    script, out = tmp_path / "driver.py", tmp_path / "pool"
    script.write_text(DRIVER)
    # Ray turns on token authentication for the instances it starts; a driver given an address opts in.
    env = {**os.environ, "RAY_ADDRESS": ray_local.get_runtime_context().gcs_address, "RAY_AUTH_MODE": "token",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    driver = subprocess.Popen([sys.executable, str(script), str(data_root), str(out)], cwd=REPO, env=env)
    try:
        deadline = time.monotonic() + 120
        while len(running_tasks()) < 2:  # both CPUs busy with the driver's models
            assert driver.poll() is None, "the driver stopped before it could be killed"
            assert time.monotonic() < deadline, "the driver's tasks never ran"
            time.sleep(0.1)
        workers = running_tasks()
    finally:
        driver.send_signal(signal.SIGKILL)
        driver.wait()
    deadline = time.monotonic() + 20  # Ray ends a dead driver's job: its workers are killed (within 1 s here)
    while (running_tasks() or any(alive(w) for w in workers)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not running_tasks(), "a task of the dead driver is still running"
    assert not any(alive(w) for w in workers), "the dead driver's workers live on"
    assert not list(out.glob("seed*.pt")), "nothing was finished, so nothing may be written"


def test_ray_is_not_started_when_every_model_is_trained(abalone_task: Task, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = train_config("fcnn", max_epochs=1, device="cpu")
    first = train_pool("fcnn", abalone_task, cfg, [0, 1], tmp_path, backend="processes", n_workers=1, progress=False)

    def no_cluster(*args, **kwargs):
        raise AssertionError("Ray was started for a pool with nothing left to train")

    monkeypatch.setattr(cluster, "connect", no_cluster)
    again = train_pool("fcnn", abalone_task, cfg, [0, 1], tmp_path, backend="ray", progress=False)
    assert all(e.reused for e in again) and [e.result for e in again] == [e.result for e in first]


def test_the_cluster_module_does_not_import_the_pool() -> None:
    """The Ray back end hands trained models to the pool's save callback: no import cycle between the two."""
    from sharplib.pipeline.deps import imported_names

    assert "sharplib.pools.pool" not in imported_names(Path(cluster.__file__))
