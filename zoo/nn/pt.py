"""The few PyTorch building blocks the twins share (the MindSpore halves live in ``zoo.nn.ms``)."""
from __future__ import annotations

import math

import torch
from torch import nn


def drop_path(x: torch.Tensor, drop_prob: float = 0.0, training: bool = False) -> torch.Tensor:
    """Per-sample stochastic depth as timm computes it: keep mask per sample, scaled by 1/keep."""
    if drop_prob == 0.0 or not training:
        return x
    keep = 1.0 - drop_prob
    mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
    return x * mask.div_(keep)


class DropPath(nn.Module):
    def __init__(self, drop_prob: float = 0.0):
        super().__init__()
        self.drop_prob = float(drop_prob)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return drop_path(x, self.drop_prob, self.training)

    def extra_repr(self) -> str:
        return f"drop_prob={self.drop_prob}"


def fan_out_normal_(weight: torch.Tensor, groups: int = 1) -> None:
    """``normal_(0, sqrt(2 / fan_out))`` with fan_out = kh*kw*out/groups (the init VAN and PVT use)."""
    fan_out = weight.shape[0] * math.prod(weight.shape[2:]) // groups
    nn.init.normal_(weight, 0.0, math.sqrt(2.0 / fan_out))


def init_fan_out_(model: nn.Module, linear_std: float = 0.01, linear_trunc: bool = False) -> None:
    """The init timm's ByobNet (HaloNet) and VAN share, over every module of ``model``: convolutions
    ``fan_out_normal_`` with zero bias; Linear normal(0, ``linear_std``), or timm's ``trunc_normal_`` (absolute
    bounds +-2) when ``linear_trunc``, with zero bias; BatchNorm and LayerNorm weight 1, bias 0.
    The MindSpore half is ``zoo.nn.ms.init_fan_out_``."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            fan_out_normal_(m.weight, m.groups)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            if linear_trunc:
                nn.init.trunc_normal_(m.weight, std=linear_std, a=-2.0, b=2.0)
            else:
                nn.init.normal_(m.weight, 0.0, linear_std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.LayerNorm)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
