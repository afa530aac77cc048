"""The three networks of the study, their notebook variants, and the report's Xavier initialization.

FCNN 10-64-64-1 (4929 parameters), LeNet-5 with BatchNorm and dropout 0.5 (175546), and for Cora PyG's
own `GAT` class, 1433-8-7 with one head (11565). A *variant* differs from the study's network in its
forward pass only (same parameters): the reference notebooks' FCNN with ELU on every layer, and a GAT
that also drops the input features. `build_model(arch, variant=...)` builds any of them.
"""
from __future__ import annotations

import sys
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class FCNN(nn.Module):
    """Abalone regressor: 10 -> 64 -> 64 -> 1, ReLU between layers, linear output."""

    def __init__(self, n_inputs: int = 10, width: int = 64) -> None:
        super().__init__()
        self.fc1 = nn.Linear(n_inputs, width)
        self.fc2 = nn.Linear(width, width)
        self.fc3 = nn.Linear(width, 1)

    def forward(self, x: Tensor) -> Tensor:
        x = torch.relu(self.fc1(x))
        x = torch.relu(self.fc2(x))
        return self.fc3(x)


class EluFCNN(FCNN):
    """The FCNN notebook's network: ELU after every layer, the output included (so outputs >= -1)."""

    def forward(self, x: Tensor) -> Tensor:
        x = F.elu(self.fc1(x))
        x = F.elu(self.fc2(x))
        return F.elu(self.fc3(x))


class LeNet5(nn.Module):
    """FashionMNIST classifier: two conv-BN-ReLU-pool blocks, then 512 -> 256 -> 128 -> 10 with dropout 0.5."""

    def __init__(self, n_classes: int = 10, dropout: float = 0.5) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 12, kernel_size=5)
        self.bn1 = nn.BatchNorm2d(12)
        self.conv2 = nn.Conv2d(12, 32, kernel_size=5)
        self.bn2 = nn.BatchNorm2d(32)
        self.fc1 = nn.Linear(32 * 4 * 4, 256)
        self.fc2 = nn.Linear(256, 128)
        self.fc3 = nn.Linear(128, n_classes)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        x = torch.max_pool2d(torch.relu(self.bn1(self.conv1(x))), 2)  # 28 -> 24 -> 12
        x = torch.max_pool2d(torch.relu(self.bn2(self.conv2(x))), 2)  # 12 -> 8 -> 4
        x = x.flatten(start_dim=-3)
        x = self.dropout(torch.relu(self.fc1(x)))
        x = self.dropout(torch.relu(self.fc2(x)))
        return self.fc3(x)


def cora_gat() -> nn.Module:
    """The reference notebook's network, PyG's `GAT` class itself (built in gat.py)."""
    from .gat import cora_gat as build  # PyG takes over a second to import: only a GAT loads it

    return build()


def _input_dropout_gat() -> nn.Module:
    from .gat import input_dropout_gat

    return input_dropout_gat()


# arch -> variant -> constructor. "standard" is the study's network; the others share its parameters.
VARIANTS: dict[str, dict[str, Callable[[], nn.Module]]] = {
    "fcnn": {"standard": FCNN, "elu_output": EluFCNN},
    "lenet5": {"standard": LeNet5},
    "gat": {"standard": cora_gat, "input_dropout": _input_dropout_gat},
}
ARCHITECTURES = tuple(VARIANTS)


def xavier_init_(model: nn.Module, generator: torch.Generator | None = None) -> nn.Module:
    """Xavier-uniform for every weight matrix/kernel (and GAT attention vectors), zeros for biases, in place.

    BatchNorm keeps its identity affine (weight 1, bias 0): Xavier is undefined for 1-D weights.

    Args:
        model: the network.
        generator: the random generator of the draws (None: the global one).

    Returns:
        `model` itself.
    """
    for module in model.modules():
        if isinstance(module, (nn.Linear, nn.Conv2d)):
            nn.init.xavier_uniform_(module.weight, generator=generator)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif _is_gat_conv(module):
            nn.init.xavier_uniform_(module.lin.weight, generator=generator)
            nn.init.xavier_uniform_(module.att_src, generator=generator)
            nn.init.xavier_uniform_(module.att_dst, generator=generator)
            nn.init.zeros_(module.bias)
    return model


def _is_gat_conv(module: nn.Module) -> bool:
    """Whether `module` is PyG's GATConv; without PyG loaded nothing can be one, so the FCNN and LeNet-5 never load it."""
    pyg = sys.modules.get("torch_geometric.nn")
    return pyg is not None and isinstance(module, pyg.GATConv)


def check_variant(arch: str, variant: str) -> None:
    """Check that (arch, variant) is registered in VARIANTS.

    Args:
        arch: "fcnn", "lenet5" or "gat".
        variant: one of VARIANTS[arch].

    Raises:
        ValueError: naming `arch` or `variant` when it is not.
    """
    if arch not in VARIANTS:
        raise ValueError(f"arch must be one of {sorted(VARIANTS)}, got {arch!r}")
    if variant not in VARIANTS[arch]:
        raise ValueError(f"variant of {arch!r} must be one of {sorted(VARIANTS[arch])}, got {variant!r}")


def build_model(arch: str, generator: torch.Generator | None = None, init: str = "xavier", variant: str = "standard") -> nn.Module:
    """A fresh model of `arch` and `variant`, on CPU.

    Args:
        arch: "fcnn", "lenet5" or "gat".
        generator: the random generator of the initial weights, for a reproducible draw.
        init: "xavier" (the report's) or "default" (PyTorch's/PyG's own, as the reference notebooks used).
        variant: the network variant (VARIANTS[arch]); "standard" is the study's.

    Returns:
        The initialized network.
    """
    check_variant(arch, variant)
    if init not in ("xavier", "default"):
        raise ValueError(f"init must be 'xavier' or 'default', got {init!r}")
    make = VARIANTS[arch][variant]
    if init == "xavier":
        return xavier_init_(make(), generator)
    # The layers' own init draws from the global generator: seed it from ours, and leave it as it was.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(generator.initial_seed() if generator is not None else 0)
        return make()


def n_parameters(model: nn.Module) -> int:
    """Number of trainable scalars of `model`."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
