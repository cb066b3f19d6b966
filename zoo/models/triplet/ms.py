"""Triplet Attention ResNets and MobileNetV2, MindSpore twin.

Same attribute names, operations and order as ``pt.py``; layers come from ``zoo.nn.ms`` so they
carry PyTorch's defaults (padding, BatchNorm momentum, dropout probability).
"""
from __future__ import annotations

from mindspore import nn, ops

from zoo.nn import ms as L
from zoo.models.triplet import config as C


# --- triplet attention ------------------------------------------------------------------------

class BasicConv(nn.Cell):
    def __init__(self, in_planes: int, out_planes: int, kernel_size: int):
        super().__init__()
        self.conv = L.Conv2d(in_planes, out_planes, kernel_size, stride=1, padding=(kernel_size - 1) // 2, bias=False)
        self.bn = L.BatchNorm2d(out_planes, eps=C.GATE_BN_EPS, momentum=C.GATE_BN_MOMENTUM)

    def construct(self, x):
        return self.bn(self.conv(x))


def _mean(x, axis: int):
    """``x.mean(axis, keep_dims=True)`` of a 4-d tensor as a matrix product with a 1/n vector: MindSpore 2.8's CPU
    ReduceMean is 3-5x slower than the product here (8x64x56x56: 7-11 ms against 2.1 ms; PyTorch's mean 0.1-0.4 ms).
    Same value to float32 rounding (the sum of x/n instead of sum(x)/n)."""
    b, c, h, w = x.shape
    if axis == 1:
        return ops.matmul(ops.ones((1, c), x.dtype) * (1.0 / c), x.reshape(b, c, h * w)).reshape(b, 1, h, w)
    if axis == 2:
        return ops.matmul(ops.ones((1, h), x.dtype) * (1.0 / h), x.reshape(b * c, h, w)).reshape(b, c, 1, w)
    return ops.matmul(x.reshape(b * c * h, w), ops.ones((w, 1), x.dtype) * (1.0 / w)).reshape(b, c, h, 1)


def _zpool(x, axis: int):
    """The max and the mean over ``axis``, concatenated along it (``ZPool`` is axis 1; ``_PlaneGate`` uses 2 and 3)."""
    # ops.max returns (values, indices); its gradient goes to the arg-max, as torch.max(x, 1)'s does
    return ops.cat((ops.max(x, axis, keepdims=True)[0], _mean(x, axis)), axis)


class ZPool(nn.Cell):
    """Concatenate the max (channel 0) and the mean (channel 1) over axis 1."""

    def construct(self, x):
        return _zpool(x, 1)


class SpatialGate(nn.Cell):
    def __init__(self, kernel_size: int = 7):
        super().__init__()
        self.compress = ZPool()
        self.spatial = BasicConv(2, 1, kernel_size)

    def construct(self, x):
        return x * ops.sigmoid(self.spatial(self.compress(x)))


class _PlaneGate(SpatialGate):
    """The reference's gate on a permuted x, computed on x itself: ``ChannelGateH`` (``axis=2``) pools over H and
    its 2-channel map lies in the (C, W) plane; ``ChannelGateW`` (``axis=3``) pools over W, in the (H, C) plane.

    The reference permutes x (0,2,1,3) / (0,3,2,1), gates it and permutes the product back: two full-size copies
    per gate. Here only the pooled 2-channel map is transposed into the conv's plane and the 1-channel gate back,
    and x is multiplied by the gate broadcast over the pooled axis: the same function (the same elements reduced,
    the max's gradient to the same arg-max); with ``_mean`` the module runs 2.2-2.3x faster forward on MindSpore's
    CPU kernels at 8 x 64 x 56 x 56 and 8 x 256 x 56 x 56, GRAPH (docs/benchmarks.md). Same parameters and names
    as ``SpatialGate``."""

    def __init__(self, kernel_size: int, axis: int):
        super().__init__(kernel_size)
        self.axis = axis

    def construct(self, x):
        if self.axis == 2:  # (B, C, 2, W) -> (B, 2, C, W); the gate (B, 1, C, W) is (B, C, 1, W) in x's order
            g = self.spatial(ops.transpose(_zpool(x, 2), (0, 2, 1, 3)))
            b, _, c, w = g.shape
            return x * ops.sigmoid(g).reshape(b, c, 1, w)
        # axis 3: (B, C, H, 2) -> (B, 2, H, C); the gate (B, 1, H, C) back to (B, C, H, 1)
        g = self.spatial(ops.transpose(_zpool(x, 3), (0, 3, 2, 1)))
        return x * ops.transpose(ops.sigmoid(g), (0, 3, 2, 1))


class TripletAttention(nn.Cell):
    def __init__(self, kernel_size: int = 7):
        super().__init__()
        self.ChannelGateH = _PlaneGate(kernel_size, 2)
        self.ChannelGateW = _PlaneGate(kernel_size, 3)
        self.SpatialGate = SpatialGate(kernel_size)

    def construct(self, x):
        x_h = self.ChannelGateH(x)
        x_w = self.ChannelGateW(x)
        x_s = self.SpatialGate(x)
        return (1 / 3) * (x_s + x_h + x_w)


# --- ResNet -----------------------------------------------------------------------------------

def _conv3x3(cin, cout, stride=1):
    return L.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)


