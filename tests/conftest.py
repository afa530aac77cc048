"""Shared fixtures. Data come from $SHARPLIB_DATA (CI: ../shared/data), never from the network."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def data_root() -> Path:
    root = Path(os.environ.get("SHARPLIB_DATA", REPO.parent / "shared" / "data"))
    if not (root / "abalone" / "abalone.data").exists():
        pytest.fail(f"offline datasets not found at {root}; set SHARPLIB_DATA to the folder holding abalone/, cora/, fashion-mnist/")
    return root


@pytest.fixture(autouse=True)
def _few_threads():
    # The suite runs on 2 cores; small tensors run faster on one thread.
    torch.set_num_threads(1)
    yield
