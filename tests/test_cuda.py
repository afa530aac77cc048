"""The CUDA path gives what the CPU path gives. Skipped where torch sees no CUDA device (as in CI).

Same seed => same batches S (they are drawn on the CPU), so per-restart values can be compared
directly. Tolerances leave room for GPU arithmetic (TF32 convolutions, other reduction orders).
"""
from __future__ import annotations

import copy
import dataclasses
import math
from pathlib import Path

import pytest
import torch
from torch import nn

from sharplib.core.archs import ARCHS
from sharplib.experiments import protocol
from sharplib.core.data import load_task
from sharplib.pools.pool import init_model
from sharplib.core.sharpness import estimate_pool_sharpness, estimate_sharpness
from sharplib.core.task import Task, resolve_device
from sharplib.core.train import TrainResult, train_batched, train_model

pytestmark = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]

VALUE_ATOL = 1e-4  # per restart: best perturbed loss - unperturbed loss
LOSS_RTOL = 1e-3  # the losses behind them
# A model's estimate pooled with others vs alone: GPU reductions depend on the batch shape. Measured on an H200
# (benchmarks/cuda_graph.py, docs/runs/2026-11-26-h200-cuda-graph.txt): at most 2.0e-6 for LeNet-5 pools of 3 to 50,
# on values up to 1.6e-3; 1e-6 failed once. Five times the measured spread:
POOL_ATOL = 1e-5


def _small(task: Task) -> Task:
    """FashionMNIST cut to 2048 training images: enough to train a model a little, quickly."""
    if task.name != "fashion_mnist":
        return task
    return dataclasses.replace(task, x_train=task.x_train[:2048], y_train=task.y_train[:2048])


@pytest.fixture(scope="module")
def cpu_tasks(data_root: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Task]:
    cache = tmp_path_factory.mktemp("fmnist-cache")
    return {arch: _small(load_task(arch, data_root, cache_dir=cache) if arch == "lenet5" else load_task(arch, data_root)) for arch in ARCHS}


def _train(arch: str, task: Task, device: str, seed: int = 0) -> tuple[nn.Module, TrainResult]:
    cfg = protocol.train_config(arch, max_epochs=protocol.spec(arch).min_epochs + 1, seed=seed, device=device)
    return train_model(init_model(arch, cfg), task, cfg)


@pytest.fixture(scope="module")
def cpu_models(cpu_tasks: dict[str, Task]) -> dict[str, nn.Module]:
    """One briefly trained model per architecture, on the CPU."""
    return {arch: _train(arch, task, "cpu")[0] for arch, task in cpu_tasks.items()}


@pytest.mark.parametrize("arch", ARCHS)
def test_sharpness_on_cuda_equals_cpu(arch: str, cpu_tasks: dict[str, Task], cpu_models: dict[str, nn.Module]) -> None:
    cfg = protocol.sharpness_config(arch, n_restarts=8, device="cpu")
    on_cpu = estimate_sharpness(cpu_models[arch], cpu_tasks[arch], cfg)
    on_cuda = estimate_sharpness(cpu_models[arch], cpu_tasks[arch], dataclasses.replace(cfg, device="cuda"))
    assert on_cuda.values == pytest.approx(on_cpu.values, abs=VALUE_ATOL)
    assert sum(on_cuda.trace, []) == pytest.approx(sum(on_cpu.trace, []), rel=LOSS_RTOL)
    assert not cpu_models[arch].training, "the estimator must leave the model's mode as it found it"


@pytest.mark.parametrize("arch", ARCHS)
def test_pool_on_cuda_equals_each_model_alone(arch: str, cpu_tasks: dict[str, Task], cpu_models: dict[str, nn.Module]) -> None:
    task = cpu_tasks[arch].to("cuda")
    models = [copy.deepcopy(cpu_models[arch]).to("cuda"), *(_train(arch, cpu_tasks[arch], "cuda", seed=s)[0] for s in (1, 2))]
    cfg = protocol.sharpness_config(arch, n_restarts=4, device="cuda")
    pooled = estimate_pool_sharpness(models, task, cfg)  # the CUDA default: all three in one vmapped call
    for result, model in zip(pooled, models):
        alone = estimate_sharpness(model, task, cfg)
        assert result.values == pytest.approx(alone.values, abs=POOL_ATOL)


def test_fcnn_trains_on_cuda_as_on_cpu(cpu_tasks: dict[str, Task]) -> None:
    """No dropout and a CPU-drawn data order: the two devices differ only by float rounding."""
    model_cpu, on_cpu = _train("fcnn", cpu_tasks["fcnn"], "cpu")
    model_cuda, on_cuda = _train("fcnn", cpu_tasks["fcnn"], "cuda")
    assert next(model_cuda.parameters()).is_cuda
    assert on_cuda.epochs == on_cpu.epochs
    assert on_cuda.test_loss == pytest.approx(on_cpu.test_loss, rel=1e-3)
    for p_cpu, p_cuda in zip(model_cpu.parameters(), model_cuda.parameters()):
        assert torch.allclose(p_cuda.cpu(), p_cpu, atol=1e-4)


