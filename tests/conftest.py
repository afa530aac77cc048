"""Shared fixtures. Data come from $SHARPLIB_DATA (CI: ../shared/data), never from the network."""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest
import torch

from sharplib.core.data import load_abalone, load_cora, load_fashion_mnist
from sharplib.pools.pool import init_model
from sharplib.experiments.protocol import train_config
from sharplib.core.task import Task
from sharplib.core.train import train_model

REPO = Path(__file__).resolve().parents[1]


# Each test's kind, for `pytest -m unit` (or notebook, e2e, ray, browser): a test's own mark, else its module's, else unit.
KINDS = ("unit", "notebook", "e2e", "ray", "browser")
MODULE_KIND = {"test_notebooks": "notebook", "test_ablation_notebook": "notebook", "test_make": "e2e", "test_paper": "e2e",
               "test_handout_install": "e2e", "test_cluster": "ray"}


# The slowest modules first, slowest of all first (seconds under `make test`, 2026-12-04: 218, then 40-100 each):
# `make test`'s two pytest-xdist workers take one module at a time, so the quick paper runs beside the rest of the
# suite, and the many short modules fill the gaps at the end. Order only: a module missing here runs after them.
SLOWEST_FIRST = ("test_make", "test_evidence", "test_fingerprint", "test_pool", "test_teaching", "test_cluster", "test_notebooks",
                 "test_lab", "test_measures_study", "test_ablation_notebook", "test_stephash", "test_handout_install")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if not any(item.get_closest_marker(kind) for kind in KINDS):
            item.add_marker(getattr(pytest.mark, MODULE_KIND.get(item.module.__name__.rpartition(".")[2], "unit")))
    rank = {name: i for i, name in enumerate(SLOWEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.module.__name__.rpartition(".")[2], len(rank)))  # stable: order kept within


@pytest.fixture(scope="session")
def data_root() -> Path:
    root = Path(os.environ.get("SHARPLIB_DATA", REPO.parent / "shared" / "data"))
    if not (root / "abalone" / "abalone.data").exists():
        pytest.fail(f"offline datasets not found at {root}; set SHARPLIB_DATA to the folder holding abalone/, cora/, fashion-mnist/")
    return root


@pytest.fixture(autouse=True, scope="session")
def _few_threads():
    # The suite runs on 2 cores; small tensors run faster on one thread.
    torch.set_num_threads(1)
    yield


def subset(task: Task, n_train: int, n_test: int) -> Task:
    """The first rows of a task: enough to exercise a model quickly."""
    return dataclasses.replace(
        task, x_train=task.x_train[:n_train], y_train=task.y_train[:n_train], x_test=task.x_test[:n_test], y_test=task.y_test[:n_test]
    )


@pytest.fixture(scope="session")
def abalone_task(data_root: Path) -> Task:
    return load_abalone(data_root)


@pytest.fixture(scope="session")
def fmnist_small(data_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Task:
    """1024 training and 512 test images of FashionMNIST (decompressed into a private cache)."""
    full = load_fashion_mnist(data_root, cache_dir=tmp_path_factory.mktemp("fmnist-cache"))
    return subset(full, 1024, 512)


@pytest.fixture(scope="session")
def cora_task(data_root: Path) -> Task:
    return load_cora(data_root)


@pytest.fixture(scope="session")
def tasks(abalone_task: Task, fmnist_small: Task, cora_task: Task) -> dict[str, Task]:
    """The task each architecture is trained on (FashionMNIST cut down)."""
    return {"fcnn": abalone_task, "lenet5": fmnist_small, "gat": cora_task}


@pytest.fixture(scope="session")
def trained(tasks: dict[str, Task]) -> dict[str, torch.nn.Module]:
    """One briefly trained model per architecture (the report's learning rates)."""
    torch.set_num_threads(1)
    models = {}
    for arch, task in tasks.items():
        cfg = train_config(arch, max_epochs=2, min_epochs=1, seed=3, device="cpu")
        models[arch], _ = train_model(init_model(arch, cfg), task, cfg)
    return models
