"""Table I and the protocol's settings, as the protocol states them."""
from __future__ import annotations

import pytest

from sharplib.experiments.protocol import REPORT_TAU, TABLE1, sharpness_config, spec, train_config


def test_table1_rows() -> None:
    rows = {a: (s.model_name, s.dataset_name, s.lr, s.rho) for a, s in TABLE1.items()}
    assert rows == {
        "fcnn": ("FCNN", "Abalone", 0.014, 0.025),
        "lenet5": ("LeNet-5", "FashionMNIST", 0.05, 0.0001),
        "gat": ("GAT", "Cora", 0.236, 0.02),
    }
    assert REPORT_TAU == {"fcnn": -0.311, "lenet5": -0.180, "gat": -0.185}


def test_training_settings() -> None:
    lenet, gat = train_config("lenet5"), train_config("gat")
    assert (lenet.batch_size, lenet.tol, lenet.max_epochs, lenet.weight_decay) == (64, 0.05, 10, 5e-3)
    assert (gat.min_epochs, gat.max_epochs, gat.weight_decay) == (10, 20, 0.0)
    assert train_config("fcnn", seed=7).seed == 7


def test_sharpness_settings_use_the_training_rate() -> None:
    cfg = sharpness_config("gat")
    assert (cfg.rho, cfg.lr, cfg.p, cfg.batch_size, cfg.n_steps, cfg.n_restarts, cfg.mode) == (0.02, 0.236, "inf", 64, 5, 50, "eval")
    assert sharpness_config("fcnn", n_restarts=3).n_restarts == 3


def test_bad_names_are_clear() -> None:
    with pytest.raises(ValueError, match="'vgg'"):
        spec("vgg")
    with pytest.raises(ValueError, match="momentum"):
        train_config("fcnn", momentum=0.9)


def test_each_architecture_has_its_own_words() -> None:
    # the study notebook's introduction is written from these (sharplib.experiments.study.introduction)
    assert {a: s.unit for a, s in TABLE1.items()} == {"fcnn": "rows", "lenet5": "images", "gat": "nodes"}
    for arch, s in TABLE1.items():
        assert s.network.endswith(".") and s.data_prose.endswith(".") and s.eval_prose, arch
        assert s.dataset_name in s.data_prose, arch
    gat = TABLE1["gat"]
    # the protocol (corrected): raw binary features, PyG's GAT, dropout on attention coefficients, none on the inputs
    assert "binary" in gat.data_prose and "not row-normalized" in gat.data_prose
    assert 'GAT(1433, 8, num_layers=2, out_channels=7, dropout=0.6, act="elu")' in gat.network
    assert "attention coefficients" in gat.network and "input features are not dropped" in gat.network
