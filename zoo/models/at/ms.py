"""Attention Transfer networks, MindSpore twin.

Same attribute names, operations and order as ``pt.py``; layers come from ``zoo.nn.ms`` (PyTorch's
padding, BatchNorm momentum and eps, pooling stride). ``forward_intermediates`` computes the group outputs
inside the forward (no hooks), so a cell calling it compiles in GRAPH mode.
"""
from __future__ import annotations

from collections import OrderedDict

import mindspore as ms
import numpy as np
from mindspore import nn, ops

from zoo.models.at import config as C
from zoo.nn import ms as L


def _conv(cin, cout, k, stride=1, bias=False):
    return L.Conv2d(cin, cout, k, stride=stride, padding=(k - 1) // 2, bias=bias)


def _bn(n):
    return L.BatchNorm2d(n, eps=C.BN_EPS, momentum=C.BN_MOMENTUM)


def _relu(x):
    return ops.relu(x)


class _Head(nn.Cell):
    pool_kernel = pool_stride = reduction = 1

    def _init_head(self, num_features, num_classes, drop_rate, global_pool):
        C.check_global_pool(global_pool)
        self.global_pool, self.num_features, self.num_classes = global_pool, num_features, num_classes
        self.pool = L.AvgPool2d(self.pool_kernel, self.pool_stride) if global_pool == "fixed" else None
        self.drop = L.Dropout(drop_rate)
        self.fc = L.Linear(num_features, num_classes) if num_classes > 0 else L.Identity()

    def _check_input(self, x):
        if self.global_pool == "fixed":
            C.check_fixed_pool(type(self).__name__, x.shape[-2], x.shape[-1], self.reduction, self.pool_kernel,
                               self.pool_stride)

    def _groups(self, plan, build):
        """See ``pt._Head._groups``."""
        groups = [[] for _ in range(plan[-1].group + 1)]
        for b in plan:
            groups[b.group].append(build(b))
        for g, blocks in enumerate(groups):
            setattr(self, f"group{g}", _group(blocks))

    def reset_classifier(self, num_classes: int) -> None:
        self.num_classes = num_classes
        self.fc = L.Linear(self.num_features, num_classes) if num_classes > 0 else L.Identity()
        if num_classes > 0:
            self._init_fc(self.fc)

    @staticmethod
    def _init_fc(fc):
        L.kaiming_normal_(fc.weight)
        L.zeros_(fc.bias)

    def forward_features(self, x):
        return self.forward_intermediates(x)[0]

    def forward_head(self, x, pre_logits: bool = False):
        if self.pool is not None:
            x = self.pool(x)
        else:
            x = x.mean((2, 3), keep_dims=True)
        x = self.drop(x.reshape(x.shape[0], -1))
        if pre_logits:
            return x
        return self.fc(x)

    def construct(self, x):
        return self.forward_head(self.forward_features(x))


def _reference_init(model):
    """See ``pt._reference_init``: kaiming-normal (fan_in) convs and fc, BatchNorm gamma uniform in [0, 1)."""
    for _, cell in model.cells_and_names():
        if isinstance(cell, nn.Conv2d):
            L.kaiming_normal_(cell.weight)
            if cell.has_bias:
                L.zeros_(cell.bias)
        elif isinstance(cell, nn.BatchNorm2d):
            L.uniform_(cell.gamma, 0.0, 1.0)
            L.zeros_(cell.beta)
        elif isinstance(cell, Affine):
            L.ones_(cell.a)
            L.zeros_(cell.b)
    if isinstance(model.fc, nn.Dense):
        _Head._init_fc(model.fc)


def _group(blocks):
    return L.SequentialCell(OrderedDict((f"block{i}", b) for i, b in enumerate(blocks)))


# --- CIFAR wide ResNet ------------------------------------------------------------------------

class WideBlock(nn.Cell):
    def __init__(self, ni: int, no: int, stride: int = 1, drop_path: float = 0.0):
        super().__init__()
        self.bn0 = _bn(ni)
        self.conv0 = _conv(ni, no, 3, stride)
        self.bn1 = _bn(no)
        self.conv1 = _conv(no, no, 3)
        self.convdim = L.Conv2d(ni, no, 1, stride=stride, bias=False) if ni != no else None
        self.drop_path = L.DropPath(drop_path)

    def construct(self, x):
        o1 = _relu(self.bn0(x))
        y = self.conv0(o1)
        o2 = _relu(self.bn1(y))
        z = self.drop_path(self.conv1(o2))
        if self.convdim is not None:
            return z + self.convdim(o1)
        return z + x


class WideResNet(_Head):
    """See ``pt.WideResNet``."""

    reduction, pool_kernel, pool_stride = 4, C.WRN_POOL, 1

    def __init__(self, depth: int = 16, width: float = 1, num_classes: int = 10, in_chans: int = 3,
                 drop_rate: float = 0.0, drop_path_rate: float = 0.0, global_pool: str = "fixed"):
        super().__init__()
        widths, plan = C.wrn_widths(width), C.wrn_plan(depth, width, drop_path_rate)
        self.conv0 = _conv(in_chans, C.WRN_STEM, 3)
        self._groups(plan, lambda b: WideBlock(b.ni, b.no, b.stride, b.drop_path))
        self.bn = _bn(widths[2])
        self.feature_info = C.feature_info(widths, (1, 2, 4))
        self._init_head(widths[2], num_classes, drop_rate, global_pool)
        _reference_init(self)

    def forward_intermediates(self, x):
        self._check_input(x)
        x = self.conv0(x)
        g0 = self.group0(x)
        g1 = self.group1(g0)
        g2 = self.group2(g1)
        return _relu(self.bn(g2)), [g0, g1, g2]


# --- ImageNet student ---------------------------------------------------------------------------

class BasicBlock(nn.Cell):
    def __init__(self, ni: int, no: int, stride: int = 1, drop_path: float = 0.0):
        super().__init__()
        self.conv0 = _conv(ni, no, 3, stride)
        self.bn0 = _bn(no)
        self.conv1 = _conv(no, no, 3)
        self.bn1 = _bn(no)
        self.convdim = L.Conv2d(ni, no, 1, stride=stride, bias=False) if ni != no else None
        self.drop_path = L.DropPath(drop_path)

    def construct(self, x):
        o1 = _relu(self.bn0(self.conv0(x)))
        o2 = self.drop_path(self.bn1(self.conv1(o1)))
        if self.convdim is not None:
            return _relu(o2 + self.convdim(x))
        return _relu(o2 + x)


class _ImageNetTrunk(_Head):
    reduction, pool_kernel = 32, C.RESNET_POOL

    def _trunk_groups(self, layers, widths, drop_path_rate, build):
        """Four groups after the 64-channel stem; returns the last group's width."""
        self._groups(C.resnet_plan(layers, widths, drop_path_rate), build)
        self.feature_info = C.feature_info(widths, (4, 8, 16, 32))
        return widths[-1]

    def _trunk(self, x):
        g0 = self.group0(x)
        g1 = self.group1(g0)
        g2 = self.group2(g1)
        g3 = self.group3(g2)
        return [g0, g1, g2, g3]


class ResNet(_ImageNetTrunk):
    """See ``pt.ResNet``."""

    pool_stride = C.RESNET_POOL

    def __init__(self, layers=C.RESNET_LAYERS[18], width: float = 1, num_classes: int = 1000, in_chans: int = 3,
                 drop_rate: float = 0.0, drop_path_rate: float = 0.0, global_pool: str = "fixed"):
        super().__init__()
        widths = C.resnet_widths(width)
        self.layers = tuple(layers)
        self.conv0 = _conv(in_chans, 64, 7, 2)
        self.bn0 = _bn(64)
        self.maxpool = L.MaxPool2d(3, 2, 1)
        nf = self._trunk_groups(layers, widths, drop_path_rate, lambda b: BasicBlock(b.ni, b.no, b.stride, b.drop_path))
        self._init_head(nf, num_classes, drop_rate, global_pool)
        _reference_init(self)

    def forward_intermediates(self, x):
        self._check_input(x)
        x = self.maxpool(_relu(self.bn0(self.conv0(x))))
        feats = self._trunk(x)
        return feats[-1], feats


# --- folded teacher --------------------------------------------------------------------------------

class FoldedBlock(nn.Cell):
    def __init__(self, ni: int, no: int, stride: int = 1, drop_path: float = 0.0, g=0, i=0, dim_bias=True,
                 use_dim_bias=False):
        super().__init__()
        self.conv0 = _conv(ni, no, 3, stride, bias=True)
        self.conv1 = _conv(no, no, 3, bias=True)
        self.conv_dim = None
        self.use_dim_bias = bool(use_dim_bias and dim_bias)
        if i == 0 and stride != 1:
            self.conv_dim = L.Conv2d(ni, no, 1, stride=stride, bias=dim_bias)
            if dim_bias and not use_dim_bias:
                self.conv_dim.bias.requires_grad = False  # held (the file has it) but not applied
        self.drop_path = L.DropPath(drop_path)

    def construct(self, x):
        o = _relu(self.conv0(x))
        o = self.drop_path(self.conv1(o))
        if self.conv_dim is not None:
            if self.use_dim_bias:
                o = o + self.conv_dim(x)
            else:  # the conv without its bias (imagenet.py's F.conv2d(x, conv_dim.weight, stride=...))
                o = o + self.conv_dim.conv2d(x, self.conv_dim.weight)
        else:
            o = o + x
        return _relu(o)


class FoldedResNet(_ImageNetTrunk):
    """See ``pt.FoldedResNet``."""

    pool_stride = 1

    def __init__(self, layers=C.RESNET_LAYERS[34], dim_bias: bool = True, use_dim_bias: bool = False,
                 num_classes: int = 1000, in_chans: int = 3, drop_rate: float = 0.0, drop_path_rate: float = 0.0,
                 global_pool: str = "fixed"):
        super().__init__()
        self.layers, self.dim_bias, self.use_dim_bias = tuple(layers), bool(dim_bias), bool(use_dim_bias)
        self.conv0 = _conv(in_chans, 64, 7, 2, bias=True)
        self.maxpool = L.MaxPool2d(3, 2, 1)
        nf = self._trunk_groups(layers, C.RESNET_WIDTHS, drop_path_rate, lambda b: FoldedBlock(
            b.ni, b.no, b.stride, b.drop_path, b.group, b.index, dim_bias=dim_bias, use_dim_bias=use_dim_bias))
        self._init_head(nf, num_classes, drop_rate, global_pool)
        _reference_init(self)

    @property
    def variant(self) -> str:
        if not self.dim_bias:
            return "the shortcut convs have no bias (as in resnet-18-export)"
        return ("conv_dim.bias applied (functional-zoo's network)" if self.use_dim_bias else
                "conv_dim.bias ignored, as attention-transfer's imagenet.py does (use_dim_bias=True applies it)")

    def forward_intermediates(self, x):
        self._check_input(x)
        x = self.maxpool(_relu(self.conv0(x)))
        feats = self._trunk(x)
        return feats[-1], feats


# --- resnet-18-at-export ----------------------------------------------------------------------------

class Affine(nn.Cell):
    """``x * a + b`` per channel (see ``pt.Affine``)."""

    def __init__(self, n: int):
        super().__init__()
        self.a = ms.Parameter(ms.Tensor(np.ones(n, np.float32)), name="a")
        self.b = ms.Parameter(ms.Tensor(np.zeros(n, np.float32)), name="b")

    def construct(self, x):
        return x * self.a.reshape(1, -1, 1, 1) + self.b.reshape(1, -1, 1, 1)


class AffineBlock(nn.Cell):
    def __init__(self, ni: int, no: int, stride: int = 1, drop_path: float = 0.0, g=0, i=0):
        super().__init__()
        self.affine0 = None if (g == 0 and i == 0) else Affine(ni)
        self.conv0 = _conv(ni, no, 3, stride)
        self.affine1 = Affine(no)
        self.conv1 = _conv(no, no, 3)
        self.conv_dim = L.Conv2d(ni, no, 1, stride=stride, bias=False) if (i == 0 and g > 0) else None
        self.drop_path = L.DropPath(drop_path)

    def construct(self, x):
        xa = x
        if self.affine0 is not None:
            xa = _relu(self.affine0(x))
        o = self.conv0(xa)
        o = self.conv1(_relu(self.affine1(o)))
        o = self.drop_path(o)
        if self.conv_dim is not None:
            return o + self.conv_dim(xa)
        return o + x


class AffineResNet(_ImageNetTrunk):
    """See ``pt.AffineResNet``."""

    pool_stride = 1

    def __init__(self, layers=C.RESNET_LAYERS[18], num_classes: int = 1000, in_chans: int = 3,
                 drop_rate: float = 0.0, drop_path_rate: float = 0.0, global_pool: str = "fixed"):
        super().__init__()
        self.layers = tuple(layers)
        self.conv0 = _conv(in_chans, 64, 7, 2)
        self.affine0 = Affine(64)
        self.maxpool = L.MaxPool2d(3, 2, 1)
        nf = self._trunk_groups(layers, C.RESNET_WIDTHS, drop_path_rate,
                                lambda b: AffineBlock(b.ni, b.no, b.stride, b.drop_path, b.group, b.index))
        self.affine_last = Affine(nf)
        self._init_head(nf, num_classes, drop_rate, global_pool)
        _reference_init(self)

    def forward_intermediates(self, x):
        self._check_input(x)
        x = self.maxpool(_relu(self.affine0(self.conv0(x))))
        feats = self._trunk(x)
        return _relu(self.affine_last(feats[-1])), feats
