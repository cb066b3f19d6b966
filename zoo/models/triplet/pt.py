"""Triplet Attention ResNets and MobileNetV2, PyTorch twin.

Module names and shapes follow the reference's ``MODELS/`` code, so its released checkpoints load
with ``load_state_dict(strict=True)`` once the training wrapper (``state_dict`` key, ``module.``
prefix) is removed. The MindSpore twin in ``ms.py`` uses the same attribute names.
"""
from __future__ import annotations

import torch
from torch import nn

from zoo.nn.pt import DropPath
from zoo.models.triplet import config as C


# --- triplet attention ------------------------------------------------------------------------

class BasicConv(nn.Module):
    """conv (2 -> 1, k x k, no bias) -> BatchNorm(momentum 0.01); the reference has no ReLU here."""

    def __init__(self, in_planes: int, out_planes: int, kernel_size: int):
        super().__init__()
        self.conv = nn.Conv2d(in_planes, out_planes, kernel_size, stride=1, padding=(kernel_size - 1) // 2, bias=False)
        self.bn = nn.BatchNorm2d(out_planes, eps=C.GATE_BN_EPS, momentum=C.GATE_BN_MOMENTUM)

    def forward(self, x):
        return self.bn(self.conv(x))


class ZPool(nn.Module):
    """Concatenate the max (channel 0) and the mean (channel 1) over dim 1.

    ``torch.max(x, 1)`` as in the reference: its gradient goes to the arg-max element (``amax``
    would split it between exact ties).
    """

    def forward(self, x):
        return torch.cat((torch.max(x, 1, keepdim=True)[0], x.mean(1, keepdim=True)), dim=1)


class SpatialGate(nn.Module):
    def __init__(self, kernel_size: int = 7):
        super().__init__()
        self.compress = ZPool()
        self.spatial = BasicConv(2, 1, kernel_size)

    def forward(self, x):
        # sigmoid in place on the fresh BN output, as the reference (``torch.sigmoid_``): one allocation less
        return x * torch.sigmoid_(self.spatial(self.compress(x)))


class TripletAttention(nn.Module):
    """Three gates: over (C, W) planes, (H, C) planes and (H, W) planes, averaged.

    The permutations are exactly the reference's (0,2,1,3) and (0,3,2,1), made contiguous as it
    does (which fixes the reductions' summation order), and the sum is taken in its order,
    (spatial + h + w) * 1/3.
    """

    def __init__(self, kernel_size: int = 7):
        super().__init__()
        self.ChannelGateH = SpatialGate(kernel_size)
        self.ChannelGateW = SpatialGate(kernel_size)
        self.SpatialGate = SpatialGate(kernel_size)

    def forward(self, x):
        x_h = self.ChannelGateH(x.permute(0, 2, 1, 3).contiguous()).permute(0, 2, 1, 3).contiguous()
        x_w = self.ChannelGateW(x.permute(0, 3, 2, 1).contiguous()).permute(0, 3, 2, 1).contiguous()
        x_s = self.SpatialGate(x)
        return (1 / 3) * (x_s + x_h + x_w)


# --- ResNet -----------------------------------------------------------------------------------

def _conv3x3(cin, cout, stride=1):
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inplanes, planes, stride=1, downsample=None, gate_kernel=7, drop_path=0.0):
        super().__init__()
        self.conv1 = _conv3x3(inplanes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = _conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample
        self.triplet_attention = TripletAttention(gate_kernel)
        self.drop_path = DropPath(drop_path)

    def forward(self, x):
        shortcut = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out = self.drop_path(self.triplet_attention(out))
        out += shortcut  # in place, as the reference: no new activation-sized tensor per block
        return self.relu(out)


class Bottleneck(nn.Module):
    """ResNet v1.5 bottleneck (stride on the 3x3); attention on the branch before the addition."""

    expansion = 4

    def __init__(self, inplanes, planes, stride=1, downsample=None, gate_kernel=7, drop_path=0.0):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = _conv3x3(planes, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample
        self.triplet_attention = TripletAttention(gate_kernel)
        self.drop_path = DropPath(drop_path)

    def forward(self, x):
        shortcut = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        out = self.drop_path(self.triplet_attention(out))
        out += shortcut  # in place, as the reference: no new activation-sized tensor per block
        return self.relu(out)


_BLOCKS = {"basic": BasicBlock, "bottleneck": Bottleneck}


class ResNet(nn.Module):
    """ResNet with triplet attention in every block (``ResidualNet(..., 'TripletAttention')``).

    ``stem='imagenet'``: 7x7/2 conv, max-pool, AvgPool2d(7) head; ``stem='cifar'``: 3x3/1 conv, no
    max-pool, 4x4 average-pool head. ``global_pool='fixed'`` keeps the reference's fixed pooling
    window (so the input must be about 224 px, or 32 px for CIFAR); ``'avg'`` pools globally.
    ``drop_rate`` adds dropout before ``fc`` and ``drop_path_rate`` stochastic depth on the residual
    branch, linearly over the blocks; both are 0 in the reference.
    """

    def __init__(self, block="basic", layers=(2, 2, 2, 2), gate_kernel=7, stem="imagenet", num_classes=1000,
                 in_chans=3, drop_rate=0.0, drop_path_rate=0.0, global_pool="fixed"):
        super().__init__()
        plan = C.resnet_plan(block, layers, stem, global_pool, drop_path_rate)
        block_cls = _BLOCKS[block]
        self.stem, self.global_pool, self.num_classes = stem, global_pool, num_classes
        self.conv1 = nn.Conv2d(in_chans, C.STEM_WIDTH, plan.stem_kernel, stride=plan.stem_stride,
                               padding=plan.stem_kernel // 2, bias=False)
        self.bn1 = nn.BatchNorm2d(C.STEM_WIDTH)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1) if plan.maxpool else None
        stages = [[] for _ in C.STAGE_PLANES]
        for b in plan.blocks:
            out = b.planes * block_cls.expansion
            downsample = nn.Sequential(nn.Conv2d(b.inplanes, out, 1, stride=b.stride, bias=False),
                                       nn.BatchNorm2d(out)) if b.downsample else None
            stages[b.stage].append(block_cls(b.inplanes, b.planes, b.stride, downsample, gate_kernel, b.drop_path))
        for i, blocks in enumerate(stages):
            setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))
        self.num_features = plan.num_features
        self.avgpool = nn.AvgPool2d(plan.pool_window) if plan.pool_window else None  # None: global mean
        self.drop = nn.Dropout(drop_rate)
        self.fc = nn.Linear(plan.num_features, num_classes) if num_classes > 0 else nn.Identity()
        self._init_weights()

    def reset_classifier(self, num_classes: int) -> None:
        """A new ``fc`` for ``num_classes`` (0: none, the pooled features), with the reference's fc init."""
        self.num_classes = num_classes
        self.fc = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()
        if num_classes > 0:
            nn.init.kaiming_normal_(self.fc.weight)
            nn.init.zeros_(self.fc.bias)

    def _init_weights(self):
        """The reference's scheme, keyed on state-dict names (``config.resnet_init``)."""
        if isinstance(self.fc, nn.Linear):
            nn.init.kaiming_normal_(self.fc.weight)
        with torch.no_grad():
            for key, t in self.state_dict().items():
                rule = C.resnet_init(key)
                if rule is not None:
                    getattr(nn.init, rule[0])(t, **rule[1])

    def forward_features(self, x):
        C.check_resnet_input(x.shape[-2], x.shape[-1], self.stem, self.global_pool)
        x = self.relu(self.bn1(self.conv1(x)))
        x = x if self.maxpool is None else self.maxpool(x)
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))

    def forward_head(self, x, pre_logits: bool = False):
        x = x.mean((2, 3)) if self.avgpool is None else torch.flatten(self.avgpool(x), 1)
        x = self.drop(x)
        return x if pre_logits else self.fc(x)

    def forward(self, x):
        return self.forward_head(self.forward_features(x))

    @property
    def feature_info(self):
        """timm's ResNet feature points (see ``config.resnet_feature_info``)."""
        return C.resnet_feature_info(self.stem, self.num_features)

    def forward_intermediates(self, x):
        """(``forward_features(x)``, [the stem after its ReLU, layer1, layer2, layer3, layer4])."""
        C.check_resnet_input(x.shape[-2], x.shape[-1], self.stem, self.global_pool)
        x = self.relu(self.bn1(self.conv1(x)))
        feats = [x]
        x = x if self.maxpool is None else self.maxpool(x)
        for layer in (self.layer1, self.layer2, self.layer3, self.layer4):
            x = layer(x)
            feats.append(x)
        return x, feats


