"""Triplet Attention (Misra et al., WACV 2021): hyperparameters both twins read, and the variants.

Reference: landskape-ai/triplet-attention, ``MODELS/resnet.py``, ``MODELS/mobilenet.py`` and
``MODELS/triplet_attention.py`` (the module names its checkpoints were trained with).
"""
from typing import NamedTuple, Optional, Tuple

from zoo.nn import drop_path_rates
from zoo.registry import ModelEntry, Preprocess, Published, register

# ResNet depth -> (block kind, blocks per stage)
RESNET_LAYERS = {
    18: ("basic", (2, 2, 2, 2)),
    34: ("basic", (3, 4, 6, 3)),
    50: ("bottleneck", (3, 4, 6, 3)),
    101: ("bottleneck", (3, 4, 23, 3)),
}
EXPANSION = {"basic": 1, "bottleneck": 4}
STAGE_PLANES = (64, 128, 256, 512)

# MobileNetV2 inverted residual setting: expand ratio t, channels c, repeats n, first stride s
MOBILENETV2_SETTING = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2),
                       (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))
MOBILENETV2_STEM, MOBILENETV2_LAST = 32, 1280
MOBILENETV2_DROP = 0.25  # the reference's classifier dropout (torchvision uses 0.2)

# The gate: conv(2 -> 1, k x k, no bias) -> BatchNorm(eps 1e-5, momentum 0.01) -> sigmoid
GATE_BN_EPS = 1e-5
GATE_BN_MOMENTUM = 0.01  # PyTorch meaning (MindSpore: 0.99)

# ImageNet ResNets end in AvgPool2d(7): a fixed 7x7 window with stride 7, which equals global
# pooling only for 224-px inputs (7x7 final map). 'fixed' reproduces it (and the CIFAR head's 4x4 window);
# 'avg' pools globally.
GLOBAL_POOLS = ("fixed", "avg")


STEMS = ("imagenet", "cifar")
STEM_WIDTH = 64


# --- construction plans both twins build from ------------------------------------------------------

class ResNetBlockCfg(NamedTuple):
    """One residual block: ``layer{stage + 1}[index]``, with a 1x1 conv + BN shortcut when ``downsample``."""
    stage: int
    index: int
    inplanes: int
    planes: int
    stride: int
    downsample: bool
    drop_path: float


class ResNetPlan(NamedTuple):
    stem_kernel: int  # conv1: 7x7/2 (padding 3) for ImageNet, 3x3/1 (padding 1) for CIFAR
    stem_stride: int
    maxpool: bool  # 3x3/2 max-pool after the stem (ImageNet only)
    pool_window: Optional[int]  # the fixed head window (7 or 4); None: global average pooling
    blocks: Tuple[ResNetBlockCfg, ...]
    num_features: int


def resnet_plan(block: str, layers, stem: str, global_pool: str, drop_path_rate: float) -> ResNetPlan:
    """Checks the arguments and lays out every block (``ResidualNet``'s ``_make_layer``, stride on block 0)."""
    if block not in EXPANSION:
        raise ValueError(f"block must be one of {tuple(EXPANSION)}, got {block!r}")
    if stem not in STEMS:
        raise ValueError(f"stem must be 'imagenet' or 'cifar', got {stem!r}")
    if global_pool not in GLOBAL_POOLS:
        raise ValueError(f"global_pool must be one of {GLOBAL_POOLS}, got {global_pool!r}")
    expansion, dpr = EXPANSION[block], drop_path_rates(drop_path_rate, sum(layers))
    blocks, inplanes = [], STEM_WIDTH
    for si, (planes, n) in enumerate(zip(STAGE_PLANES, layers)):
        for bi in range(n):
            stride = (1 if si == 0 else 2) if bi == 0 else 1
            down = bi == 0 and (stride != 1 or inplanes != planes * expansion)
            blocks.append(ResNetBlockCfg(si, bi, inplanes, planes, stride, down, dpr[len(blocks)]))
            inplanes = planes * expansion
    imagenet = stem == "imagenet"
    window = (7 if imagenet else 4) if global_pool == "fixed" else None
    return ResNetPlan(7 if imagenet else 3, 2 if imagenet else 1, imagenet, window, tuple(blocks), inplanes)


