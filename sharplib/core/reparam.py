"""Function-preserving rescalings w -> w ⊙ r, the symmetry adaptive sharpness (c = |w|) is built to ignore.

Each function returns a rescaled deep copy and never touches its input. The factor r > 0 is a
scalar or one factor per output unit (FCNN) or channel (LeNet-5) of the rescaled layer.
GAT has none of these: ELU is not positively homogeneous.
"""
from __future__ import annotations

import copy

import torch
from torch import Tensor, nn

from sharplib.core.models import FCNN, LeNet5


def _factors(r: float | Tensor, n_units: int, like: Tensor) -> Tensor:
    """r as a (n_units,) tensor with the dtype and device of `like`; ValueError unless every factor is finite and > 0."""
    r = torch.as_tensor(r, dtype=like.dtype, device=like.device).detach()
    if r.dim() > 1 or (r.dim() == 1 and r.numel() != n_units):
        raise ValueError(f"r must be a scalar or a 1-D tensor of {n_units} factors (one per unit), got shape {tuple(r.shape)}")
    if not bool(torch.all(torch.isfinite(r) & (r > 0))):
        raise ValueError("r must be finite and > 0 (ReLU(r z) = r ReLU(z) holds only for r > 0)")
    return r.expand(n_units)


def _check_layer(layer: int) -> None:
    if layer not in (1, 2):
        raise ValueError(f"layer must be 1 or 2 (a hidden layer that is followed by another), got {layer!r}")


# ReLU(r ⊙ (W_k x + b_k)) = r ⊙ ReLU(W_k x + b_k), so (W_k, b_k, W_{k+1}) -> (r ⊙ W_k, r ⊙ b_k, W_{k+1} ⊘ r) keeps f
def rescale_fcnn(model: FCNN, layer: int, r: float | Tensor) -> FCNN:
    """Scale the rows of fc`layer` (weight and bias) by r and the matching columns of the next layer by 1/r."""
    _check_layer(layer)
    rescaled = copy.deepcopy(model)
    this, after = getattr(rescaled, f"fc{layer}"), getattr(rescaled, f"fc{layer + 1}")
    factors = _factors(r, this.out_features, this.weight)
    with torch.no_grad():
        this.weight.mul_(factors[:, None])
        this.bias.mul_(factors)
        after.weight.div_(factors[None, :])
    return rescaled


# BN_eval(r x) = γ (r x − r μ) / sqrt(r² (σ² + ε)) + β = BN_eval(x), with running var set to σ'² = r² (σ² + ε) − ε
def rescale_lenet5(model: LeNet5, layer: int, r: float | Tensor) -> LeNet5:
    """Scale conv`layer`'s output channels (kernel and bias) by r; bn`layer` absorbs it in eval mode.

    The running mean μ scales by r. The running variance cannot simply scale by r², because
    BatchNorm divides by sqrt(σ² + ε) and ε does not scale: that leaves a relative error of
    about ε/(2σ²), large for channels with tiny variance. Scaling ε by r² instead is exact only
    for a scalar r (ε is one number per layer), so we move ε's share into the variance:
    σ'² = r²(σ² + ε) − ε, exact for per-channel r and keeping ε. For r² < ε/(σ² + ε) that σ'²
    is negative, which eval mode tolerates (σ'² + ε > 0). Train mode normalizes with batch
    statistics and stays invariant only up to ε/σ_B².
    """
    _check_layer(layer)
    rescaled = copy.deepcopy(model)
    conv, bn = getattr(rescaled, f"conv{layer}"), getattr(rescaled, f"bn{layer}")
    factors = _factors(r, conv.out_channels, conv.weight)
    with torch.no_grad():
        conv.weight.mul_(factors[:, None, None, None])
        conv.bias.mul_(factors)
        bn.running_mean.mul_(factors)
        bn.running_var.add_(bn.eps).mul_(factors**2).sub_(bn.eps)
    return rescaled


def rescale(model: nn.Module, r: float | Tensor, layer: int = 1) -> nn.Module:
    """A function-preserving rescaling of hidden layer `layer` of an FCNN or LeNet5 (see rescale_fcnn, rescale_lenet5)."""
    if isinstance(model, FCNN):
        return rescale_fcnn(model, layer, r)
    if isinstance(model, LeNet5):
        return rescale_lenet5(model, layer, r)
    raise TypeError(f"no function-preserving rescaling for {type(model).__name__}; expected FCNN or LeNet5")