# --- MobileNetV2 ------------------------------------------------------------------------------

class ConvBNReLU(nn.Sequential):
    def __init__(self, cin, cout, kernel_size=3, stride=1, groups=1):
        super().__init__(
            nn.Conv2d(cin, cout, kernel_size, stride, (kernel_size - 1) // 2, groups=groups, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU6(inplace=True))


class InvertedResidual(nn.Module):
    """[pw expand] -> dw 3x3 -> pw linear -> BN -> triplet attention, inside ``conv`` (as the reference)."""

    def __init__(self, inp, oup, stride, expand_ratio, gate_kernel=7, drop_path=0.0):
        super().__init__()
        hidden = C.expand_width(inp, expand_ratio)
        self.use_res_connect = stride == 1 and inp == oup
        layers = [ConvBNReLU(inp, hidden, kernel_size=1)] if expand_ratio != 1 else []
        layers += [ConvBNReLU(hidden, hidden, stride=stride, groups=hidden),
                   nn.Conv2d(hidden, oup, 1, 1, 0, bias=False),
                   nn.BatchNorm2d(oup),
                   TripletAttention(gate_kernel)]
        self.conv = nn.Sequential(*layers)
        self.drop_path = DropPath(drop_path)

    def forward(self, x):
        if self.use_res_connect:
            return x + self.drop_path(self.conv(x))
        return self.conv(x)


class MobileNetV2(nn.Module):
    """MobileNetV2 (width 1.0) with triplet attention in every inverted residual.

    Head: mean over W then over H, Dropout(``drop_rate``, 0.25 in the reference), Linear.
    """

    def __init__(self, gate_kernel=7, num_classes=1000, in_chans=3, drop_rate=C.MOBILENETV2_DROP, drop_path_rate=0.0):
        super().__init__()
        self.num_classes = num_classes
        plan = C.mobilenetv2_plan(drop_path_rate)
        features = [ConvBNReLU(in_chans, C.MOBILENETV2_STEM, stride=2)]
        features += [InvertedResidual(b.inp, b.oup, b.stride, b.expand_ratio, gate_kernel, b.drop_path) for b in plan]
        features.append(ConvBNReLU(plan[-1].oup, C.MOBILENETV2_LAST, kernel_size=1))
        self.features = nn.Sequential(*features)
        self.num_features = C.MOBILENETV2_LAST
        self.classifier = nn.Sequential(
            nn.Dropout(drop_rate), nn.Linear(C.MOBILENETV2_LAST, num_classes) if num_classes > 0 else nn.Identity())
        self._init_weights()

    def reset_classifier(self, num_classes: int) -> None:
        """A new ``classifier[1]`` for ``num_classes`` (0: none, the pooled features), with the reference's init."""
        self.num_classes = num_classes
        fc = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()
        if num_classes > 0:
            nn.init.normal_(fc.weight, 0, 0.01)
            nn.init.zeros_(fc.bias)
        self.classifier[1] = fc

    def _init_weights(self):
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def forward_features(self, x):
        C.check_mobilenetv2_input(x.shape[-2], x.shape[-1])
        return self.features(x)

    def forward_head(self, x, pre_logits: bool = False):
        x = x.mean(-1).mean(-1)
        x = self.classifier[0](x)
        return x if pre_logits else self.classifier[1](x)

    def forward(self, x):
        return self.forward_head(self.forward_features(x))

    feature_info = property(lambda self: C.mobilenetv2_feature_info(),
                            doc="timm's stage ends (see ``config.mobilenetv2_feature_info``).")
    _feature_idx = tuple(int(f["module"].split(".")[1]) for f in C.mobilenetv2_feature_info())

    def forward_intermediates(self, x):
        """(``forward_features(x)``, [the outputs of features.1, 3, 6, 13, 17]: timm's stage ends)."""
        if min(x.shape[-2:]) < 32:
            raise ValueError(f"input {x.shape[-2]}x{x.shape[-1]} is too small for MobileNetV2 (at least 32 px)")
        feats = []
        for i, m in enumerate(self.features):
            x = m(x)
            if i in self._feature_idx:
                feats.append(x)
        return x, feats