def resnet_init(key: str):
    """The reference's ResNet init of the state-dict entry ``key`` as (``nn.init`` function, kwargs), or None.

    It keys on names (after ``kaiming_normal_(fc.weight)``): weights whose key contains 'conv' get
    kaiming-normal (fan_out), covering the gate convs; 'bn' weights 1, except the spatial gate's BN, which
    starts at 0 (a constant 0.5 gate); every bias 0. The shortcut ('downsample.*') keeps the default init.
    """
    leaf = key.rsplit(".", 1)[-1]
    if leaf == "weight" and "conv" in key:
        return "kaiming_normal_", dict(mode="fan_out")
    if leaf == "weight" and "bn" in key:
        return "constant_", dict(val=0.0 if "SpatialGate" in key else 1.0)
    if leaf == "bias":
        return "constant_", dict(val=0.0)
    return None


class InvertedResidualCfg(NamedTuple):
    inp: int
    oup: int
    stride: int
    expand_ratio: int
    drop_path: float


def mobilenetv2_plan(drop_path_rate: float) -> Tuple[InvertedResidualCfg, ...]:
    """The 17 inverted residuals (``features.1`` ... ``features.17``), stride on each group's first."""
    n_blocks = sum(n for _, _, n, _ in MOBILENETV2_SETTING)
    dpr = drop_path_rates(drop_path_rate, n_blocks)
    plan, cin = [], MOBILENETV2_STEM
    for t, c, n, s in MOBILENETV2_SETTING:
        for i in range(n):
            plan.append(InvertedResidualCfg(cin, c, s if i == 0 else 1, t, dpr[len(plan)]))
            cin = c
    return tuple(plan)


def expand_width(inp: int, expand_ratio: float) -> int:
    return int(round(inp * expand_ratio))


def check_mobilenetv2_input(height: int, width: int) -> None:
    if min(height, width) < 32:
        raise ValueError(f"input {height}x{width} is too small for MobileNetV2 (at least 32 px)")


def resnet_args(depth, gate_kernel=7, stem="imagenet"):
    block, layers = RESNET_LAYERS[depth]
    return dict(block=block, layers=layers, gate_kernel=gate_kernel, stem=stem)


