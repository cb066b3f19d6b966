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
