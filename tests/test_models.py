"""The three architectures: the report's sizes, Xavier init with zero biases, outputs of the right shape."""
from __future__ import annotations

import pytest
import torch

from sharplib.models import FCNN, GAT, LeNet5, build_model, n_parameters
from sharplib.task import Task


@pytest.mark.parametrize("arch, expected", [("fcnn", 4929), ("lenet5", 175546), ("gat", 11565)])
def test_parameter_counts_match_the_report(arch: str, expected: int) -> None:
    assert n_parameters(build_model(arch)) == expected


@pytest.mark.parametrize("arch", ["fcnn", "lenet5", "gat"])
def test_xavier_init_is_seeded_with_zero_biases(arch: str) -> None:
    a = build_model(arch, torch.Generator().manual_seed(1))
    b = build_model(arch, torch.Generator().manual_seed(1))
    c = build_model(arch, torch.Generator().manual_seed(2))
    for (name, pa), pb, pc in zip(a.named_parameters(), b.parameters(), c.parameters()):
        assert torch.equal(pa, pb), name
        if name.endswith("bias"):
            assert torch.count_nonzero(pa) == 0 or "bn" in name, name
        elif pa.dim() > 1:
            fan_in, fan_out = torch.nn.init._calculate_fan_in_and_fan_out(pa)
            bound = (6 / (fan_in + fan_out)) ** 0.5
            assert pa.abs().max() <= bound, name
            assert not torch.equal(pa, pc), name


def test_default_init_differs_from_xavier_and_is_seeded() -> None:
    xavier = build_model("fcnn", torch.Generator().manual_seed(0))
    default = build_model("fcnn", torch.Generator().manual_seed(0), init="default")
    assert torch.equal(default.fc1.weight, build_model("fcnn", torch.Generator().manual_seed(0), init="default").fc1.weight)
    assert not torch.equal(default.fc1.weight, build_model("fcnn", torch.Generator().manual_seed(1), init="default").fc1.weight)
    assert torch.count_nonzero(default.fc1.bias) > 0
    assert torch.count_nonzero(xavier.fc1.bias) == 0


def test_forward_shapes(tasks: dict[str, Task]) -> None:
    assert FCNN()(tasks["fcnn"].x_train[:5]).shape == (5, 1)
    assert LeNet5().eval()(tasks["lenet5"].x_train[:5]).shape == (5, 10)
    cora = tasks["gat"]
    assert GAT().eval()(cora.node_features, cora.edge_index).shape == (len(cora.node_features), 7)


def test_lenet5_dropout_only_in_train_mode() -> None:
    model = build_model("lenet5", torch.Generator().manual_seed(0))
    x = torch.randn(4, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    model.eval()
    assert torch.equal(model(x), model(x))
    model.train()
    torch.manual_seed(0)
    assert not torch.equal(model(x), model(x))


def test_unknown_architecture_and_init_are_named() -> None:
    with pytest.raises(ValueError, match="'resnet'"):
        build_model("resnet")
    with pytest.raises(ValueError, match="'kaiming'"):
        build_model("fcnn", init="kaiming")
