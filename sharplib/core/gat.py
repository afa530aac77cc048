"""The GAT of the study, PyG's own class, and its input-dropout variant; models.py builds them from here so that only
a GAT pays for importing PyG."""
from __future__ import annotations

from torch import Tensor
from torch_geometric.nn import GAT


def cora_gat() -> GAT:
    """The reference notebook's network: GATConv(1433 -> 8) -> ELU -> dropout 0.6 -> GATConv(8 -> 7), each GATConv
    dropping attention coefficients with p = 0.6; the input is not dropped."""
    return GAT(1433, hidden_channels=8, num_layers=2, out_channels=7, dropout=0.6, act="elu")


class InputDropoutGAT(GAT):
    """`cora_gat` plus dropout 0.6 on the input features (the original GAT recipe): a sensitivity variant."""

    def forward(self, x: Tensor, edge_index: Tensor) -> Tensor:  # type: ignore[override]
        return super().forward(self.dropout(x), edge_index)


def input_dropout_gat() -> InputDropoutGAT:
    return InputDropoutGAT(1433, hidden_channels=8, num_layers=2, out_channels=7, dropout=0.6, act="elu")