@pytest.mark.parametrize("arch", ARCHS)
def test_a_cpu_built_model_trains_and_evaluates_on_cuda(arch: str, cpu_tasks: dict[str, Task]) -> None:
    """train_model once left a lone CPU-built model on the CPU and failed in its final evaluation
    ("Expected all tensors to be on the same device"); the model must follow cfg.device."""
    cfg = protocol.train_config(arch, max_epochs=1, min_epochs=1, device="cuda")
    model = init_model(arch, cfg)
    assert not next(model.parameters()).is_cuda
    trained, result = train_model(model, cpu_tasks[arch], cfg)
    assert trained is model and all(p.is_cuda for p in trained.parameters())
    assert math.isfinite(result.train_loss) and math.isfinite(result.test_loss)


def test_gat_trains_on_cuda(cpu_tasks: dict[str, Task]) -> None:
    """Dropout masks come from the device's generator, so only the loss is compared, loosely."""
    _, on_cpu = _train("gat", cpu_tasks["gat"], "cpu")
    model, on_cuda = _train("gat", cpu_tasks["gat"], "cuda")
    assert next(model.parameters()).is_cuda
    assert not on_cuda.diverged
    assert on_cuda.test_loss == pytest.approx(on_cpu.test_loss, rel=0.05)


def test_auto_device_is_cuda(cpu_tasks: dict[str, Task]) -> None:
    assert resolve_device("auto").type == "cuda"
    cfg = protocol.train_config("fcnn", max_epochs=1, device="auto")
    model, _ = train_model(init_model("fcnn", cfg), cpu_tasks["fcnn"], cfg)
    assert next(model.parameters()).is_cuda
    # sharpness with device="auto" follows the task and the model: both on CUDA here
    result = estimate_sharpness(model, cpu_tasks["fcnn"].to("cuda"), protocol.sharpness_config("fcnn", n_restarts=2))
    assert len(result.values) == 2


@pytest.mark.parametrize("arch", ARCHS)
def test_every_ablation_row_runs_on_cuda(arch: str, cpu_tasks: dict[str, Task], data_root: Path, tmp_path: Path) -> None:
    # The reference arm is switches on the main path: every row (retrained pools included) runs on the GPU.
    from sharplib.experiments import ablation, reference

    task = cpu_tasks[arch].to("cuda")
    df = ablation.run_ablation(
        arch,
        task,
        range(3),
        tmp_path,
        n_restarts=2,
        n_resamples=50,
        train_overrides={"max_epochs": 1, "min_epochs": 1, "device": "cuda"},
        sharpness_overrides={"device": "cuda"},
        data_root=str(data_root),
        progress=False,
    )
    assert list(df["variant"]) == ["report", "reference code", *reference.applicable(arch)]
    assert df["tau"].notna().all()
    devices = {torch.load(p, weights_only=False)["device"] for p in tmp_path.glob("pool*/seed*.pt")}
    assert devices == {"cuda"} or devices == {"cuda:0"}, devices


def test_lenet5_stack_trains_the_same_from_a_cuda_graph(cpu_tasks: dict[str, Task]) -> None:
    """The captured graph replays the eager step's kernels: the same weights and epoch losses, dropout draws included."""
    task = cpu_tasks["lenet5"]
    cfgs = [protocol.train_config("lenet5", seed=s, max_epochs=2, min_epochs=2, device="cuda") for s in range(4)]
    eager = train_batched([init_model("lenet5", c) for c in cfgs], task, cfgs, cuda_graph=False)
    graphed = train_batched([init_model("lenet5", c) for c in cfgs], task, cfgs, cuda_graph=True)
    for (model_e, result_e), (model_g, result_g) in zip(eager, graphed):
        assert result_g.epoch_losses == pytest.approx(result_e.epoch_losses, rel=1e-5)
        for (name, w_e), w_g in zip(model_e.state_dict().items(), model_g.state_dict().values()):
            torch.testing.assert_close(w_g, w_e, rtol=1e-5, atol=1e-5, msg=name)


def test_sharpness_along_training_reads_cpu_checkpoints_into_a_cuda_task(cpu_tasks: dict[str, Task], tmp_path: Path) -> None:
    # Checkpoints load on the CPU; the progress step measures them where its task is (a full GPU run found this).
    from sharplib.experiments.trajectory import epoch_pools, sharpness_along_training

    task = cpu_tasks["fcnn"].to("cuda")
    cfg = protocol.train_config("fcnn", device="cuda")
    pools = epoch_pools("fcnn", task, cfg, [0, 1, 2], (1, 2), tmp_path)
    table = sharpness_along_training({e: [p.checkpoint for p in pool] for e, pool in pools.items()}, task,
                                     protocol.sharpness_config("fcnn", n_restarts=2, device="auto"))
    assert sorted(table["epoch"].unique()) == [1, 2] and table["sharpness"].notna().all()
