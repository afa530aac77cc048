"""The study's three architectures, each named by the network it trains: the one list every layer reads."""
from __future__ import annotations

# FCNN on Abalone, LeNet-5 on FashionMNIST, GAT on Cora (data.load_task maps each to its dataset)
ARCHS: tuple[str, ...] = ("fcnn", "lenet5", "gat")
