"""The three architectures: the report's sizes, Xavier init with zero biases, outputs of the right shape."""
from __future__ import annotations

import subprocess
import sys

import pytest
import torch

import torch_geometric.nn

from sharplib.core.models import FCNN, VARIANTS, LeNet5, build_model, n_parameters
from sharplib.core.task import Task


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
    assert build_model("gat").eval()(cora.node_features, cora.edge_index).shape == (len(cora.node_features), 7)


def test_the_study_gat_is_pygs_class_with_the_notebooks_dropout_sites() -> None:
    gat = build_model("gat")
    assert type(gat) is torch_geometric.nn.GAT
    convs = [m for m in gat.modules() if isinstance(m, torch_geometric.nn.GATConv)]
    assert [(c.in_channels, c.out_channels, c.heads) for c in convs] == [(1433, 8, 1), (8, 7, 1)]
    assert [c.dropout for c in convs] == [0.6, 0.6]  # attention coefficients dropped in each layer
    assert gat.dropout.p == 0.6 and gat.act.__class__.__name__ == "ELU"  # after the hidden ELU


def test_gat_drops_no_input_features_but_the_input_dropout_variant_does(cora_task: Task) -> None:
    # Only input dropout makes the output depend on which input features were zeroed: with attention
    # and hidden dropout off (p = 0) and input dropout on, two draws give different outputs.
    study, variant = (
        build_model("gat", torch.Generator().manual_seed(0)),
        build_model("gat", torch.Generator().manual_seed(0), variant="input_dropout"),
    )
    for model in (study, variant):
        model.train()
        model.dropout.p = 0.0
        for conv in model.convs:
            conv.dropout = 0.0
    x, edges = cora_task.node_features, cora_task.edge_index
    assert torch.equal(study(x, edges), study(x, edges))
    variant.dropout.p = 0.6
    for conv in variant.convs:
        conv.dropout = 0.0
    first = variant(x, edges)
    assert not torch.equal(first, variant(x, edges))
    variant.eval()  # in eval mode the variant is the study's network
    study.eval()
    assert torch.equal(variant(x, edges), study(x, edges))


@pytest.mark.parametrize("arch", list(VARIANTS))
def test_every_variant_has_the_study_networks_parameters(arch: str) -> None:
    study = build_model(arch, torch.Generator().manual_seed(5))
    for variant in VARIANTS[arch]:
        other = build_model(arch, torch.Generator().manual_seed(5), variant=variant)
        assert [(n, p.shape) for n, p in other.named_parameters()] == [(n, p.shape) for n, p in study.named_parameters()]
        assert all(torch.equal(a, b) for a, b in zip(other.parameters(), study.parameters()))


def test_lenet5_dropout_only_in_train_mode() -> None:
    model = build_model("lenet5", torch.Generator().manual_seed(0))
    x = torch.randn(4, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    model.eval()
    assert torch.equal(model(x), model(x))
    model.train()
    torch.manual_seed(0)
    assert not torch.equal(model(x), model(x))


def test_unknown_architecture_init_and_variant_are_named() -> None:
    with pytest.raises(ValueError, match="'resnet'"):
        build_model("resnet")
    with pytest.raises(ValueError, match="variant.*'elu_output'"):
        build_model("lenet5", variant="elu_output")
    with pytest.raises(ValueError, match="'kaiming'"):
        build_model("fcnn", init="kaiming")


def test_only_a_gat_loads_pyg() -> None:
    """Importing PyG takes over a second (torch._dynamo with it): the FCNN's and LeNet-5's notebooks and workers skip it."""
    script = (
        "import sys, torch\n"
        "from sharplib.experiments import study\n"
        "from sharplib.core.models import build_model\n"
        "for arch in ('fcnn', 'lenet5'):\n"
        "    build_model(arch, torch.Generator().manual_seed(0))\n"
        "assert 'torch_geometric' not in sys.modules, 'PyG loaded without a GAT'\n"
        "build_model('gat', torch.Generator().manual_seed(0))\n"
        "assert 'torch_geometric.nn' in sys.modules\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
