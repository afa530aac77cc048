"""The three networks of the study, with the report's Xavier initialization.

Widths follow PROTOCOL.md: FCNN 10-64-64-1 (4929 parameters), LeNet-5 with BatchNorm
and dropout 0.5 (175546), GAT 1433-8-7 with one head (11565).
"""
from __future__ import annotations

import torch
from torch import Tensor, nn
from torch_geometric.nn import GATConv


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


class GAT(nn.Module):
    """Cora node classifier: two single-head GATConv layers, 1433 -> 8 -> 7, ELU, dropout 0.6.

    Dropout acts on the node features entering each layer (as in the original GAT recipe);
    attention coefficients are not dropped. The forward pass always sees the whole graph.
    """

    def __init__(self, n_features: int = 1433, hidden: int = 8, n_classes: int = 7, dropout: float = 0.6) -> None:
        super().__init__()
        self.conv1 = GATConv(n_features, hidden, heads=1)
        self.conv2 = GATConv(hidden, n_classes, heads=1)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor, edge_index: Tensor) -> Tensor:
        x = torch.nn.functional.elu(self.conv1(self.dropout(x), edge_index))
        return self.conv2(self.dropout(x), edge_index)


ARCHITECTURES: dict[str, type[nn.Module]] = {"fcnn": FCNN, "lenet5": LeNet5, "gat": GAT}


def xavier_init_(model: nn.Module, generator: torch.Generator | None = None) -> nn.Module:
    """Xavier-uniform for every weight matrix/kernel (and GAT attention vectors), zeros for biases.

    BatchNorm keeps its identity affine (weight 1, bias 0): Xavier is undefined for 1-D weights.
    """
    for module in model.modules():
        if isinstance(module, (nn.Linear, nn.Conv2d)):
            nn.init.xavier_uniform_(module.weight, generator=generator)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, GATConv):
            nn.init.xavier_uniform_(module.lin.weight, generator=generator)
            nn.init.xavier_uniform_(module.att_src, generator=generator)
            nn.init.xavier_uniform_(module.att_dst, generator=generator)
            nn.init.zeros_(module.bias)
    return model


def build_model(arch: str, generator: torch.Generator | None = None, init: str = "xavier") -> nn.Module:
    """A fresh model of `arch` ("fcnn", "lenet5", "gat") on CPU.

    init="xavier" is the report's initialization; init="default" keeps PyTorch's/PyG's own
    (what the reference notebooks used). The generator makes the Xavier draw reproducible.
    """
    if arch not in ARCHITECTURES:
        raise ValueError(f"arch must be one of {sorted(ARCHITECTURES)}, got {arch!r}")
    if init not in ("xavier", "default"):
        raise ValueError(f"init must be 'xavier' or 'default', got {init!r}")
    if init == "xavier":
        return xavier_init_(ARCHITECTURES[arch](), generator)
    # The layers' own init draws from the global generator: seed it from ours, and leave it as it was.
    with torch.random.fork_rng(devices=[]):
        if generator is not None:
            torch.manual_seed(generator.initial_seed())
        return ARCHITECTURES[arch]()


def n_parameters(model: nn.Module) -> int:
    """Number of trainable scalars."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
