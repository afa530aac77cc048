"""`Task.first_train_rows`: the quick profile's cut of a training set (sharplib.core.task)."""
from __future__ import annotations

import pytest
import torch

from sharplib.core.task import Task


def _task(n_train: int = 10, graph: bool = False) -> Task:
    generator = torch.Generator().manual_seed(0)
    if graph:
        return Task(
            "graph",
            torch.arange(n_train),
            torch.arange(n_train) % 3,
            torch.arange(n_train, n_train + 4),
            torch.zeros(4, dtype=torch.long),
            "cross_entropy",
            node_features=torch.rand(n_train + 4, 5, generator=generator),
            edge_index=torch.tensor([[0, 1], [1, 0]]),
        )
    return Task("rows", torch.rand(n_train, 3, generator=generator), torch.rand(n_train, generator=generator),
                torch.rand(4, 3, generator=generator), torch.rand(4, generator=generator), "mse")


def test_none_is_the_task_itself() -> None:
    task = _task()
    assert task.first_train_rows(None) is task  # the full profile: the same tensors, the same fingerprint


def test_the_cut_holds_the_first_rows_and_its_fingerprint_says_so() -> None:
    task = _task()
    cut = task.first_train_rows(6)
    assert cut.n_train == 6 and torch.equal(cut.x_train, task.x_train[:6]) and torch.equal(cut.y_train, task.y_train[:6])
    assert torch.equal(cut.x_test, task.x_test) and torch.equal(cut.y_test, task.y_test)
    assert cut.fingerprint != task.fingerprint  # a pool trained on the cut is keyed by its data
    assert cut.fingerprint == task.first_train_rows(6).fingerprint != task.first_train_rows(5).fingerprint
    assert task.first_train_rows(task.n_train).fingerprint == task.fingerprint  # all rows: the same data


def test_a_graph_task_keeps_its_whole_graph() -> None:
    task = _task(graph=True)
    cut = task.first_train_rows(3)
    assert cut.x_train.tolist() == [0, 1, 2]
    assert cut.node_features is task.node_features and cut.edge_index is task.edge_index


@pytest.mark.parametrize("n", [0, -1, 11, 2.5, True, "6"])
def test_a_bad_row_count_is_named(n: object) -> None:
    with pytest.raises(ValueError, match=rf"train_rows must be an integer from 1 to its 10 training rows, got {n!r}"):
        _task().first_train_rows(n)  # type: ignore[arg-type]
