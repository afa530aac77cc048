"""The pure pieces training and sharpness share: the mode a model is run in, and the fit check."""
from __future__ import annotations

import pytest
import torch

from sharplib.core.functional import check_fits, evaluate, in_mode
from sharplib.core.models import build_model
from sharplib.core.task import Task


@pytest.mark.parametrize("training", [True, False])
def test_in_mode_sets_the_mode_and_puts_the_models_own_back_even_on_error(training: bool) -> None:
    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Dropout(0.5))
    model.train(not training)
    with in_mode(model, training) as inside:
        assert inside is model and model.training is training and model[1].training is training
    assert model.training is (not training)
    with pytest.raises(RuntimeError, match="inside"), in_mode(model, training):
        raise RuntimeError("inside")
    assert model.training is (not training) and model[1].training is (not training)


def test_evaluate_and_check_fits_leave_a_training_model_training(abalone_task: Task) -> None:
    model = build_model("fcnn", torch.Generator().manual_seed(0)).train()
    loss, accuracy = evaluate(model, abalone_task, "test")
    assert loss > 0 and accuracy is None and model.training
    check_fits(model, abalone_task)
    assert model.training


def test_check_fits_names_the_model_and_the_task(abalone_task: Task) -> None:
    model = build_model("gat", torch.Generator().manual_seed(0)).train()
    with pytest.raises(ValueError, match=r"model GAT does not fit task 'abalone'"):
        check_fits(model, abalone_task)
    assert model.training
