"""The report's experimental settings (Table I and §III), in one place.

Notebooks start from these and override fields through their papermill parameters;
the paper's Table I is generated from the configs actually used, not from this file.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..core.sharpness import SharpnessConfig
from ..core.train import TrainConfig


@dataclass(frozen=True)
class ArchSpec:
    """One row of Table I plus the settings the protocol adds to it, and the words the study notebook
    (notebooks/study.py, one template for all three) uses to introduce it.
    """

    arch: str  # "fcnn", "lenet5", "gat"
    model_name: str  # as printed in the paper
    dataset: str  # name for sharplib.core.data.load_task
    dataset_name: str  # as printed in the paper
    loss_name: str  # as printed in the paper
    lr: float
    rho: float
    unit: str  # what a sample is, plural: "rows", "images", "nodes"
    network: str  # the network in one sentence
    data_prose: str  # the data paragraph
    eval_prose: str  # what the ascent's eval mode means for this network
    weight_decay: float = 0.0
    min_epochs: int = 1
    max_epochs: int = 10


TABLE1: dict[str, ArchSpec] = {
    "fcnn": ArchSpec(
        "fcnn", "FCNN", "abalone", "Abalone", "Mean squared error", lr=0.014, rho=0.025, unit="rows",
        network="Fully connected, 10 → 64 → 64 → 1, with ReLU after each hidden layer and a linear output "
                "(4929 parameters).",
        data_prose="Abalone: 4177 shells (the raw file has no header row), each described by its sex, one-hot "
                   "encoded, and seven measurements, 10 inputs in all; the target is its number of rings. A seeded "
                   "80/20 split gives the training and test rows, and inputs and target are standardized with the "
                   "training rows' means and standard deviations, so a mean squared error of 1 is no better than "
                   "predicting the mean.",
        eval_prose="the FCNN has neither dropout nor BatchNorm, so eval mode changes nothing",
    ),
    "lenet5": ArchSpec(
        "lenet5", "LeNet-5", "fashion_mnist", "FashionMNIST", "Cross-entropy", lr=0.05, rho=0.0001, unit="images",
        network="LeNet-5: two convolutional blocks (a 5×5 convolution to 12, then 32 channels, each followed by "
                "BatchNorm, ReLU and 2×2 max pooling), then dense layers 512 → 256 → 128 → 10 with dropout 0.5 after "
                "the first two (175 546 parameters).",
        data_prose="FashionMNIST: 60 000 training and 10 000 test images of clothing in 10 classes, 28×28 grey levels "
                   "scaled to [0, 1] and normalized with mean 0.2860 and standard deviation 0.3530. On CPU the models "
                   "train in single-threaded worker processes, one per core.",
        eval_prose="dropout is off, and BatchNorm normalizes with its running statistics, buffers that the "
                   "perturbation never touches",
        weight_decay=5e-3,
    ),
    "gat": ArchSpec(
        "gat", "GAT", "cora", "Cora", "Cross-entropy", lr=0.236, rho=0.02, unit="nodes",
        network="A two-layer graph attention network, PyG's own `GAT(1433, 8, num_layers=2, out_channels=7, "
                "dropout=0.6, act=\"elu\")`: a one-head GATConv from the 1433 word features to 8 channels, ELU, "
                "dropout 0.6, and a GATConv to the 7 classes. Each GATConv also drops attention coefficients with "
                "p = 0.6; the input features are not dropped (11 565 parameters).",
        data_prose="Cora: one citation graph of 2708 papers in 7 classes. A paper's features are its bag-of-words "
                   "vector over 1433 words, binary (the word occurs or not) and used as stored, not row-normalized. "
                   "The public Planetoid split trains on 140 nodes, 20 per class, and tests on 1000. An epoch "
                   "shuffles the training nodes into batches of 64 and takes one SGD step per batch on those nodes' "
                   "loss; every forward pass sees the whole graph.",
        eval_prose="dropout, on the hidden features and on the attention coefficients, is off; the loss is taken on "
                   "the batch's nodes while the forward pass sees the whole graph",
        min_epochs=10, max_epochs=20,
    ),
}

# τ printed in the report's Figure 1 (and its p-values where the reference code printed them).
REPORT_TAU: dict[str, float] = {"fcnn": -0.311, "lenet5": -0.180, "gat": -0.185}
REPORT_P: dict[str, float | None] = {"fcnn": None, "lenet5": 0.065, "gat": 0.058}


def spec(arch: str) -> ArchSpec:
    if arch not in TABLE1:
        raise ValueError(f"arch must be one of {sorted(TABLE1)}, got {arch!r}")
    return TABLE1[arch]


def train_config(arch: str, **overrides: Any) -> TrainConfig:
    """The report's training settings for `arch`, with `overrides` applied (validated)."""
    s = spec(arch)
    values = dict(lr=s.lr, weight_decay=s.weight_decay, min_epochs=s.min_epochs, max_epochs=s.max_epochs)
    return TrainConfig.from_dict({**values, **overrides})


def sharpness_config(arch: str, **overrides: Any) -> SharpnessConfig:
    """The report's sharpness settings for `arch` (ρ from Table I, η = the training lr)."""
    s = spec(arch)
    return SharpnessConfig.from_dict({"rho": s.rho, "lr": s.lr, **overrides})