class BasicBlock(nn.Cell):
    expansion = 1

    def __init__(self, inplanes, planes, stride=1, downsample=None, gate_kernel=7, drop_path=0.0):
        super().__init__()
        self.conv1 = _conv3x3(inplanes, planes, stride)
        self.bn1 = L.BatchNorm2d(planes)
        self.relu = L.ReLU()
        self.conv2 = _conv3x3(planes, planes)
        self.bn2 = L.BatchNorm2d(planes)
        self.downsample = downsample
        self.triplet_attention = TripletAttention(gate_kernel)
        self.drop_path = L.DropPath(drop_path)

    def construct(self, x):
        shortcut = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out = self.drop_path(self.triplet_attention(out))
        return self.relu(out + shortcut)


class Bottleneck(nn.Cell):
    expansion = 4

    def __init__(self, inplanes, planes, stride=1, downsample=None, gate_kernel=7, drop_path=0.0):
        super().__init__()
        self.conv1 = L.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = L.BatchNorm2d(planes)
        self.conv2 = _conv3x3(planes, planes, stride)
        self.bn2 = L.BatchNorm2d(planes)
        self.conv3 = L.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = L.BatchNorm2d(planes * 4)
        self.relu = L.ReLU()
        self.downsample = downsample
        self.triplet_attention = TripletAttention(gate_kernel)
        self.drop_path = L.DropPath(drop_path)

    def construct(self, x):
        shortcut = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        out = self.drop_path(self.triplet_attention(out))
        return self.relu(out + shortcut)


_BLOCKS = {"basic": BasicBlock, "bottleneck": Bottleneck}


class ResNet(nn.Cell):
    """See ``pt.ResNet``; the same arguments and the same function."""

    def __init__(self, block="basic", layers=(2, 2, 2, 2), gate_kernel=7, stem="imagenet", num_classes=1000,
                 in_chans=3, drop_rate=0.0, drop_path_rate=0.0, global_pool="fixed"):
        super().__init__()
        plan = C.resnet_plan(block, layers, stem, global_pool, drop_path_rate)
        block_cls = _BLOCKS[block]
        self.stem, self.global_pool, self.num_classes = stem, global_pool, num_classes
        self.conv1 = L.Conv2d(in_chans, C.STEM_WIDTH, plan.stem_kernel, stride=plan.stem_stride,
                              padding=plan.stem_kernel // 2, bias=False)
        self.bn1 = L.BatchNorm2d(C.STEM_WIDTH)
        self.relu = L.ReLU()
        self.maxpool = L.MaxPool2d(3, 2, 1) if plan.maxpool else None
        stages = [[] for _ in C.STAGE_PLANES]
        for b in plan.blocks:
            out = b.planes * block_cls.expansion
            downsample = L.SequentialCell([L.Conv2d(b.inplanes, out, 1, stride=b.stride, bias=False),
                                           L.BatchNorm2d(out)]) if b.downsample else None
            stages[b.stage].append(block_cls(b.inplanes, b.planes, b.stride, downsample, gate_kernel, b.drop_path))
        for i, blocks in enumerate(stages):
            setattr(self, f"layer{i + 1}", L.SequentialCell(blocks))
        self.num_features = plan.num_features
        self.avgpool = L.AvgPool2d(plan.pool_window) if plan.pool_window else None  # None: global mean
        self.drop = L.Dropout(drop_rate)
        self.fc = L.Linear(plan.num_features, num_classes) if num_classes > 0 else L.Identity()
        self._init_weights()

    def reset_classifier(self, num_classes: int) -> None:
        """See ``pt.ResNet.reset_classifier``."""
        self.num_classes = num_classes
        self.fc = L.Linear(self.num_features, num_classes) if num_classes > 0 else L.Identity()
        if num_classes > 0:
            L.kaiming_normal_(self.fc.weight)
            L.zeros_(self.fc.bias)

    def _init_weights(self):
        """The reference's scheme, keyed on the PyTorch twin's state-dict names (``config.resnet_init``)."""
        if isinstance(self.fc, nn.Dense):
            L.kaiming_normal_(self.fc.weight)
        for key, param in L.pt_named_parameters(self):
            rule = C.resnet_init(key)
            if rule is not None:
                getattr(L, rule[0])(param, **rule[1])

    def forward_features(self, x):
        C.check_resnet_input(x.shape[-2], x.shape[-1], self.stem, self.global_pool)
        x = self.relu(self.bn1(self.conv1(x)))
        x = x if self.maxpool is None else self.maxpool(x)
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))

    def forward_head(self, x, pre_logits: bool = False):
        x = x.mean((2, 3)) if self.avgpool is None else self.avgpool(x).reshape(x.shape[0], -1)
        x = self.drop(x)
        return x if pre_logits else self.fc(x)

    def construct(self, x):
        return self.forward_head(self.forward_features(x))

    @property
    def feature_info(self):
        """See ``pt.ResNet.feature_info``."""
        return C.resnet_feature_info(self.stem, self.num_features)

    def forward_intermediates(self, x):
        """See ``pt.ResNet.forward_intermediates``."""
        C.check_resnet_input(x.shape[-2], x.shape[-1], self.stem, self.global_pool)
        x = self.relu(self.bn1(self.conv1(x)))
        feats = [x]
        if self.maxpool is not None:
            x = self.maxpool(x)
        x = self.layer1(x)
        feats.append(x)
        x = self.layer2(x)
        feats.append(x)
        x = self.layer3(x)
        feats.append(x)
        x = self.layer4(x)
        feats.append(x)
        return x, feats


