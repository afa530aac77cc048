"""The targets a τ is taken against: test loss, test error and generalization gap from a models table."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from sharplib.core.targets import TARGETS, target_columns

RESULTS = Path(__file__).resolve().parents[1] / "results"


def test_targets_of_a_classifier() -> None:
    table = pd.DataFrame({"seed": [0, 1], "train_loss": [0.2, 0.5], "test_loss": [0.3, 0.9], "test_accuracy": [0.9, 0.75]}, index=[4, 7])
    targets = target_columns(table)
    assert list(targets.columns) == list(TARGETS)
    assert targets.index.tolist() == [4, 7]
    np.testing.assert_allclose(targets["test_loss"], [0.3, 0.9])
    np.testing.assert_allclose(targets["test_error"], [0.1, 0.25])
    np.testing.assert_allclose(targets["generalization_gap"], [0.1, 0.4])


def test_a_regression_has_no_test_error() -> None:
    table = pd.DataFrame({"train_loss": [0.2, 0.5], "test_loss": [0.3, 0.4], "test_accuracy": [np.nan, np.nan]})
    assert list(target_columns(table).columns) == ["test_loss", "generalization_gap"]
    assert list(target_columns(table.drop(columns="test_accuracy")).columns) == ["test_loss", "generalization_gap"]


def test_a_missing_loss_is_named() -> None:
    with pytest.raises(ValueError, match="train_loss"):
        target_columns(pd.DataFrame({"test_loss": [0.3]}))


@pytest.mark.parametrize("arch, has_error", [("fcnn", False), ("lenet5", True), ("gat", True)])
def test_the_studies_models_tables(arch: str, has_error: bool) -> None:
    table = pd.read_csv(RESULTS / arch / "models.csv")
    targets = target_columns(table)
    assert ("test_error" in targets.columns) == has_error
    assert np.isfinite(targets.to_numpy()).all()
    np.testing.assert_allclose(targets["generalization_gap"], table["test_loss"] - table["train_loss"])