def check_resnet_input(height: int, width: int, stem: str, global_pool: str) -> None:
    """Raise a clear error for an input the reference ResNet head cannot take.

    The reference heads are fixed windows: AvgPool2d(7) after a /32 ImageNet trunk and
    avg_pool2d(4) after a /8 CIFAR trunk, followed by a flatten into the fc layer, so the final map
    must be k..2k-1 pixels for the window to give exactly one output.
    """
    if min(height, width) < 32:
        raise ValueError(f"input {height}x{width} is too small for this ResNet (at least 32 px)")
    if global_pool != "fixed":
        return
    stride, k = (32, 7) if stem == "imagenet" else (8, 4)
    fh, fw = -(-height // stride), -(-width // stride)
    if not (k <= fh <= 2 * k - 1 and k <= fw <= 2 * k - 1):
        lo, hi = stride * (k - 1) + 1, stride * (2 * k - 1)
        raise ValueError(
            f"input {height}x{width} gives a {fh}x{fw} final map, but the reference head (a {k}x{k} average "
            f"pool, then flatten) needs {k}..{2 * k - 1} px, i.e. inputs of {lo}..{hi} px. "
            "Build the model with global_pool='avg' to pool globally at any size.")


def infer_kwargs(state) -> dict:
    """The gate kernel size k, read from a gate conv's weight shape (1, 2, k, k)."""
    for name, value in state.items():
        if name.endswith(".spatial.conv.weight"):
            return {"gate_kernel": int(value.shape[-1])}
    return {}



# --- stage outputs (forward_intermediates, features_only), timm's feature points --------------------

def resnet_feature_info(stem: str, num_features: int) -> list:
    """timm's ResNet feature points: the stem after its ReLU (module ``relu``; reduction 2, or 1 for the
    CIFAR stem), then ``layer1`` ... ``layer4``."""
    expansion = num_features // STAGE_PLANES[-1]
    red = 2 if stem == "imagenet" else 1
    info = [dict(num_chs=64, reduction=red, module="relu")]
    red *= 2 if stem == "imagenet" else 1  # the max-pool
    for i, planes in enumerate(STAGE_PLANES):
        red *= 1 if i == 0 else 2
        info.append(dict(num_chs=planes * expansion, reduction=red, module=f"layer{i + 1}"))
    return info


def mobilenetv2_feature_info() -> list:
    """timm's MobileNetV2 stage ends: the last block before each stride-2 group, and the last block
    (``features.1, 3, 6, 13, 17``: 16, 24, 32, 96, 320 channels at reductions 2..32; not the 1280-wide
    ``features.18``, as timm's ``conv_head`` is not a feature)."""
    info, idx, red = [], 0, 2  # features.0, the stem, has stride 2
    for g, (_, c, n, s) in enumerate(MOBILENETV2_SETTING):
        idx, red = idx + n, red * s
        if g + 1 == len(MOBILENETV2_SETTING) or MOBILENETV2_SETTING[g + 1][3] > 1:
            info.append(dict(num_chs=c, reduction=red, module=f"features.{idx}"))
    return info

_TA = "https://github.com/landskape-ai/triplet-attention"
_IMAGENET_EVAL = Preprocess(interpolation="bilinear", crop_pct=0.875)  # Resize(256) + CenterCrop(224)
_CIFAR_EVAL = Preprocess(interpolation="bilinear", crop_pct=1.0)  # 32 px images as they are


def _entry(name, cls, kwargs, published=Published(), **extra):
    if cls == "ResNet":
        extra.setdefault("test_input_size", (3, 64, 64))
        extra.setdefault("test_kwargs", dict(global_pool="avg"))
        extra.setdefault("shallow_kwargs", dict(layers=(1, 1, 1, 1)))
    return register(ModelEntry(name=name, family="triplet", cls=cls, kwargs=kwargs, published=published,
                               preprocess=extra.pop("preprocess", _IMAGENET_EVAL), layouts=("official",),
                               infer_kwargs=infer_kwargs, **extra))


# top-1/top-5 are 100 - the README's errors
_entry("triplet_resnet18", "ResNet", resnet_args(18, 7),
       Published(11_691_912, 1.825, 71.09, 89.99, source=_TA), description="ResNet-18 + triplet attention (k=7)")
_entry("triplet_resnet18_k3", "ResNet", resnet_args(18, 3),
       Published(11_689_992, 1.823, 70.33, 89.58, source=_TA), description="ResNet-18 + triplet attention (k=3)")
_entry("triplet_resnet34", "ResNet", resnet_args(34, 7),
       description="ResNet-34 + triplet attention (k=7; code only, no published weights)")
_entry("triplet_resnet34_k3", "ResNet", resnet_args(34, 3),
       description="ResNet-34 + triplet attention (k=3; code only)")
_entry("triplet_resnet50", "ResNet", resnet_args(50, 7),
       Published(25_561_832, 4.169, 77.48, 93.674, source=_TA), description="ResNet-50 + triplet attention (k=7)")
_entry("triplet_resnet50_k3", "ResNet", resnet_args(50, 3),
       Published(25_557_992, 4.131, 76.12, 93.062, source=_TA), description="ResNet-50 + triplet attention (k=3)")
_entry("triplet_resnet101", "ResNet", resnet_args(101, 7),
       description="ResNet-101 + triplet attention (k=7; code only)")
_entry("triplet_resnet101_k3", "ResNet", resnet_args(101, 3),
       description="ResNet-101 + triplet attention (k=3; code only)")
_entry("triplet_mobilenetv2", "MobileNetV2", dict(gate_kernel=7), classifier="classifier.1",
       published=Published(3_509_972, 0.327, 71.99, 90.484, source=_TA), test_input_size=(3, 64, 64),
       description="MobileNetV2 + triplet attention (k=7)")
_entry("triplet_mobilenetv2_k3", "MobileNetV2", dict(gate_kernel=3), classifier="classifier.1",
       published=Published(3_505_892, 0.322, 72.62, 90.77, source=_TA), test_input_size=(3, 64, 64),
       description="MobileNetV2 + triplet attention (k=3)")
_entry("triplet_resnet18_cifar", "ResNet", resnet_args(18, 7, stem="cifar"), num_classes=10,
       input_size=(3, 32, 32), test_input_size=(3, 32, 32), test_kwargs={}, preprocess=_CIFAR_EVAL,
       published=Published(dataset="cifar-10"),
       description="CIFAR ResNet-18 + triplet attention (3x3 stem, no max-pool)")
_entry("triplet_resnet50_cifar", "ResNet", resnet_args(50, 7, stem="cifar"), num_classes=10,
       input_size=(3, 32, 32), test_input_size=(3, 32, 32), test_kwargs={}, preprocess=_CIFAR_EVAL,
       published=Published(dataset="cifar-10"),
       description="CIFAR ResNet-50 + triplet attention (3x3 stem, no max-pool)")
