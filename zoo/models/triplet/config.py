"""Triplet Attention (Misra et al., WACV 2021): hyperparameters both twins read, and the variants.

Reference: landskape-ai/triplet-attention, ``MODELS/resnet.py``, ``MODELS/mobilenet.py`` and
``MODELS/triplet_attention.py`` (the module names its checkpoints were trained with).
"""
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
# pooling only for 224-px inputs (7x7 final map). 'fixed' reproduces it (and the CIFAR head's 4x4 window); 'avg' pools globally.
GLOBAL_POOLS = ("fixed", "avg")


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
_entry("triplet_resnet34", "ResNet", resnet_args(34, 7), description="ResNet-34 + triplet attention (k=7; code only, no published weights)")
_entry("triplet_resnet34_k3", "ResNet", resnet_args(34, 3), description="ResNet-34 + triplet attention (k=3; code only)")
_entry("triplet_resnet50", "ResNet", resnet_args(50, 7),
       Published(25_561_832, 4.169, 77.48, 93.674, source=_TA), description="ResNet-50 + triplet attention (k=7)")
_entry("triplet_resnet50_k3", "ResNet", resnet_args(50, 3),
       Published(25_557_992, 4.131, 76.12, 93.062, source=_TA), description="ResNet-50 + triplet attention (k=3)")
_entry("triplet_resnet101", "ResNet", resnet_args(101, 7), description="ResNet-101 + triplet attention (k=7; code only)")
_entry("triplet_resnet101_k3", "ResNet", resnet_args(101, 3), description="ResNet-101 + triplet attention (k=3; code only)")
_entry("triplet_mobilenetv2", "MobileNetV2", dict(gate_kernel=7), classifier="classifier.1",
       published=Published(3_509_972, 0.327, 71.99, 90.484, source=_TA), test_input_size=(3, 64, 64),
       description="MobileNetV2 + triplet attention (k=7)")
_entry("triplet_mobilenetv2_k3", "MobileNetV2", dict(gate_kernel=3), classifier="classifier.1",
       published=Published(3_505_892, 0.322, 72.62, 90.77, source=_TA), test_input_size=(3, 64, 64),
       description="MobileNetV2 + triplet attention (k=3)")
_entry("triplet_resnet18_cifar", "ResNet", resnet_args(18, 7, stem="cifar"), num_classes=10,
       input_size=(3, 32, 32), test_input_size=(3, 32, 32), test_kwargs={}, preprocess=_CIFAR_EVAL,
       published=Published(dataset="cifar-10"), description="CIFAR ResNet-18 + triplet attention (3x3 stem, no max-pool)")
_entry("triplet_resnet50_cifar", "ResNet", resnet_args(50, 7, stem="cifar"), num_classes=10,
       input_size=(3, 32, 32), test_input_size=(3, 32, 32), test_kwargs={}, preprocess=_CIFAR_EVAL,
       published=Published(dataset="cifar-10"), description="CIFAR ResNet-50 + triplet attention (3x3 stem, no max-pool)")
