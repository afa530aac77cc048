"""Pools: one checkpoint per model, reruns skip finished models, a killed run loses at most one model."""
from __future__ import annotations

import contextlib
import dataclasses
import errno
import io
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Iterator

import pytest
import torch

from sharplib.core.data import load_abalone
from sharplib.core.functional import evaluate
from sharplib.pools.pool import (
    CheckpointError, batched_groups, checkpoint_path, init_model, intra_op_threads, load_model, read_checkpoint, train_pool,
)
from sharplib.experiments.protocol import train_config
from sharplib.core.task import Task
from sharplib.core.train import TrainConfig, train_model

REPO = Path(__file__).resolve().parents[1]


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_checkpoints_are_written_and_reused(abalone_task: Task, tmp_path: Path) -> None:
    cfg = train_config("fcnn", max_epochs=3, device="cpu")
    first = train_pool("fcnn", abalone_task, cfg, [0, 1, 2], tmp_path, progress=False)
    assert [e.reused for e in first] == [False] * 3
    assert [e.result.seed for e in first] == [0, 1, 2]
    payload = read_checkpoint(checkpoint_path(tmp_path, 1))
    assert payload["config"]["seed"] == 1 and payload["result"]["trained_by"] == "batched"
    again = train_pool("fcnn", abalone_task, cfg, [0, 1, 2, 3], tmp_path, progress=False)
    assert [e.reused for e in again] == [True, True, True, False]
    changed = train_pool("fcnn", abalone_task, train_config("fcnn", max_epochs=2, device="cpu"), [0], tmp_path, progress=False)
    assert not changed[0].reused, "a different config must retrain, not reuse"


def test_loaded_model_is_the_trained_one(abalone_task: Task, tmp_path: Path) -> None:
    cfg = train_config("fcnn", seed=4, max_epochs=2, device="cpu")
    (entry,) = train_pool("fcnn", abalone_task, cfg, [4], tmp_path, backend="processes", n_workers=1, progress=False)
    model, payload = load_model(entry.checkpoint)
    reference, result = train_model(init_model("fcnn", cfg), abalone_task, cfg)
    assert _same_weights(model, reference) and not model.training
    assert payload["result"]["test_loss"] == result.test_loss


def test_unreadable_checkpoint_is_retrained(abalone_task: Task, tmp_path: Path) -> None:
    cfg = train_config("fcnn", max_epochs=2, device="cpu")
    train_pool("fcnn", abalone_task, cfg, [0], tmp_path, progress=False)
    checkpoint_path(tmp_path, 0).write_bytes(b"truncated")
    with pytest.warns(UserWarning, match="seed0000.pt"):
        (entry,) = train_pool("fcnn", abalone_task, cfg, [0], tmp_path, progress=False)
    assert not entry.reused and read_checkpoint(entry.checkpoint) is not None


@pytest.mark.slow
def test_worker_processes_match_in_process_training(tasks: dict[str, Task], tmp_path: Path) -> None:
    cfg = train_config("lenet5", max_epochs=1, device="cpu")
    entries = train_pool("lenet5", tasks["lenet5"], cfg, [0, 1], tmp_path, backend="processes", n_workers=2, progress=False)
    for entry in entries:
        model, _ = load_model(entry.checkpoint)
        seed_cfg = train_config("lenet5", max_epochs=1, seed=entry.seed, device="cpu")
        reference, _ = train_model(init_model("lenet5", seed_cfg), tasks["lenet5"], seed_cfg)
        assert _same_weights(model, reference), f"seed {entry.seed} differs when trained in a worker"


def test_bad_seeds_and_backend(abalone_task: Task, tmp_path: Path) -> None:
    cfg = train_config("fcnn", device="cpu")
    with pytest.raises(ValueError, match="distinct"):
        train_pool("fcnn", abalone_task, cfg, [1, 1], tmp_path)
    with pytest.raises(ValueError, match="backend"):
        train_pool("fcnn", abalone_task, cfg, [1], tmp_path, backend="threads")


# ---------------------------------------------------------------- issue #12: what a careful user tried

