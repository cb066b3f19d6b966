"""Attention Transfer (Zagoruyko & Komodakis, ICLR 2017): hyperparameters both twins read, and the variants.

Reference: szagoruyko/attention-transfer (``cifar.py``: the CIFAR wide ResNets; ``imagenet.py``: the ImageNet
student and the BN-folded teacher it loads; ``utils.py``: init, AT and KD losses) and
szagoruyko/functional-zoo (the notebooks defining the exported ImageNet networks). The reference networks
are functional (a flat dict of tensors and a function); the twins are modules with the same names, so the
reference's files map onto them name for name (``layouts.py``).

Every model returns its attention points, the group outputs the reference's ``f`` returns, through
``forward_intermediates(x) -> (x_final, [g0, g1, ...])``; ``feature_info`` describes them.
"""
import re
from typing import NamedTuple, Tuple

from zoo.nn import drop_path_rates
from zoo.registry import ModelEntry, Preprocess, Published, register

# --- CIFAR wide ResNets (cifar.py ``resnet(depth, width, num_classes)``) ------------------------------
WRN_STEM = 16  # the stem conv is always 3 -> 16
WRN_WIDTHS = (16, 32, 64)  # x width
WRN_POOL = 8  # F.avg_pool2d(o, 8, 1, 0): a fixed 8x8 window with stride 1 (global only for 32 px inputs)

# --- ImageNet ResNets (imagenet.py ``define_student`` / ``define_teacher``, functional-zoo exports) --------
RESNET_WIDTHS = (64, 128, 256, 512)
RESNET_LAYERS = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3)}
REFERENCE_34_LAYERS = (3, 4, 6, 5)  # define_student(34): the reference's block counts (a bug; 31.2 M params)
RESNET_POOL = 7
GLOBAL_POOLS = ("fixed", "avg")
BN_EPS = 1e-5  # F.batch_norm defaults (eps 1e-5, momentum 0.1)
BN_MOMENTUM = 0.1

# The 32-px CIFAR models and the 224-px ImageNet ones use a 64-px test input with global pooling.
IMAGENET_TEST_SIZE = 64


def wrn_widths(width: float):
    return tuple(int(v * width) for v in WRN_WIDTHS)


def wrn_blocks(depth: int) -> int:
    if depth < 4 or (depth - 4) % 6:
        raise ValueError(f"WRN depth must be 6n+4 (10, 16, 22, 28, 40, ...), got {depth}")
    return (depth - 4) // 6


def resnet_widths(width: float):
    return tuple(int(w * width) for w in RESNET_WIDTHS)


# --- construction plans both twins build from ------------------------------------------------------

class BlockCfg(NamedTuple):
    """Block ``group{group}.block{index}``: ni -> no channels, the stride on the group's first block."""
    group: int
    index: int
    ni: int
    no: int
    stride: int
    drop_path: float


def group_plan(stem: int, widths, layers, strides, drop_path_rate: float) -> Tuple[BlockCfg, ...]:
    """Every block of the groups (``layers[g]`` blocks of width ``widths[g]``), drop-path spread linearly."""
    dpr = drop_path_rates(drop_path_rate, sum(layers))
    plan, ni = [], stem
    for g, (no, n, stride) in enumerate(zip(widths, layers, strides)):
        for i in range(n):
            plan.append(BlockCfg(g, i, ni if i == 0 else no, no, stride if i == 0 else 1, dpr[len(plan)]))
        ni = no
    return tuple(plan)


def wrn_plan(depth: int, width: float, drop_path_rate: float) -> Tuple[BlockCfg, ...]:
    """cifar.py's three groups of (depth - 4) / 6 blocks, widths 16w, 32w, 64w, strides 1, 2, 2."""
    n = wrn_blocks(depth)
    return group_plan(WRN_STEM, wrn_widths(width), (n,) * 3, (1, 2, 2), drop_path_rate)


