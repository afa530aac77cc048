"""The generalization quantities a τ can be taken against, built from a table of models (`target_columns`).

    test loss            L_test
    test error           1 − acc_test        (classifiers only: the FCNN regresses, its test_accuracy is empty)
    generalization gap   L_test − L_train

L_train is the loss over the whole training set in eval mode (TrainResult.train_loss), not the last
epoch's mean minibatch loss that the stopping rule reads.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

TARGETS = ("test_loss", "test_error", "generalization_gap")


# test error = 1 − acc_test;   generalization gap = L_test − L_train
def target_columns(table: pd.DataFrame) -> pd.DataFrame:
    """test_loss, test_error and generalization_gap of each model (row), on the table's index.

    Args:
        table: one row per model with train_loss and test_loss, and test_accuracy for a classifier
            (study.model_table, results/<arch>/models.csv).

    Returns:
        DataFrame of the targets. test_error is left out (not filled with NaN) when test_accuracy is missing
        or empty for every model (a regression); a NaN in an input stays NaN in that model's row (a diverged model).

    Raises:
        ValueError: naming a missing train_loss or test_loss column.
    """
    missing = [name for name in ("train_loss", "test_loss") if name not in table.columns]
    if missing:
        raise ValueError(f"the table lacks column(s) {missing} needed for the targets (columns: {list(table.columns)})")
    test_loss = table["test_loss"].astype(np.float64)
    columns = {"test_loss": test_loss}
    if "test_accuracy" in table.columns and table["test_accuracy"].notna().any():
        columns["test_error"] = 1.0 - table["test_accuracy"].astype(np.float64)
    columns["generalization_gap"] = test_loss - table["train_loss"].astype(np.float64)
    return pd.DataFrame(columns, index=table.index)
