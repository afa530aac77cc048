"""Function-preserving rescalings (sharplib.core.reparam): same outputs, really different weights."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from sharplib.core.models import build_model
from sharplib.core.reparam import rescale, rescale_fcnn, rescale_lenet5


def _close(actual: torch.Tensor, expected: torch.Tensor) -> None:
    # float32 rounding of products scaled by r and 1/r: relative to the output's scale
    actual, expected = actual.detach(), expected.detach()
    torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-5 * float(expected.abs().max()))


def _snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {name: value.clone() for name, value in model.state_dict().items()}


def _unchanged(model: nn.Module, before: dict[str, torch.Tensor]) -> bool:
    return all(torch.equal(value, before[name]) for name, value in model.state_dict().items())


@pytest.fixture
def fcnn() -> nn.Module:
    model = build_model("fcnn", torch.Generator().manual_seed(0))
    with torch.no_grad():  # Xavier leaves zero biases, which would hide a bias that is not rescaled
        for layer in (model.fc1, model.fc2, model.fc3):
            layer.bias.normal_(0.0, 0.5, generator=torch.Generator().manual_seed(1))
    return model.eval()


@pytest.fixture
def lenet() -> nn.Module:
    model = build_model("lenet5", torch.Generator().manual_seed(0))
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for conv, bn in ((model.conv1, model.bn1), (model.conv2, model.bn2)):
            conv.bias.normal_(0.0, 0.5, generator=gen)
            bn.weight.uniform_(0.5, 1.5, generator=gen)
            bn.bias.normal_(0.0, 0.5, generator=gen)
        model.train()  # non-trivial running statistics
        for _ in range(3):
            model(torch.randn(16, 1, 28, 28, generator=gen) * 2 + 0.5)
    return model.eval()


def _unit_factors(n: int, seed: int) -> torch.Tensor:
    return torch.exp(torch.randn(n, generator=torch.Generator().manual_seed(seed)) * 2)  # spans ~e^±4


@pytest.mark.parametrize("layer", [1, 2])
@pytest.mark.parametrize("per_unit", [False, True])
def test_fcnn_rescaling_preserves_function(fcnn: nn.Module, layer: int, per_unit: bool) -> None:
    x = torch.randn(128, 10, generator=torch.Generator().manual_seed(2))
    before = _snapshot(fcnn)
    r = _unit_factors(64, layer) if per_unit else 10.0
    rescaled = rescale_fcnn(fcnn, layer, r)
    _close(rescaled(x), fcnn(x))
    assert _unchanged(fcnn, before)
    factors = torch.as_tensor(r).expand(64)
    this, after = f"fc{layer}", f"fc{layer + 1}"
    sd = rescaled.state_dict()
    torch.testing.assert_close(sd[f"{this}.weight"], before[f"{this}.weight"] * factors[:, None])
    torch.testing.assert_close(sd[f"{this}.bias"], before[f"{this}.bias"] * factors)
    torch.testing.assert_close(sd[f"{after}.weight"], before[f"{after}.weight"] / factors[None, :])
    assert not torch.allclose(sd[f"{this}.weight"], before[f"{this}.weight"])


@pytest.mark.parametrize("layer", [1, 2])
@pytest.mark.parametrize("per_unit", [False, True])
def test_lenet5_rescaling_preserves_function(lenet: nn.Module, layer: int, per_unit: bool) -> None:
    x = torch.randn(32, 1, 28, 28, generator=torch.Generator().manual_seed(2))
    before = _snapshot(lenet)
    channels = 12 if layer == 1 else 32
    r = _unit_factors(channels, layer) if per_unit else 10.0
    rescaled = rescale_lenet5(lenet, layer, r).eval()
    _close(rescaled(x), lenet(x))
    assert _unchanged(lenet, before)
    factors = torch.as_tensor(r).expand(channels)
    sd = rescaled.state_dict()
    torch.testing.assert_close(sd[f"conv{layer}.weight"], before[f"conv{layer}.weight"] * factors[:, None, None, None])
    torch.testing.assert_close(sd[f"conv{layer}.bias"], before[f"conv{layer}.bias"] * factors)
    torch.testing.assert_close(sd[f"bn{layer}.running_mean"], before[f"bn{layer}.running_mean"] * factors)
    assert not torch.allclose(sd[f"conv{layer}.weight"], before[f"conv{layer}.weight"])


def test_lenet5_exact_even_when_eps_dominates(lenet: nn.Module) -> None:
    # Running variances near BatchNorm's ε: scaling them by r² alone would be off by ~ε/(2σ²), here ~20 %.
    with torch.no_grad():
        lenet.conv1.weight.mul_(1e-3)
        lenet.conv1.bias.mul_(1e-3)
        lenet.bn1.running_mean.mul_(1e-3)
        lenet.bn1.running_var.fill_(2e-5)
    x = torch.randn(8, 1, 28, 28, generator=torch.Generator().manual_seed(3))
    rescaled = rescale_lenet5(lenet, 1, 10.0)
    _close(rescaled(x), lenet(x))
    assert rescaled.bn1.eps == lenet.bn1.eps


def test_rescale_dispatches_and_composes(fcnn: nn.Module, lenet: nn.Module) -> None:
    x = torch.randn(16, 10, generator=torch.Generator().manual_seed(4))
    both = rescale(rescale(fcnn, 3.0, layer=1), 0.2, layer=2)
    _close(both(x), fcnn(x))
    images = torch.randn(4, 1, 28, 28, generator=torch.Generator().manual_seed(5))
    _close(rescale(lenet, 7.0, layer=2)(images), lenet(images))


def test_invalid_arguments_raise(fcnn: nn.Module, lenet: nn.Module) -> None:
    for bad_r in (0.0, -2.0, float("inf"), float("nan"), torch.tensor([1.0] * 63 + [-1.0])):
        with pytest.raises(ValueError, match="r must be finite and > 0"):
            rescale_fcnn(fcnn, 1, bad_r)
    with pytest.raises(ValueError, match="r must be a scalar or a 1-D tensor of 64"):
        rescale_fcnn(fcnn, 1, torch.ones(10))
    with pytest.raises(ValueError, match="r must be a scalar or a 1-D tensor of 12"):
        rescale_lenet5(lenet, 1, torch.ones(2, 12))
    for bad_layer in (0, 3):
        with pytest.raises(ValueError, match="layer must be 1 or 2"):
            rescale_fcnn(fcnn, bad_layer, 2.0)
        with pytest.raises(ValueError, match="layer must be 1 or 2"):
            rescale_lenet5(lenet, bad_layer, 2.0)
    with pytest.raises(TypeError, match="GAT"):
        rescale(build_model("gat"), 2.0)
