"""The PyTorch feature model: a zoo model's selected stage outputs (see ``zoo.features``)."""
from __future__ import annotations

from typing import List, Sequence

import torch
from torch import nn


class FeatureListNet(nn.Module):
    """``forward(x)`` returns ``[stage output i for i in out_indices]`` of ``model.forward_intermediates(x)``;
    ``feature_info`` describes them (timm's ``FeatureInfo`` helpers: ``channels()``, ``reduction()``)."""

    def __init__(self, model: nn.Module, out_indices: Sequence[int], feature_info):
        super().__init__()
        self.model = model
        self.out_indices = tuple(out_indices)
        self.feature_info = feature_info

    @property
    def out_channels(self) -> List[int]:
        return self.feature_info.channels()

    def forward(self, x: torch.Tensor) -> List[torch.Tensor]:
        feats = self.model.forward_intermediates(x)[1]
        return [feats[i] for i in self.out_indices]