def _flip(path: Path, data: bytes, offset: int, n: int = 8) -> None:
    """Invert n bytes of `path`, `offset` bytes into the first place where `data` occurs."""
    raw = path.read_bytes()
    at = raw.index(data) + offset
    path.write_bytes(raw[:at] + bytes(b ^ 0xFF for b in raw[at : at + n]) + raw[at + n :])


def test_damaged_checkpoint_is_retrained_not_reused(abalone_task: Task, tmp_path: Path) -> None:
    """Row 3: 8 bytes flipped inside a weight tensor; the old code reused the model (its test loss no longer its own)."""
    cfg = train_config("fcnn", max_epochs=2, device="cpu")
    train_pool("fcnn", abalone_task, cfg, [0], tmp_path, progress=False)
    path = checkpoint_path(tmp_path, 0)
    weight = load_model(path)[0].fc2.weight.detach()
    _flip(path, weight.numpy().tobytes()[:64], offset=400)
    with pytest.raises(CheckpointError, match="seed0000.pt is damaged"):
        load_model(path)
    with pytest.warns(UserWarning, match="seed0000.pt is damaged"):
        (entry,) = train_pool("fcnn", abalone_task, cfg, [0], tmp_path, progress=False)
    assert not entry.reused
    model, payload = load_model(entry.checkpoint)
    assert evaluate(model, abalone_task)[0] == pytest.approx(payload["result"]["test_loss"], rel=1e-6)


@pytest.mark.parametrize("foreign", [{"foo": 1}, [1, 2], {"config_hash": "x", "result": {}}, {"format": "sharplib-checkpoint-2"}])
def test_foreign_file_is_retrained_not_a_crash(foreign: object, abalone_task: Task, tmp_path: Path) -> None:
    """Row 5: a valid torch file that is not a checkpoint of ours crashed the pool (KeyError, TypeError)."""
    cfg = train_config("fcnn", max_epochs=2, device="cpu")
    torch.save(foreign, checkpoint_path(tmp_path, 1))
    with pytest.raises(CheckpointError, match="seed0001.pt"):
        load_model(checkpoint_path(tmp_path, 1))
    with pytest.warns(UserWarning, match="seed0001.pt is (not a checkpoint|damaged)"):
        (entry,) = train_pool("fcnn", abalone_task, cfg, [1], tmp_path, progress=False)
    assert not entry.reused and read_checkpoint(entry.checkpoint) is not None


def test_other_data_is_not_reused(data_root: Path, abalone_task: Task, tmp_path: Path) -> None:
    """Row 4: the resume key held the task's name, so a pool on another split was reused whole."""
    cfg = train_config("fcnn", max_epochs=2, device="cpu")
    train_pool("fcnn", abalone_task, cfg, [0, 1], tmp_path, progress=False)
    again = train_pool("fcnn", load_abalone(data_root), cfg, [0, 1], tmp_path, progress=False)  # the same data, read again
    assert all(e.reused for e in again)
    other_split = train_pool("fcnn", load_abalone(data_root, seed=7), cfg, [0, 1], tmp_path, progress=False)
    assert not any(e.reused for e in other_split)
    fewer_rows = dataclasses.replace(abalone_task, x_train=abalone_task.x_train[:1000], y_train=abalone_task.y_train[:1000])
    assert not any(e.reused for e in train_pool("fcnn", fewer_rows, cfg, [0, 1], tmp_path, progress=False))


def test_one_folder_never_mixes_batched_and_sequential_models(abalone_task: Task, tmp_path: Path) -> None:
    """Row 12: batched and sequential training differ by ~1e-4; the key ignored the backend, so a folder mixed them."""
    cfg = train_config("fcnn", max_epochs=2, device="cpu")
    train_pool("fcnn", abalone_task, cfg, [0, 1], tmp_path, backend="batched", progress=False)
    with pytest.raises(ValueError, match="trained batched, and backend='processes' would add models trained sequential"):
        train_pool("fcnn", abalone_task, cfg, [0, 1, 2], tmp_path, backend="processes", n_workers=1, progress=False)
    assert not checkpoint_path(tmp_path, 2).exists()
    # "auto" carries on the way the folder began (for the FCNN it would otherwise pick batched).
    other = tmp_path / "sequential"
    train_pool("fcnn", abalone_task, cfg, [0], other, backend="processes", n_workers=1, progress=False)
    entries = train_pool("fcnn", abalone_task, cfg, [0, 1], other, progress=False)
    assert [e.result.trained_by for e in entries] == ["sequential", "sequential"] and [e.reused for e in entries] == [True, False]