# --- MobileNetV2 ------------------------------------------------------------------------------

class ConvBNReLU(nn.SequentialCell):
    def __init__(self, cin, cout, kernel_size=3, stride=1, groups=1):
        super().__init__([
            L.Conv2d(cin, cout, kernel_size, stride, (kernel_size - 1) // 2, groups=groups, bias=False),
            L.BatchNorm2d(cout),
            L.ReLU6()])


class InvertedResidual(nn.Cell):
    def __init__(self, inp, oup, stride, expand_ratio, gate_kernel=7, drop_path=0.0):
        super().__init__()
        hidden = C.expand_width(inp, expand_ratio)
        self.use_res_connect = stride == 1 and inp == oup
        layers = [ConvBNReLU(inp, hidden, kernel_size=1)] if expand_ratio != 1 else []
        layers += [ConvBNReLU(hidden, hidden, stride=stride, groups=hidden),
                   L.Conv2d(hidden, oup, 1, 1, 0, bias=False),
                   L.BatchNorm2d(oup),
                   TripletAttention(gate_kernel)]
        self.conv = L.SequentialCell(layers)
        self.drop_path = L.DropPath(drop_path)

    def construct(self, x):
        if self.use_res_connect:
            return x + self.drop_path(self.conv(x))
        return self.conv(x)


class MobileNetV2(nn.Cell):
    """See ``pt.MobileNetV2``."""

    def __init__(self, gate_kernel=7, num_classes=1000, in_chans=3, drop_rate=C.MOBILENETV2_DROP, drop_path_rate=0.0):
        super().__init__()
        self.num_classes = num_classes
        plan = C.mobilenetv2_plan(drop_path_rate)
        features = [ConvBNReLU(in_chans, C.MOBILENETV2_STEM, stride=2)]
        features += [InvertedResidual(b.inp, b.oup, b.stride, b.expand_ratio, gate_kernel, b.drop_path) for b in plan]
        features.append(ConvBNReLU(plan[-1].oup, C.MOBILENETV2_LAST, kernel_size=1))
        self.features = L.SequentialCell(features)
        self.num_features = C.MOBILENETV2_LAST
        self.classifier = L.SequentialCell([
            L.Dropout(drop_rate), L.Linear(C.MOBILENETV2_LAST, num_classes) if num_classes > 0 else L.Identity()])
        self._init_weights()

    def reset_classifier(self, num_classes: int) -> None:
        """See ``pt.MobileNetV2.reset_classifier``."""
        self.num_classes = num_classes
        fc = L.Linear(self.num_features, num_classes) if num_classes > 0 else L.Identity()
        if num_classes > 0:
            L.normal_(fc.weight, 0.0, 0.01)
            L.zeros_(fc.bias)
        self.classifier = L.SequentialCell([self.classifier[0], fc])

    def _init_weights(self):
        for _, cell in self.cells_and_names():
            if isinstance(cell, nn.Conv2d):
                L.kaiming_normal_(cell.weight, mode="fan_out")
            elif isinstance(cell, nn.BatchNorm2d):
                L.ones_(cell.gamma)
                L.zeros_(cell.beta)
            elif isinstance(cell, nn.Dense):
                L.normal_(cell.weight, 0.0, 0.01)
                L.zeros_(cell.bias)

    def forward_features(self, x):
        C.check_mobilenetv2_input(x.shape[-2], x.shape[-1])
        return self.features(x)

    def forward_head(self, x, pre_logits: bool = False):
        x = x.mean(-1).mean(-1)
        x = self.classifier[0](x)
        return x if pre_logits else self.classifier[1](x)

    def construct(self, x):
        return self.forward_head(self.forward_features(x))

    feature_info = property(lambda self: C.mobilenetv2_feature_info(), doc="See ``pt.MobileNetV2.feature_info``.")
    _feature_idx = tuple(int(f["module"].split(".")[1]) for f in C.mobilenetv2_feature_info())

    def forward_intermediates(self, x):
        """See ``pt.MobileNetV2.forward_intermediates``."""
        if min(x.shape[-2], x.shape[-1]) < 32:
            raise ValueError(f"input {x.shape[-2]}x{x.shape[-1]} is too small for MobileNetV2 (at least 32 px)")
        feats = []
        for i, cell in enumerate(self.features):
            x = cell(x)
            if i in self._feature_idx:
                feats.append(x)
        return x, feats
