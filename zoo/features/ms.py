"""The MindSpore feature model: a zoo model's selected stage outputs (see ``zoo.features``); GRAPH mode."""
from __future__ import annotations

from typing import List, Sequence

from mindspore import nn


class FeatureListCell(nn.Cell):
    """``construct(x)`` returns ``[stage output i for i in out_indices]`` of ``model.forward_intermediates(x)``;
    ``feature_info`` describes them, ``out_channels`` lists their channels (as mindcv's feature wrapper).
    Parameter names stay the model's own (no prefix), so a checkpoint in the zoo's names loads into it."""

    def __init__(self, model: nn.Cell, out_indices: Sequence[int], feature_info):
        super().__init__(auto_prefix=False)
        self.model = model
        self.out_indices = tuple(out_indices)
        self.feature_info = feature_info

    @property
    def out_channels(self) -> List[int]:
        return self.feature_info.channels()

    def construct(self, x):
        feats = self.model.forward_intermediates(x)[1]
        out = []
        for i in self.out_indices:
            out.append(feats[i])
        return out
