"""VAN, the Visual Attention Network (Guo et al., 2022): hyperparameters both twins read, and the variants.

Reference: Visual-Attention-Network/VAN-Classification, ``models/van.py`` (module names, init and the
checkpoint layout) and its README (published figures). Every variant has four stages; stage i starts
with an overlapping patch embedding (7x7/4 then 3x3/2 convolutions with BatchNorm), runs ``depths[i]``
blocks (BatchNorm, large kernel attention, BatchNorm, convolutional MLP, each with a layer scale) and
ends with a LayerNorm over the channels of every token.
"""
from typing import NamedTuple, Tuple

from zoo.nn import drop_path_rates
from zoo.registry import ModelEntry, Preprocess, Published, register

# name -> (embed_dims, depths); every variant uses mlp_ratios (8, 8, 4, 4)
VARIANTS = {
    "van_b0": ((32, 64, 160, 256), (3, 3, 5, 2)),
    "van_b1": ((64, 128, 320, 512), (2, 2, 4, 2)),
    "van_b2": ((64, 128, 320, 512), (3, 3, 12, 3)),
    "van_b3": ((64, 128, 320, 512), (3, 5, 27, 3)),
    "van_b4": ((64, 128, 320, 512), (3, 6, 40, 3)),
    "van_b5": ((96, 192, 480, 768), (3, 3, 24, 3)),
    "van_b6": ((96, 192, 384, 768), (6, 6, 90, 6)),
}
MLP_RATIOS = (8, 8, 4, 4)

# stage i's patch embedding: (kernel, stride, padding) = (7, 4, 3) for the first stage, else (3, 2, 1)
PATCH = ((7, 4, 3), (3, 2, 1), (3, 2, 1), (3, 2, 1))

LN_EPS = 1e-6  # the registered variants' per-stage LayerNorm (VAN() itself defaults to nn.LayerNorm's 1e-5)
LAYER_SCALE_INIT = 1e-2
# large kernel attention: depthwise 5x5 (padding 2), depthwise 7x7 with dilation 3 (padding 9), 1x1
LKA_KERNEL, LKA_PAD = 5, 2
LKA_SPATIAL_KERNEL, LKA_SPATIAL_DILATION, LKA_SPATIAL_PAD = 7, 3, 9
MLP_DW_KERNEL = 3


def van_args(name: str) -> dict:
    dims, depths = VARIANTS[name]
    return dict(embed_dims=dims, depths=depths, mlp_ratios=MLP_RATIOS)


NUM_STAGES = 4


class StageCfg(NamedTuple):
    """Stage ``index`` (``patch_embed{index + 1}``, ``block{index + 1}``, ``norm{index + 1}``)."""
    index: int
    in_chs: int
    dim: int
    mlp_ratio: float
    patch: Tuple[int, int, int]  # the patch embedding's (kernel, stride, padding)
    drop_paths: Tuple[float, ...]  # one per block: the block count and each block's stochastic depth


def van_plan(embed_dims, depths, mlp_ratios, in_chans: int, drop_path_rate: float) -> Tuple[StageCfg, ...]:
    """Checks the arguments and slices the linear drop-path rates over the four stages."""
    if len(embed_dims) != NUM_STAGES or len(depths) != NUM_STAGES or len(mlp_ratios) != NUM_STAGES:
        raise ValueError("VAN has four stages: embed_dims, depths and mlp_ratios need four entries each")
    dpr = drop_path_rates(drop_path_rate, sum(depths))
    starts = [sum(depths[:i]) for i in range(NUM_STAGES)]
    return tuple(StageCfg(i, in_chans if i == 0 else embed_dims[i - 1], embed_dims[i], mlp_ratios[i], PATCH[i],
                          tuple(dpr[starts[i]:starts[i] + depths[i]])) for i in range(NUM_STAGES))