def resnet_plan(layers, widths, drop_path_rate: float) -> Tuple[BlockCfg, ...]:
    """The ImageNet ResNets' four groups after the 64-channel stem, strides 1, 2, 2, 2."""
    if len(layers) != 4:
        raise ValueError(f"layers must give the blocks of 4 groups, got {tuple(layers)}")
    return group_plan(64, widths, layers, (1, 2, 2, 2), drop_path_rate)


def feature_info(widths, reductions) -> list:
    """The attention points (every group's output): channels and reduction."""
    return [dict(num_chs=w, reduction=r, module=f"group{g}") for g, (w, r) in enumerate(zip(widths, reductions))]


def check_global_pool(global_pool: str) -> None:
    if global_pool not in GLOBAL_POOLS:
        raise ValueError(f"global_pool must be one of {GLOBAL_POOLS}, got {global_pool!r}")


def check_fixed_pool(name: str, height: int, width: int, reduction: int, kernel: int, stride: int) -> None:
    """Raise a clear error for an input the reference's fixed pooling window cannot reduce to one value.

    The reference heads pool a fixed ``kernel`` window (with ``stride``) and flatten the result into the
    fc layer, so the final map (``ceil(size / reduction)`` pixels) must give exactly one window.
    """
    fh, fw = -(-height // reduction), -(-width // reduction)
    if not (kernel <= fh < kernel + stride and kernel <= fw < kernel + stride):
        lo, hi = reduction * (kernel - 1) + 1, reduction * (kernel + stride - 1)
        raise ValueError(
            f"{name}: input {height}x{width} gives a {fh}x{fw} final map, but the reference head (a {kernel}x{kernel} "
            f"average pool with stride {stride}, then flatten) needs {kernel}..{kernel + stride - 1} px there, i.e. "
            f"inputs of {lo}..{hi} px. Build the model with global_pool='avg' to pool globally at any size.")


_BLOCK_RE = re.compile(r"^group(\d+)\.block(\d+)\.conv0\.weight$")


def infer_layers(state) -> dict:
    """Blocks per group, read from the weights (as the reference's ``define_teacher`` does)."""
    counts = {}
    for k in state:
        m = _BLOCK_RE.match(k)
        if m:
            g, b = int(m.group(1)), int(m.group(2))
            counts[g] = max(counts.get(g, 0), b + 1)
    if sorted(counts) != [0, 1, 2, 3]:
        return {}
    return {"layers": tuple(counts[g] for g in range(4))}


def infer_folded(state) -> dict:
    """Block counts and whether the shortcut convs carry a bias (resnet-34-export does, resnet-18-export not)."""
    out = infer_layers(state)
    if out:
        out["dim_bias"] = any(k.endswith(".conv_dim.bias") for k in state)
    return out


# --- registry -------------------------------------------------------------------------------------------
_AT = "https://github.com/szagoruyko/attention-transfer"
_FZ = "https://github.com/szagoruyko/functional-zoo"
# cifar.py: Normalize(mean [125.3, 123.0, 113.9] / 255, std [63.0, 62.1, 66.7] / 255), 32 px as they are
_CIFAR_EVAL = Preprocess(mean=(125.3 / 255, 123.0 / 255, 113.9 / 255), std=(63.0 / 255, 62.1 / 255, 66.7 / 255),
                         interpolation="bilinear", crop_pct=1.0)
_IMAGENET_EVAL = Preprocess(interpolation="bilinear", crop_pct=0.875)  # Resize(256) + CenterCrop(224)

# Trainable parameters of the reference's functions with 10 classes (spec 2.1, printed from cifar.py).
# The paper's CIFAR-10 Table 1 errors are not registered: they could not be read from the paper here
# (see docs/models.md, "Attention Transfer").
_WRN = {
    "wrn_16_1": (16, 1, 175_066), "wrn_16_2": (16, 2, 691_674), "wrn_40_1": (40, 1, 563_930),
    "wrn_40_2": (40, 2, 2_243_546), "wrn_28_10": (28, 10, None),
}
for _name, (_d, _w, _params) in _WRN.items():
    register(ModelEntry(
        name=_name, family="at", cls="WideResNet", kwargs=dict(depth=_d, width=_w), input_size=(3, 32, 32),
        test_input_size=(3, 32, 32), num_classes=10, preprocess=_CIFAR_EVAL, layouts=("reference", "reference-teacher"),
        shallow_kwargs=dict(depth=10),
        published=Published(_params, dataset="cifar-10", source=_AT + " (cifar.py; parameter count of its function)"),
        description=f"CIFAR WRN-{_d}-{_w} (pre-activation; the attention-transfer cifar.py network)"))

_RESNET_TEST = dict(test_input_size=(3, IMAGENET_TEST_SIZE, IMAGENET_TEST_SIZE), test_kwargs=dict(global_pool="avg"),
                    shallow_kwargs=dict(layers=(1, 1, 1, 1)))

register(ModelEntry(
    name="at_resnet18", family="at", cls="ResNet", kwargs=dict(layers=RESNET_LAYERS[18]), preprocess=_IMAGENET_EVAL,
    layouts=("reference", "reference-teacher"), **_RESNET_TEST,
    published=Published(11_687_720, source=_AT + " (imagenet.py define_student(18); no published accuracy)"),
    description="ImageNet ResNet-18 student of imagenet.py (post-activation, projection shortcut without BN)"))
register(ModelEntry(
    name="at_resnet34", family="at", cls="ResNet", kwargs=dict(layers=RESNET_LAYERS[34]), preprocess=_IMAGENET_EVAL,
    layouts=("reference", "reference-teacher"), infer_kwargs=infer_layers, **_RESNET_TEST,
    published=Published(source=_AT + " (imagenet.py student with ResNet-34's [3, 4, 6, 3] blocks; define_student(34) "
                                      "builds [3, 4, 6, 5], which the weights select; nothing published)"),
    description="ImageNet ResNet-34 student (imagenet.py blocks; [3,4,6,3], or the reference's [3,4,6,5] from its "
                "file)"))
register(ModelEntry(
    name="at_resnet34_folded", family="at", cls="FoldedResNet",
    kwargs=dict(layers=RESNET_LAYERS[34], dim_bias=True), preprocess=_IMAGENET_EVAL,
    layouts=("functional-zoo", "reference-teacher"), infer_kwargs=infer_folded, **_RESNET_TEST,
    published=Published(21_789_160, top1=100 - 26.72, top5=100 - 8.74,
                        source=_FZ + " (resnet-34-export: 26.72/8.74 top-1/top-5 error with conv_dim.bias applied, "
                                     "use_dim_bias=True; imagenet.py drops the bias, the default here)"),
    description="ResNet-34 teacher with BatchNorm folded into conv biases (functional-zoo resnet-34-export)"))
register(ModelEntry(
    name="at_resnet18_folded", family="at", cls="FoldedResNet",
    kwargs=dict(layers=RESNET_LAYERS[18], dim_bias=False), preprocess=_IMAGENET_EVAL,
    layouts=("functional-zoo", "reference-teacher"), infer_kwargs=infer_folded, **_RESNET_TEST,
    published=Published(top1=100 - 30.43, top5=100 - 10.76,
                        source=_FZ + " (resnet-18-export, fb.resnet.torch ResNet-18: 30.43/10.76 error; the "
                                     "attention-transfer README rounds it to 30.4/10.8)"),
    description="ResNet-18 with BatchNorm folded into conv biases (functional-zoo resnet-18-export)"))
register(ModelEntry(
    name="at_resnet18_preact", family="at", cls="AffineResNet", kwargs=dict(layers=RESNET_LAYERS[18]),
    preprocess=_IMAGENET_EVAL, layouts=("functional-zoo",), **_RESNET_TEST,
    published=Published(11_687_720, top1=100 - 29.44, top5=100 - 10.12,
                        source=_FZ + " (resnet-18-at-export: 29.44/10.12 error; the attention-transfer README "
                                     "gives 29.3/10.0 for ResNet-18-ResNet-34-AT)"),
    description="The official AT-trained ResNet-18 (pre-activation, BatchNorm folded into per-channel affines)"))
