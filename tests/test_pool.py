"""Pools: one checkpoint per model, reruns skip finished models, a killed run loses at most one model."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from sharplib.pool import checkpoint_path, init_model, load_model, read_checkpoint, train_pool
from sharplib.protocol import train_config
from sharplib.task import Task
from sharplib.train import train_model

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


KILLED_POOL = """
import sys
from sharplib.data import load_abalone
from sharplib.pool import train_pool
from sharplib.protocol import train_config
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