def check_input(shape, in_chans: int) -> None:
    """Raise a clear error for an input VAN cannot take: it needs (B, in_chans, H, W).

    Any H, W >= 1 works (every stride-2 stage rounds up and the dilated 7x7 is padded to keep the size).
    """
    if len(shape) != 4:
        raise ValueError(f"VAN expects a 4-D input (batch, {in_chans}, height, width), got shape {tuple(shape)}")
    if shape[1] != in_chans:
        raise ValueError(f"VAN was built with in_chans={in_chans}, but the input has {shape[1]} channels "
                         f"(shape {tuple(shape)})")



def feature_info(embed_dims) -> list:
    """The stage outputs (forward_intermediates, features_only): each stage after its LayerNorm, as a
    (B, C, H, W) map (timm's VAN ``stages.i``; the zoo's module ``norm{i + 1}``), reductions 4, 8, 16, 32."""
    info, red = [], 1
    for i, (dim, (_, stride, _)) in enumerate(zip(embed_dims, PATCH)):
        red *= stride
        info.append(dict(num_chs=int(dim), reduction=red, module=f"norm{i + 1}"))
    return info

_VAN = "https://github.com/Visual-Attention-Network/VAN-Classification"
# The reference sets default_cfg = timm's vision_transformer._cfg(): mean = std = 0.5, bicubic,
# crop_pct 0.9 (Resize(248) + CenterCrop(224)); train.py and validate.py take these from the model.
_EVAL = Preprocess(mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), interpolation="bicubic", crop_pct=0.9)

# Parameter counts: the reference models' (VAN(...) with 1000 classes). The README gives 4.1 / 13.9 /
# 26.6 / 44.8 M, 0.9 / 2.5 / 5.0 / 9.0 GFLOPs (multiply-adds) and 75.4 / 81.1 / 82.8 / 83.9 top-1
# for B0-B3, and TODO for B4; B5 and B6 appear only in the code.
_PUBLISHED = {
    "van_b0": Published(4_105_800, 0.9, 75.4, source=_VAN),
    "van_b1": Published(13_861_800, 2.5, 81.1, source=_VAN),
    "van_b2": Published(26_578_472, 5.0, 82.8, source=_VAN),
    "van_b3": Published(44_765_608, 9.0, 83.9, source=_VAN),
    "van_b4": Published(60_283_176, source=_VAN + " (models/van.py; README: TODO)"),
    "van_b5": Published(89_967_688, source=_VAN + " (models/van.py only)"),
    "van_b6": Published(199_829_416, source=_VAN + " (models/van.py only)"),
}
_DESCRIPTION = {
    "van_b0": "VAN-B0 (tiny): large kernel attention, dims 32-256, depths 3-3-5-2",
    "van_b1": "VAN-B1 (small): dims 64-512, depths 2-2-4-2",
    "van_b2": "VAN-B2 (base): dims 64-512, depths 3-3-12-3",
    "van_b3": "VAN-B3 (large): dims 64-512, depths 3-5-27-3",
    "van_b4": "VAN-B4: dims 64-512, depths 3-6-40-3 (code only, no published weights)",
    "van_b5": "VAN-B5: dims 96-768, depths 3-3-24-3 (code only, no published weights)",
    "van_b6": "VAN-B6: dims 96-768, depths 6-6-90-6 (code only, no published weights)",
}
# Parity tests may run at 64 px (the architecture takes any size): the last stage is then 2x2, so a
# train-mode BatchNorm there still averages 4 values per sample. At 32 px it sees one value per sample,
# and with a batch of 2 its gradients become ill-conditioned (float32 noise near the bound).
TEST_SIZE = 64

for _name in VARIANTS:
    register(ModelEntry(
        name=_name, family="van", cls="VAN", kwargs=van_args(_name),
        test_input_size=(3, TEST_SIZE, TEST_SIZE), shallow_kwargs=dict(depths=(1, 1, 1, 1)),
        classifier="head", published=_PUBLISHED[_name], preprocess=_EVAL, layouts=("official",),
        description=_DESCRIPTION[_name]))