def _no_training(monkeypatch: pytest.MonkeyPatch) -> None:
    import sharplib.pools.pool as pool

    for name in ("train_batched", "train_model"):
        monkeypatch.setattr(pool, name, lambda *a, **k: pytest.fail("a model was trained before the bad input was refused"))


def test_out_dir_that_cannot_be_created_is_refused_before_training(
    abalone_task: Task, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Row 8: every model trained first, then NotADirectoryError."""
    _no_training(monkeypatch)
    (tmp_path / "a-file").write_text("")
    with pytest.raises(ValueError, match="train_pool.out_dir .* cannot be created: .*a-file is not a folder"):
        train_pool("fcnn", abalone_task, train_config("fcnn", device="cpu"), [0, 1], tmp_path / "a-file" / "pool", progress=False)


@pytest.mark.parametrize("seeds", [[0.5], [1.0], [True], [-1], [], "01"])
def test_seeds_that_are_not_integers_are_refused(
    seeds: object, abalone_task: Task, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Row 9: seeds=[0.5] failed with `Unknown format code 'd' for object of type 'float'`."""
    _no_training(monkeypatch)
    with pytest.raises(ValueError, match="train_pool: seeds must be"):
        train_pool("fcnn", abalone_task, train_config("fcnn", device="cpu"), seeds, tmp_path, progress=False)


def test_a_model_that_does_not_fit_the_task_is_refused_before_training(abalone_task: Task, cora_task: Task, tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """Row 11: a GAT on Abalone failed inside training (`GAT.forward() missing ... 'edge_index'`)."""
    _no_training(monkeypatch)
    with pytest.raises(ValueError, match="model GAT does not fit task 'abalone'"):
        train_pool("gat", abalone_task, train_config("gat", device="cpu"), [0, 1], tmp_path, progress=False)
    with pytest.raises(ValueError, match="model FCNN does not fit task 'cora'"):
        train_pool("fcnn", cora_task, train_config("fcnn", device="cpu"), [0, 1], tmp_path, progress=False)


def test_stale_temporary_files_are_removed(abalone_task: Task, tmp_path: Path) -> None:
    """Row 10: `.seed0003.pt.<pid>.tmp` of a killed writer stayed forever."""
    gone = subprocess.Popen(["true"])
    gone.wait()
    stale = tmp_path / f".seed0003.pt.{gone.pid}.tmp"
    live = tmp_path / f".seed0004.pt.{os.getpid()}.tmp"  # a writer that is still running keeps its file
    stale.write_bytes(b"half a model")
    live.write_bytes(b"half a model")
    train_pool("fcnn", abalone_task, train_config("fcnn", max_epochs=1, device="cpu"), [0], tmp_path, progress=False)
    assert not stale.exists() and live.exists()


KILLED_POOL = """
import sys
from sharplib.core.data import load_abalone
from sharplib.pools.pool import train_pool
from sharplib.experiments.protocol import train_config
if __name__ == "__main__":
    task = load_abalone(sys.argv[1])
    cfg = train_config("fcnn", max_epochs=4, device="cpu")
    train_pool("fcnn", task, cfg, list(range(8)), sys.argv[2], backend="processes", n_workers=1, progress=False)
"""


@pytest.mark.slow
def test_killed_pool_resumes_where_it_stopped(data_root: Path, abalone_task: Task, tmp_path: Path) -> None:
    script = tmp_path / "pool.py"
    script.write_text(KILLED_POOL)
    out = tmp_path / "pool"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen([sys.executable, str(script), str(data_root), str(out)], cwd=REPO, env=env)
    try:
        deadline = time.monotonic() + 300
        while len(list(out.glob("seed*.pt"))) < 2:
            assert process.poll() is None, "the pool finished or crashed before it could be killed"
            assert time.monotonic() < deadline, "no checkpoints appeared"
            time.sleep(0.05)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    survivors = {int(p.stem[4:]) for p in out.glob("seed*.pt")}
    assert 2 <= len(survivors) < 8
    cfg = train_config("fcnn", max_epochs=4, device="cpu")
    entries = train_pool("fcnn", abalone_task, cfg, list(range(8)), out, backend="processes", n_workers=1, progress=False)
    assert {e.seed for e in entries if e.reused} == survivors
    for entry in entries:  # resumed or not, every model is the one an uninterrupted run gives
        model, _ = load_model(entry.checkpoint)
        seed_cfg = train_config("fcnn", max_epochs=4, seed=entry.seed, device="cpu")
        reference, _ = train_model(init_model("fcnn", seed_cfg), abalone_task, seed_cfg)
        assert _same_weights(model, reference), f"seed {entry.seed}"


ORPHANED_POOL = """
from sharplib.core.data import load_abalone
from sharplib.pools.pool import train_pool
from sharplib.core.train import TrainConfig
task = load_abalone({root!r})
cfg = TrainConfig(lr=0.01, tol=0.0, min_epochs=20, max_epochs=20, device="cpu")  # about a second per model
train_pool("fcnn", task, cfg, list(range(60)), {out!r}, backend="processes", n_workers=2, progress=False)
"""


@contextlib.contextmanager
def _pool_parent(runner: str, code: str, tmp_path: Path) -> Iterator[subprocess.Popen]:
    """The process that runs `code`: a plain script, or a notebook kernel started the way papermill starts it."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO), "JUPYTER_PREFER_ENV_PATH": "1"}
    if runner == "script":
        script = tmp_path / "pool.py"
        script.write_text('if __name__ == "__main__":\n' + textwrap.indent(code, "    "))
        process = subprocess.Popen([sys.executable, str(script)], cwd=REPO, env=env)
        try:
            yield process
        finally:
            process.kill()
            process.wait()
        return
    from jupyter_client.manager import KernelManager

    kernel = KernelManager(kernel_name="python3")
    kernel.start_kernel(cwd=str(REPO), env=env)
    client = kernel.client()
    client.start_channels()
    try:
        client.wait_for_ready(timeout=300)
        client.execute(code)
        yield kernel.provisioner.process
    finally:
        client.stop_channels()
        if kernel.is_alive():
            kernel.shutdown_kernel(now=True)
        kernel.cleanup_resources()


def _descendants(pid: int) -> set[tuple[int, str]]:
    """(pid, start time) of every process below `pid`: the start time tells a later process with a reused pid apart."""
    found, todo = set(), [pid]
    while todo:
        for task in Path(f"/proc/{todo.pop()}/task").glob("*"):
            try:
                children = (task / "children").read_text().split()
            except OSError:
                continue
            for child in map(int, children):
                found.add((child, _start_time(child)))
                todo.append(child)
    return found


def _start_time(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return ""


def _running(pid: int, start: str) -> bool:
    """Alive and not a zombie (an orphan that died but that no init has reaped yet is gone for our purposes)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return _start_time(pid) == start and state not in ("Z", "X")


@pytest.mark.slow
@pytest.mark.parametrize("runner", ["script", "kernel"])
def test_workers_die_with_a_killed_parent(runner: str, data_root: Path, tmp_path: Path) -> None:
    """Rows 1 and 2: after `kill -9` of the pool's process (a script, or the notebook kernel that papermill gives up on
    after Ctrl-C of make) its spawn workers and the resource tracker lived on, kept saving models, then blocked
    forever, holding make's output pipe open. Now nothing it started survives it, and nothing is saved after it."""
    out = tmp_path / "pool"
    started: set[tuple[int, str]] = set()
    with _pool_parent(runner, ORPHANED_POOL.format(root=str(data_root), out=str(out)), tmp_path) as parent:
        try:
            deadline = time.monotonic() + 300  # generous: spawning two workers that import torch is slow on a loaded machine
            while not any(out.glob("seed*.pt")):
                assert parent.poll() is None, "the pool's process ended before it could be killed"
                assert time.monotonic() < deadline, "no checkpoint appeared"
                started |= _descendants(parent.pid)
                time.sleep(0.1)
            started |= _descendants(parent.pid)
            parent.kill()
            parent.wait()
            saved = {p.name for p in out.glob("seed*.pt")}
            assert len(saved) < 60, "the pool finished before it could be killed"
            assert len(started) >= 2, f"expected the workers among the pool's processes, found {started}"
            deadline = time.monotonic() + 10  # once none is left, nothing can save a model any more
            while (survivors := [pid for pid, start in started if _running(pid, start)]) and time.monotonic() < deadline:
                time.sleep(0.2)
            assert not survivors, f"processes of the killed pool still running 10 s later: {survivors}"
            assert {p.name for p in out.glob("seed*.pt")} == saved, "a checkpoint appeared after the pool's process was killed"
        finally:
            for pid, start in started:  # never leave training processes behind on the test machine
                if _running(pid, start):
                    os.kill(pid, signal.SIGKILL)


# Keys computed on main (03cd4b6) before TrainConfig.target_loss existed: a field added unset must not
# change them, or every existing pool would retrain. The task only lends its name and data digest to the key.
KEYS_BEFORE_TARGET_LOSS = {"fcnn": "cf4811dd7a321400", "lenet5": "1ecc97935df11e15", "gat": "d8b77310a017bf70"}


def test_existing_resume_keys_are_unchanged() -> None:
    from types import SimpleNamespace

    from sharplib.pools.pool import pool_hash

    task = SimpleNamespace(name="abalone", fingerprint="0" * 64)
    for arch, key in KEYS_BEFORE_TARGET_LOSS.items():
        assert pool_hash(arch, task, train_config(arch, seed=7)) == key, arch
    assert pool_hash("fcnn", task, TrainConfig(lr=0.1)) == "3b04ea480ce1ae81"
    targeted = train_config("fcnn", seed=7, target_loss=0.5)
    assert pool_hash("fcnn", task, targeted) not in KEYS_BEFORE_TARGET_LOSS.values()  # another pool
    assert pool_hash("fcnn", task, targeted) != pool_hash("fcnn", task, train_config("fcnn", seed=7, target_loss=0.4))


# ---------------------------------------------------------------- issue #24: reliability, second round

def _numbers(entry) -> dict:
    """Every number of a pool's model: its TrainResult (the time aside) and its weights."""
    model, _ = load_model(entry.checkpoint)
    return {**{k: v for k, v in entry.result.as_dict().items() if k != "seconds"}, **{k: v.tolist() for k, v in model.state_dict().items()}}


@pytest.mark.slow
def test_resumed_processes_pool_is_bit_identical_to_an_uninterrupted_one(
    cora_task: Task, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Row 3: the one model left of a GAT pool was retrained in the calling process with its 2 threads, where the
    workers use 1: its test loss differed in the 7th digit. Now it trains with the workers' thread count."""
    import sharplib.pools.pool as pool

    cfg = train_config("gat", max_epochs=5, min_epochs=5, device="cpu")
    threads_used = []
    real_train_model = pool.train_model
    monkeypatch.setattr(pool, "train_model", lambda *a: (threads_used.append(torch.get_num_threads()), real_train_model(*a))[1])
    with intra_op_threads(2):  # the calling process, as a notebook or script runs it
        whole = train_pool("gat", cora_task, cfg, [0, 1], tmp_path / "whole", backend="processes", n_workers=2, progress=False)
        shutil.copytree(tmp_path / "whole", tmp_path / "resumed")
        checkpoint_path(tmp_path / "resumed", 1).write_bytes(b"damaged")  # as the issue did: the one model left is retrained
        with pytest.warns(UserWarning, match="seed0001.pt"):
            resumed = train_pool("gat", cora_task, cfg, [0, 1], tmp_path / "resumed", backend="processes", n_workers=2, progress=False)
        assert torch.get_num_threads() == 2, "the calling process's thread count was not restored"
    assert [e.reused for e in resumed] == [True, False] and threads_used == [1], f"trained here with {threads_used} thread(s)"
    for a, b in zip(whole, resumed):
        assert _numbers(a) == _numbers(b), f"seed {a.seed}"


def test_batched_groups_keep_the_stacks_of_the_requested_seeds() -> None:
    assert batched_groups([0, 1, 2, 3, 4], {0, 1, 2, 3, 4}, 2) == [[0, 1], [2, 3], [4]]
    assert batched_groups([0, 1, 2, 3, 4], {3}, 2) == [[2, 3]]  # a stack trains whole, or not at all
    assert batched_groups([0, 1, 2, 3, 4], set(), 2) == []


@pytest.mark.parametrize("arch", ["gat", "fcnn"])
def test_resumed_batched_pool_is_bit_identical_to_an_uninterrupted_one(arch: str, tasks: dict[str, Task], tmp_path: Path) -> None:
    """Row 3, batched: the GAT's stack draws its dropout from one stream for the stack, and on the CPU a stack of
    one FCNN runs other kernels than a stack of three; a model retrained alone after an interruption differed."""
    cfg = train_config(arch, max_epochs=3, min_epochs=3, device="cpu")
    task = tasks[arch]
    whole = train_pool(arch, task, cfg, [0, 1, 2], tmp_path / "whole", backend="batched", progress=False)
    shutil.copytree(tmp_path / "whole", tmp_path / "resumed")
    checkpoint_path(tmp_path / "resumed", 1).unlink()  # as after an interruption: seed 1 never finished
    kept = checkpoint_path(tmp_path / "resumed", 0).read_bytes()
    resumed = train_pool(arch, task, cfg, [0, 1, 2], tmp_path / "resumed", backend="batched", progress=False)
    assert [e.reused for e in resumed] == [True, False, True]
    assert checkpoint_path(tmp_path / "resumed", 0).read_bytes() == kept, "a stack mate was written again"
    for a, b in zip(whole, resumed):
        assert _numbers(a) == _numbers(b), f"seed {a.seed}"


def test_a_folder_where_a_checkpoint_goes_is_refused_before_training(
    abalone_task: Task, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Row 5: a folder named seed0002.pt crashed the pool after training (IsADirectoryError)."""
    _no_training(monkeypatch)
    (tmp_path / "seed0002.pt").mkdir()
    with pytest.raises(ValueError, match=r"train_pool: .*seed0002\.pt is not a file, and seed 2's checkpoint goes there"):
        train_pool("fcnn", abalone_task, train_config("fcnn", max_epochs=1, device="cpu"), [1, 2], tmp_path, progress=False)


class _FullDisk:
    """The folder `folder` on a disk with `free` bytes left: a write past them fails as on a real full disk, both
    through Python's open (OSError ENOSPC) and through torch's own file writer (its RuntimeError, as seen in issue #24)."""

    def __init__(self, folder: Path, free: int, monkeypatch: pytest.MonkeyPatch) -> None:
        import builtins

        self.folder, self.free, self._open, self._save = folder, free, builtins.open, torch.save
        monkeypatch.setattr(builtins, "open", self.open)
        monkeypatch.setattr(torch, "save", self.save)

    def open(self, file, mode="r", *args, **kwargs):
        handle = self._open(file, mode, *args, **kwargs)
        if isinstance(file, (str, os.PathLike)) and Path(file).parent == self.folder and "w" in mode:
            handle.write = self._writer(handle.write)
        return handle

    def _writer(self, write):
        def filling(data) -> int:
            data = bytes(data)
            if len(data) > self.free:
                write(data[: self.free])
                self.free = 0
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            self.free -= len(data)
            return write(data)

        return filling

    def save(self, obj, f, *args, **kwargs) -> None:
        if not (isinstance(f, (str, os.PathLike)) and Path(f).parent == self.folder):
            return self._save(obj, f, *args, **kwargs)
        buffer = io.BytesIO()
        self._save(obj, buffer, *args, **kwargs)
        try:
            with self.open(f, "wb") as out:
                out.write(buffer.getvalue())
        except OSError:
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 5056 vs 4944") from None


def test_a_full_disk_is_named_and_keeps_the_checkpoints_written(
    abalone_task: Task, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Row 6: a pool on a 160 KiB filesystem failed with `[enforce fail at inline_container.cc:672] . unexpected pos`."""
    cfg = train_config("fcnn", max_epochs=1, device="cpu")
    (first,) = train_pool("fcnn", abalone_task, cfg, [0], tmp_path / "sized", progress=False)
    out = tmp_path / "pool"
    out.mkdir()
    with monkeypatch.context() as patch:
        _FullDisk(out, free=first.checkpoint.stat().st_size * 3 // 2, monkeypatch=patch)  # room for one checkpoint and a half
        with pytest.raises(OSError, match=r"no space left on device for the checkpoint .*seed0001\.pt") as err:
            train_pool("fcnn", abalone_task, cfg, [0, 1, 2], out, progress=False)
    assert err.value.errno == errno.ENOSPC
    assert sorted(p.name for p in out.iterdir()) == ["seed0000.pt"], "a temporary file was left, or the intact checkpoint removed"
    entries = train_pool("fcnn", abalone_task, cfg, [0, 1, 2], out, progress=False)
    assert [e.reused for e in entries] == [True, False, False]


POOL_FROM_STDIN = """
from sharplib.core.data import load_abalone
from sharplib.pools.pool import train_pool
from sharplib.experiments.protocol import train_config
task = load_abalone({root!r})
entries = train_pool("fcnn", task, train_config("fcnn", max_epochs=1, device="cpu"), [0, 1], {out!r}, backend="processes",
                     n_workers=2, progress=False)
print("trained", [e.seed for e in entries])
"""


def test_processes_backend_from_standard_input_trains_in_one_process(data_root: Path, tmp_path: Path) -> None:
    """Row 8: the README's pool example run from standard input: the workers failed (FileNotFoundError '<stdin>'),
    the parent with BrokenProcessPool. Now one warning line says why, and the pool trains in the calling process."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    code = POOL_FROM_STDIN.format(root=str(data_root), out=str(tmp_path / "pool"))
    run = subprocess.run([sys.executable, "-"], input=code, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "trained [0, 1]" in run.stdout
    assert "trains in this process only" in run.stderr and "'<stdin>' is not a file" in run.stderr and "__main__" in run.stderr
    assert sorted(p.name for p in (tmp_path / "pool").iterdir()) == ["seed0000.pt", "seed0001.pt"]


@pytest.mark.parametrize("out_dir", ["/proc/x", "/proc/x/pool", f"{'x' * 300}/pool"])
def test_an_out_dir_that_cannot_be_written_is_refused_before_training(out_dir: str, abalone_task: Task, tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """Row 9: out_dir="/proc/x" passed the check (os.access says yes to root) and failed with a raw FileNotFoundError."""
    _no_training(monkeypatch)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match=r"train_pool\.out_dir = .* cannot be written"):
        train_pool("fcnn", abalone_task, train_config("fcnn", device="cpu"), [0], out_dir, progress=False)
    assert list(tmp_path.iterdir()) == [], "the check left something behind"


def test_a_cpu_device_with_an_index_is_refused_by_name() -> None:
    """Row 9: device="cpu:3" was accepted (torch runs it on the one CPU device)."""
    with pytest.raises(ValueError, match=r"TrainConfig\.device: device 'cpu:3' does not exist: the CPU is one device, 'cpu'"):
        train_config("fcnn", device="cpu:3")
    assert train_config("fcnn", device="cpu:0").device == "cpu:0"


def test_estimate_pool_sharpness_runs_where_the_backend_says(
    abalone_task: Task, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One entry point for a pool's sharpness: here for every back end but Ray, which gets the same call."""
    import sharplib.pools.cluster as cluster
    from sharplib.core.sharpness import estimate_pool_sharpness as estimate_here
    from sharplib.experiments.protocol import sharpness_config
    from sharplib.pools.pool import estimate_pool_sharpness

    entries = train_pool("fcnn", abalone_task, train_config("fcnn", max_epochs=1, device="cpu"), [0, 1], tmp_path, progress=False)
    models = [load_model(e.checkpoint, "cpu")[0] for e in entries]
    cfg = sharpness_config("fcnn", n_restarts=2, device="cpu")
    expected = [r.mean for r in estimate_here(models, abalone_task, cfg)]
    for backend in ("auto", "batched", "processes"):
        assert [r.mean for r in estimate_pool_sharpness(models, abalone_task, cfg, backend=backend)] == expected
    calls = []
    monkeypatch.setattr(cluster, "estimate_pool_sharpness", lambda models, task, cfg, estimator: calls.append(len(models)) or [])
    assert estimate_pool_sharpness(models, abalone_task, cfg, backend="ray") == [] and calls == [2]
    with pytest.raises(ValueError, match="backend"):
        estimate_pool_sharpness(models, abalone_task, cfg, backend="mpi")
