"""Attention Transfer networks, PyTorch twin.

The reference networks are functions over a flat dict of tensors (``cifar.py``, ``imagenet.py``,
functional-zoo notebooks); these modules carry the same names (``group0.block0.conv0``, ``bn``, ``fc``,
``affine0``...), each conv holding its tensor under ``.weight`` (the reference stores it bare), so the
reference's files map onto them name for name (``layouts.py``). The MindSpore twin in ``ms.py`` uses the
same attribute names.

Every model offers ``forward_intermediates(x) -> (x_final, [g0, g1, ...])``: the group outputs exactly
where the reference's ``f`` takes its attention maps (the raw group outputs; before the next block's
pre-activation or the head), and ``x_final`` (what ``forward_features`` returns); ``forward_head(x_final)``
gives the logits.
"""
from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn

from zoo.models.at import config as C
from zoo.nn.pt import DropPath


def _conv(cin, cout, k, stride=1, bias=False):
    return nn.Conv2d(cin, cout, k, stride=stride, padding=(k - 1) // 2, bias=bias)


def _bn(n):
    return nn.BatchNorm2d(n, eps=C.BN_EPS, momentum=C.BN_MOMENTUM)


class _Head(nn.Module):
    """Shared head logic: the reference's fixed pooling window (or global pooling), dropout, fc."""

    pool_kernel = pool_stride = reduction = 1

    def _init_head(self, num_features, num_classes, drop_rate, global_pool):
        C.check_global_pool(global_pool)
        self.global_pool, self.num_features, self.num_classes = global_pool, num_features, num_classes
        self.drop = nn.Dropout(drop_rate)
        self.fc = nn.Linear(num_features, num_classes) if num_classes > 0 else nn.Identity()

    def _check_input(self, x):
        if x.ndim != 4:
            raise ValueError(f"{type(self).__name__} expects a 4-D input (batch, channels, height, width), "
                             f"got shape {tuple(x.shape)}")
        if self.global_pool == "fixed":
            C.check_fixed_pool(type(self).__name__, x.shape[-2], x.shape[-1], self.reduction, self.pool_kernel,
                               self.pool_stride)

    def _groups(self, plan, build):
        """``group0`` ... from a ``config.BlockCfg`` plan, each block made by ``build(cfg)``."""
        groups = [[] for _ in range(plan[-1].group + 1)]
        for b in plan:
            groups[b.group].append(build(b))
        for g, blocks in enumerate(groups):
            setattr(self, f"group{g}", _group(blocks))

    def reset_classifier(self, num_classes: int) -> None:
        self.num_classes = num_classes
        self.fc = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()
        if num_classes > 0:
            self._init_fc(self.fc)

    @staticmethod
    def _init_fc(fc):
        nn.init.kaiming_normal_(fc.weight)  # utils.linear_params: fan_in, gain sqrt(2)
        nn.init.zeros_(fc.bias)

    def forward_features(self, x):
        return self.forward_intermediates(x)[0]

    def forward_head(self, x, pre_logits: bool = False):
        if self.global_pool == "fixed":
            x = F.avg_pool2d(x, self.pool_kernel, self.pool_stride, 0)
        else:
            x = x.mean((2, 3), keepdim=True)
        x = self.drop(torch.flatten(x, 1))
        return x if pre_logits else self.fc(x)

    def forward(self, x):
        return self.forward_head(self.forward_features(x))


def _reference_init(model):
    """``utils.conv_params`` / ``linear_params`` / ``bnparams``: kaiming-normal (fan_in) convs and fc
    weights, zero fc bias, BatchNorm weight ``torch.rand`` (uniform in [0, 1)) and bias 0, running
    statistics 0 and 1."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.uniform_(m.weight, 0.0, 1.0)
            nn.init.zeros_(m.bias)
        elif isinstance(m, Affine):
            nn.init.ones_(m.a)
            nn.init.zeros_(m.b)
    if isinstance(model.fc, nn.Linear):
        _Head._init_fc(model.fc)


# --- CIFAR wide ResNet ------------------------------------------------------------------------

class WideBlock(nn.Module):
    """cifar.py ``block``: pre-activation; the 1x1 ``convdim`` shortcut (exactly when ni != no) takes the
    pre-activated input."""

    def __init__(self, ni: int, no: int, stride: int = 1, drop_path: float = 0.0):
        super().__init__()
        self.bn0 = _bn(ni)
        self.conv0 = _conv(ni, no, 3, stride)
        self.bn1 = _bn(no)
        self.conv1 = _conv(no, no, 3)
        self.convdim = nn.Conv2d(ni, no, 1, stride=stride, bias=False) if ni != no else None
        self.drop_path = DropPath(drop_path)

    def forward(self, x):
        o1 = F.relu(self.bn0(x))
        y = self.conv0(o1)
        o2 = F.relu(self.bn1(y))
        z = self.drop_path(self.conv1(o2))
        if self.convdim is not None:
            return z + self.convdim(o1)
        return z + x


def _group(blocks):
    return nn.Sequential(OrderedDict((f"block{i}", b) for i, b in enumerate(blocks)))


class WideResNet(_Head):
    """cifar.py ``resnet(depth, width, num_classes)``: stem conv 3 -> 16, three groups of (depth - 4) / 6
    pre-activation blocks (widths 16w, 32w, 64w; strides 1, 2, 2), head relu(bn) -> avg_pool2d(8, 1) -> fc.

    ``forward_intermediates`` returns the three raw group outputs (the reference's attention points) and
    ``relu(bn(g2))``. ``global_pool='fixed'`` keeps the reference's 8x8 window (29..32 px inputs); ``'avg'``
    pools globally. ``drop_rate`` (dropout before fc) and ``drop_path_rate`` (stochastic depth) are 0 in the
    reference.
    """

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
        return F.relu(self.bn(g2)), [g0, g1, g2]


# --- ImageNet student (imagenet.py define_student) ----------------------------------------------

class BasicBlock(nn.Module):
    """imagenet.py ``block``: post-activation; the shortcut is a bare 1x1 ``convdim`` (no BatchNorm) when
    ni != no."""

    def __init__(self, ni: int, no: int, stride: int = 1, drop_path: float = 0.0):
        super().__init__()
        self.conv0 = _conv(ni, no, 3, stride)
        self.bn0 = _bn(no)
        self.conv1 = _conv(no, no, 3)
        self.bn1 = _bn(no)
        self.convdim = nn.Conv2d(ni, no, 1, stride=stride, bias=False) if ni != no else None
        self.drop_path = DropPath(drop_path)

    def forward(self, x):
        o1 = F.relu(self.bn0(self.conv0(x)))
        o2 = self.drop_path(self.bn1(self.conv1(o1)))
        if self.convdim is not None:
            return F.relu(o2 + self.convdim(x))
        return F.relu(o2 + x)


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
    """imagenet.py ``define_student(depth, width)``: conv0 7x7/2 -> relu(bn0) -> max-pool 3/2 -> four groups of
    post-activation basic blocks (widths 64..512 x ``width``) -> avg_pool2d(7) (kernel and stride 7) -> fc.

    ``layers=(3, 4, 6, 3)`` is ResNet-34; the reference's ``define_student(34)`` builds ``(3, 4, 6, 5)``, and a
    checkpoint of it builds that (the registry reads the block counts from the weights).
    """

    pool_stride = C.RESNET_POOL

    def __init__(self, layers=C.RESNET_LAYERS[18], width: float = 1, num_classes: int = 1000, in_chans: int = 3,
                 drop_rate: float = 0.0, drop_path_rate: float = 0.0, global_pool: str = "fixed"):
        super().__init__()
        widths = C.resnet_widths(width)
        self.layers = tuple(layers)
        self.conv0 = _conv(in_chans, 64, 7, 2)
        self.bn0 = _bn(64)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        nf = self._trunk_groups(layers, widths, drop_path_rate, lambda b: BasicBlock(b.ni, b.no, b.stride, b.drop_path))
        self._init_head(nf, num_classes, drop_rate, global_pool)
        _reference_init(self)

    def forward_intermediates(self, x):
        self._check_input(x)
        x = self.maxpool(F.relu(self.bn0(self.conv0(x))))
        feats = self._trunk(x)
        return feats[-1], feats


# --- ImageNet teacher with BatchNorm folded into the convs (imagenet.py define_teacher) ---------------

class FoldedBlock(nn.Module):
    """relu(conv0(x) + b) -> conv1 + b -> + shortcut -> relu. The shortcut is the 1x1 ``conv_dim`` in the
    first block of a strided group (its bias only with ``use_dim_bias``), else the identity."""

    def __init__(self, ni: int, no: int, stride: int = 1, drop_path: float = 0.0, g=0, i=0, dim_bias=True,
                 use_dim_bias=False):
        super().__init__()
        self.conv0 = _conv(ni, no, 3, stride, bias=True)
        self.conv1 = _conv(no, no, 3, bias=True)
        self.conv_dim = None
        self.use_dim_bias = bool(use_dim_bias and dim_bias)
        if i == 0 and stride != 1:
            self.conv_dim = nn.Conv2d(ni, no, 1, stride=stride, bias=dim_bias)
            if dim_bias and not use_dim_bias:
                self.conv_dim.bias.requires_grad_(False)  # held (the file has it) but not applied
        self.drop_path = DropPath(drop_path)

    def forward(self, x):
        o = F.relu(self.conv0(x))
        o = self.drop_path(self.conv1(o))
        if self.conv_dim is not None:
            bias = self.conv_dim.bias if self.use_dim_bias else None
            o = o + F.conv2d(x, self.conv_dim.weight, bias, self.conv_dim.stride)
        else:
            o = o + x
        return F.relu(o)


class FoldedResNet(_ImageNetTrunk):
    """The functional-zoo ResNet-18/34 exports as imagenet.py's ``define_teacher`` runs them: every conv with a
    bias (BatchNorm folded in), no normalisation layer, avg_pool2d(7, 1, 0) -> fc.

    ``dim_bias``: whether the shortcut convs hold a bias (resnet-34-export does, resnet-18-export not; read from
    the file). ``use_dim_bias=False`` (default) reproduces imagenet.py, which ignores ``conv_dim.bias``;
    ``use_dim_bias=True`` is the functional-zoo network, the one validated at 26.72/8.74 top-1/top-5 error.
    """

    pool_stride = 1

    def __init__(self, layers=C.RESNET_LAYERS[34], dim_bias: bool = True, use_dim_bias: bool = False,
                 num_classes: int = 1000, in_chans: int = 3, drop_rate: float = 0.0, drop_path_rate: float = 0.0,
                 global_pool: str = "fixed"):
        super().__init__()
        self.layers, self.dim_bias, self.use_dim_bias = tuple(layers), bool(dim_bias), bool(use_dim_bias)
        self.conv0 = _conv(in_chans, 64, 7, 2, bias=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
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
        x = self.maxpool(F.relu(self.conv0(x)))
        feats = self._trunk(x)
        return feats[-1], feats


# --- the official AT-trained ResNet-18 (functional-zoo resnet-18-at-export) ---------------------------

class Affine(nn.Module):
    """``x * a + b`` per channel: BatchNorm folded into a scale and a shift (functional-zoo's ``affine``)."""

    def __init__(self, n: int):
        super().__init__()
        self.a = nn.Parameter(torch.ones(n))
        self.b = nn.Parameter(torch.zeros(n))

    def forward(self, x):
        return x * self.a.view(1, -1, 1, 1) + self.b.view(1, -1, 1, 1)


class AffineBlock(nn.Module):
    """Pre-activation block of resnet-18-at-export: [relu(affine0)] -> conv0 -> relu(affine1) -> conv1, plus the
    shortcut: ``conv_dim`` of the pre-activated input in the first block of a strided group, else the input.
    The network's first block has no ``affine0`` (the stem's affine and relu pre-activate it)."""

    def __init__(self, ni: int, no: int, stride: int = 1, drop_path: float = 0.0, g=0, i=0):
        super().__init__()
        self.affine0 = None if (g == 0 and i == 0) else Affine(ni)
        self.conv0 = _conv(ni, no, 3, stride)
        self.affine1 = Affine(no)
        self.conv1 = _conv(no, no, 3)
        self.conv_dim = nn.Conv2d(ni, no, 1, stride=stride, bias=False) if (i == 0 and g > 0) else None
        self.drop_path = DropPath(drop_path)

    def forward(self, x):
        xa = x if self.affine0 is None else F.relu(self.affine0(x))
        o = self.conv0(xa)
        o = self.conv1(F.relu(self.affine1(o)))
        o = self.drop_path(o)
        if self.conv_dim is not None:
            return o + self.conv_dim(xa)
        return o + x


class AffineResNet(_ImageNetTrunk):
    """resnet-18-at-export (the official ImageNet AT model, trained in fb.resnet.torch): conv0 7x7/2 ->
    relu(affine0) -> max-pool -> four groups of pre-activation blocks -> relu(affine_last) -> avg_pool2d(7, 1, 0)
    -> fc. This is not imagenet.py's student architecture."""

    pool_stride = 1

    def __init__(self, layers=C.RESNET_LAYERS[18], num_classes: int = 1000, in_chans: int = 3,
                 drop_rate: float = 0.0, drop_path_rate: float = 0.0, global_pool: str = "fixed"):
        super().__init__()
        self.layers = tuple(layers)
        self.conv0 = _conv(in_chans, 64, 7, 2)
        self.affine0 = Affine(64)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        nf = self._trunk_groups(layers, C.RESNET_WIDTHS, drop_path_rate,
                                lambda b: AffineBlock(b.ni, b.no, b.stride, b.drop_path, b.group, b.index))
        self.affine_last = Affine(nf)
        self._init_head(nf, num_classes, drop_rate, global_pool)
        _reference_init(self)

    def forward_intermediates(self, x):
        self._check_input(x)
        x = self.maxpool(F.relu(self.affine0(self.conv0(x))))
        feats = self._trunk(x)
        return F.relu(self.affine_last(feats[-1])), feats
