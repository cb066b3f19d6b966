"""Small-data vision transformers with and without the Gaussian mixture mask (the GMM-ViT family).

Reference: CatworldLee/Gaussian-Mixture-Mask-Attention ("RetNet viewed through convolution"), built on
aanna0701/SPT_LSA_ViT. Five architectures (ViT, Swin, CaiT, PiT, T2T; CaiT also in the 108-wide "tiny"
setting), each for 32 px inputs (CIFAR-10/100, SVHN) and 64 px inputs (Tiny-ImageNet), each as the
baseline (``<arch>_<img>``) and with the Gaussian mixture mask (``gmm_<arch>_<img>``): 24 entries.

The hyper-parameters are those of the reference's ``models/create_model.py`` (with ``--num_kernals 5``, the
default of its ``main.py``). The published figures are the GMM README's "Outcomes" table: top-1 per dataset,
and Params/MACs, which the README gives once per model; they are the 32 px, 10-class figures (MACs count the
Linear and Conv layers only, the convention that reproduces the column). The README's "CaiT" row is the
``cait-tiny`` model (dim 108, 5.1M parameters), not ``--model cait`` (dim 192, 9.0M): it is recorded on
``cait_tiny_*`` here, and ``cait_*`` has no published accuracy.

This module imports no deep-learning framework: the base mask is computed here in numpy float32, exactly
as the reference computes it.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, NamedTuple, Sequence, Tuple

import numpy as np

from zoo.nn import drop_path_rates
from zoo.registry import ModelEntry, Preprocess, Published, register

NUM_KERNELS = 5  # main.py's --num_kernals default (the model classes' own defaults, 3 or 5, are never used)
STOCHASTIC_DEPTH = 0.1  # main.py's --sd: constant in ViT/CaiT/PiT, linear 0..sd in Swin/T2T
SIGMA_INIT = (10.0, 10.0)  # sigma = randn * 10 + 10
ALPHA_STD = 2.0  # alpha = randn * 2
MASK_EPS = 1e-5  # G = sum_k alpha_k * M0 ** (1 / (sigma_k ** 2 + 1e-5))
LN_EPS = 1e-5

IMG_SIZES = (32, 64)
ARCHS = ("vit", "swin", "cait", "cait_tiny", "pit", "t2t")
CLASSES = {32: 10, 64: 200}


def base_mask(num_patches: int) -> np.ndarray:
    """``On_attention_gaussian_mask(N)`` of the reference: (1, 1, N, N) float32, ``exp(-d^2) ** 0.5``.

    Tokens lie on a sqrt(N) x sqrt(N) grid, row-major; ``d^2 = dx^2 + dy^2`` with ``dx = i % s - j % s`` and
    ``dy = i // s - j // s`` computed with a float ``s`` (as the reference does). ``exp`` is evaluated in
    float32 before the square root, so pairs with d^2 > ~103 underflow to exactly 0 and d^2 in (87, 103]
    pass through denormals: those stored values are what the models see (the square root is exact).
    """
    s = num_patches ** 0.5
    if int(round(s)) ** 2 != num_patches:
        raise ValueError(f"the Gaussian mask needs a square token grid; {num_patches} tokens is not a square")
    idx = np.arange(num_patches, dtype=np.float64)
    x, y = idx % s, idx // s
    d2 = (x[:, None] - x[None, :]) ** 2 + (y[:, None] - y[None, :]) ** 2
    # torch's float32 exp is correctly rounded on these arguments; numpy's float32 exp is 1 ulp off on some
    # (e.g. d^2 = 10), so exp is taken in float64 and rounded once to float32 (bitwise torch's, denormals kept)
    e = np.exp(-d2.astype(np.float32).astype(np.float64)).astype(np.float32)
    return np.sqrt(e).reshape(1, 1, num_patches, num_patches)


def layer_scale_init(depth: int) -> float:
    """CaiT's ``LayerScale`` start value for layer ``depth`` (1-based): 0.1 up to 18, 1e-5 up to 24, then 1e-6."""
    return 0.1 if depth <= 18 else (1e-5 if depth <= 24 else 1e-6)


def check_input(shape, in_chans: int, img_size: int, arch: str) -> None:
    """A clear error for an input the model cannot take: it needs (B, in_chans, img_size, img_size)."""
    if len(shape) != 4:
        raise ValueError(f"{arch} expects a 4-D input (batch, {in_chans}, {img_size}, {img_size}), "
                         f"got shape {tuple(shape)}")
    if shape[1] != in_chans:
        raise ValueError(f"{arch} was built with in_chans={in_chans}, but the input has {shape[1]} channels "
                         f"(shape {tuple(shape)})")
    if tuple(shape[2:]) != (img_size, img_size):
        raise ValueError(f"{arch} was built for {img_size}x{img_size} inputs (img_size={img_size}), got "
                         f"{shape[2]}x{shape[3]}; resize the input to {img_size}x{img_size} or build the model "
                         f"for the other size (the family has 32 and 64 px variants)")


# --- architectures (create_model's settings) -----------------------------------------------------

@dataclass(frozen=True)
class ViTConfig:
    """``--model vit``: patch 4 (32 px) / 8 (64 px), 8x8 = 64 tokens, dim 192, 9 layers of 12 heads x 16."""

    patch_size: Dict[int, int] = field(default_factory=lambda: {32: 4, 64: 8})
    dim: int = 192
    depth: int = 9
    heads: int = 12
    dim_head: int = 16
    mlp_dim_ratio: int = 2


@dataclass(frozen=True)
class SwinConfig:
    """``--model swin``: patch 2 / 4 (16x16 tokens), embed 96, depths 2-6-4, heads 3-6-12, window 4."""

    patch_size: Dict[int, int] = field(default_factory=lambda: {32: 2, 64: 4})
    embed_dim: int = 96
    depths: Tuple[int, ...] = (2, 6, 4)
    num_heads: Tuple[int, ...] = (3, 6, 12)
    window_size: int = 4
    mlp_ratio: float = 2.0
    qkv_bias: bool = True


@dataclass(frozen=True)
class CaiTConfig:
    """``--model cait`` (dim 192) and ``cait-tiny`` (dim 108): patch 4 / 8 (64 tokens), 24 self-attention
    layers with talking heads and layer scale, 2 class-attention layers, 4 heads x 64, MLP 384."""

    patch_size: Dict[int, int] = field(default_factory=lambda: {32: 4, 64: 8})
    dim: int = 192
    depth: int = 24
    cls_depth: int = 2
    heads: int = 4
    dim_head: int = 64
    mlp_dim: int = 384


@dataclass(frozen=True)
class PiTConfig:
    """``--model pit``: patch 2 / 4 (16x16 tokens), dims 96-192-384, depths 2-6-4, heads 2-4-8, 48 per head."""

    patch_size: Dict[int, int] = field(default_factory=lambda: {32: 2, 64: 4})
    dim: int = 96
    depth: Tuple[int, ...] = (2, 6, 4)
    heads: Tuple[int, ...] = (2, 4, 8)
    dim_head: int = 48  # args.channel // args.heads[0], in every stage
    mlp_dim_ratio: int = 2


@dataclass(frozen=True)
class T2TConfig:
    """``--model t2t``: 2 (32 px) / 3 (64 px) soft splits to 8x8 tokens, embed 256, 12 blocks of 4 heads."""

    embed_dim: int = 256
    depth: int = 12
    num_heads: int = 4
    mlp_ratio: float = 2.0
    qkv_bias: bool = False
    token_dim: int = 64


# --- construction plans (both twins build their stages from these) ------------------------------------------

class SwinStageCfg(NamedTuple):
    """One Swin stage, ``layers.{index}``: ``depth`` blocks at ``dim`` on a ``resolution`` x ``resolution`` grid
    (shift on odd blocks where the grid is larger than the window), then PatchMerging when ``downsample``."""
    index: int
    dim: int
    resolution: int
    depth: int
    heads: int
    drop_path: Tuple[float, ...]  # per block: linear 0 .. drop_path_rate over all blocks
    downsample: bool
    reduction: int  # input pixels per token side at this stage (feature_info)


def swin_plan(img_size: int, patch_size: int, embed_dim: int, depths: Sequence[int], num_heads: Sequence[int],
              drop_path_rate: float) -> List[SwinStageCfg]:
    """The stages of ``Swin`` (the reference's ``SwinTransformer``); refuses sizes whose grid cannot halve."""
    n = len(depths)
    if img_size % patch_size or (img_size // patch_size) % (2 ** (n - 1)):
        raise ValueError(f"img_size {img_size} with patch {patch_size}: the token grid must halve {n - 1} times")
    res, dpr = img_size // patch_size, drop_path_rates(drop_path_rate, sum(depths))
    return [SwinStageCfg(i, int(embed_dim * 2 ** i), res // 2 ** i, depths[i], num_heads[i],
                         tuple(dpr[sum(depths[:i]):sum(depths[:i + 1])]), i < n - 1, patch_size * 2 ** i)
            for i in range(n)]


class PiTStageCfg(NamedTuple):
    """One PiT stage: a Transformer of ``depth`` blocks at ``dim`` on a ``grid`` x ``grid`` token map
    (``layers.{layer}``), then, when ``pool``, a Pool (``layers.{layer + 1}``: stride-2 depthwise conv, width x2)."""
    layer: int
    dim: int
    grid: int
    depth: int
    heads: int
    pool: bool
    reduction: int


def pit_plan(img_size: int, patch_size: int, dim: int, depth: Sequence[int], heads) -> List[PiTStageCfg]:
    """The stages of ``PiT``; ``heads`` is one per stage or a single int for all."""
    heads = tuple(heads) if isinstance(heads, (tuple, list)) else (heads,) * len(depth)
    if img_size % patch_size:
        raise ValueError(f"img_size {img_size} is not a multiple of patch_size {patch_size}")
    grid, reduction, layer, plan = img_size // patch_size, patch_size, 0, []
    for i, (d, h) in enumerate(zip(depth, heads)):
        pool = i < len(depth) - 1
        plan.append(PiTStageCfg(layer, dim, grid, d, h, pool, reduction))
        layer += 2 if pool else 1
        if pool:  # the Pool's 3x3 stride-2 conv, padding 1
            grid, reduction, dim = (grid - 3 + 2) // 2 + 1, reduction * 2, dim * 2
    return plan


VIT, SWIN, CAIT, PIT, T2T = ViTConfig(), SwinConfig(), CaiTConfig(), PiTConfig(), T2TConfig()
CAIT_TINY = CaiTConfig(dim=108)


def arch_kwargs(arch: str, img: int) -> dict:
    """Constructor arguments of ``zoo.models.gmm.{pt,ms}.<Class>`` for ``arch`` at ``img`` px."""
    if img not in IMG_SIZES:
        raise ValueError(f"img_size must be one of {IMG_SIZES}, got {img}")
    if arch == "vit":
        c = VIT
        return dict(img_size=img, patch_size=c.patch_size[img], dim=c.dim, depth=c.depth, heads=c.heads,
                    dim_head=c.dim_head, mlp_dim_ratio=c.mlp_dim_ratio)
    if arch == "swin":
        c = SWIN
        return dict(img_size=img, patch_size=c.patch_size[img], embed_dim=c.embed_dim, depths=c.depths,
                    num_heads=c.num_heads, window_size=c.window_size, mlp_ratio=c.mlp_ratio, qkv_bias=c.qkv_bias)
    if arch in ("cait", "cait_tiny"):
        c = CAIT if arch == "cait" else CAIT_TINY
        return dict(img_size=img, patch_size=c.patch_size[img], dim=c.dim, depth=c.depth, cls_depth=c.cls_depth,
                    heads=c.heads, dim_head=c.dim_head, mlp_dim=c.mlp_dim)
    if arch == "pit":
        c = PIT
        return dict(img_size=img, patch_size=c.patch_size[img], dim=c.dim, depth=c.depth, heads=c.heads,
                    dim_head=c.dim_head, mlp_dim_ratio=c.mlp_dim_ratio)
    if arch == "t2t":
        c = T2T
        return dict(img_size=img, embed_dim=c.embed_dim, depth=c.depth, num_heads=c.num_heads,
                    mlp_ratio=c.mlp_ratio, qkv_bias=c.qkv_bias, token_dim=c.token_dim)
    raise ValueError(f"unknown architecture {arch!r}; one of {ARCHS}")


CLASS_NAMES = {"vit": "ViT", "swin": "Swin", "cait": "CaiT", "cait_tiny": "CaiT", "pit": "PiT", "t2t": "T2T"}
# the fewest layers that keep every code path of each class: Swin a plain and a shifted block (16 windows) in
# stage 0, both patch mergings and the one-window 4x4 stage; PiT one layer per stage (both Pools); T2T all its
# token transformers
SHALLOW = {"ViT": dict(depth=2), "CaiT": dict(depth=2, cls_depth=1), "Swin": dict(depths=(2, 1, 1)),
           "PiT": dict(depth=(1, 1, 1)), "T2T": dict(depth=2)}

# --- published figures (GMM README, "Outcomes") ----------------------------------------------------

GMM_README = "https://github.com/CatworldLee/Gaussian-Mixture-Mask-Attention"
DATASETS = ("cifar-10", "cifar-100", "svhn", "tiny-imagenet")
# README row -> (top-1 on CIFAR-10, CIFAR-100, SVHN, Tiny-ImageNet; Params; MACs in G). Params and MACs are
# given once per row (32 px, 10 classes); the same numbers with and without GMM.
README_TABLE = {
    "vit": ((93.65, 75.36, 97.93, 59.89), (95.06, 77.81, 98.01, 62.27), 2_700_000, 0.1709),
    "swin": ((95.26, 77.88, 97.89, 60.45), (95.39, 78.26, 97.90, 61.03), 7_100_000, 0.2369),
    "cait_tiny": ((94.79, 78.42, 98.13, 62.46), (95.15, 78.97, 98.09, 63.64), 5_100_000, 0.3059),  # "CaiT"
    "pit": ((93.68, 72.82, 97.78, 57.63), (94.41, 74.16, 97.82, 58.37), 7_000_000, 0.2391),
    "t2t": ((95.32, 78.10, 97.99, 61.50), (96.16, 79.91, 97.98, 63.33), 6_500_000, 0.4174),
}


def published(arch: str, img: int, gmm: bool) -> Tuple[Published, ...]:
    """The README's figures for one entry: one ``Published`` per dataset it serves (first = the default)."""
    row = README_TABLE.get(arch)
    if row is None:  # cait (dim 192) is in create_model but not in the README table
        return (Published(dataset="cifar-10" if img == 32 else "tiny-imagenet",
                          source=GMM_README + " (models/create_model.py only; the README's CaiT row is cait-tiny)"),)
    top1 = row[1] if gmm else row[0]
    label = ("GMM-" if gmm else "") + ("CaiT" if arch == "cait_tiny" else CLASS_NAMES[arch])
    src = f"{GMM_README} (README 'Outcomes', row {label}"
    src += ", which is create_model's cait-tiny)" if arch == "cait_tiny" else ")"
    if img == 32:
        # Params/MACs: the README's, for 32 px and 10 classes (CIFAR-10 and SVHN; CIFAR-100's head is larger);
        # its parameter counts are of the trainable parameters (create_model's; the frozen masks excluded)
        return (Published(row[2], row[3], top1[0], dataset="cifar-10", source=src, params_trainable=True),
                Published(None, None, top1[1], dataset="cifar-100", source=src),
                Published(row[2], row[3], top1[2], dataset="svhn", source=src, params_trainable=True))
    return (Published(None, None, top1[3], dataset="tiny-imagenet", source=src),)


# main.py's Normalize statistics (utils/dataloader.py); validation: Resize(img) (a no-op), ToTensor, Normalize
PREPROCESS = {
    32: Preprocess(mean=(0.4914, 0.4822, 0.4465), std=(0.2470, 0.2435, 0.2616), interpolation="bilinear",
                   crop_pct=1.0),  # CIFAR-10 (CIFAR-100: (0.5070, 0.4865, 0.4409) / (0.2673, 0.2564, 0.2762))
    64: Preprocess(mean=(0.4802, 0.4481, 0.3975), std=(0.2770, 0.2691, 0.2821), interpolation="bilinear",
                   crop_pct=1.0),  # Tiny-ImageNet
}
DATASET_STATS = {
    "cifar-10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar-100": ((0.5070, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
    "svhn": ((0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970)),
    "tiny-imagenet": ((0.4802, 0.4481, 0.3975), (0.2770, 0.2691, 0.2821)),
}

_DESCRIPTION = {
    "vit": "ViT (dim 192, 9 layers, 12 heads, 64 tokens)",
    "swin": "Swin (embed 96, depths 2-6-4, window 4, 16x16 tokens)",
    "cait": "CaiT (dim 192, 24 + 2 class-attention layers, talking heads)",
    "cait_tiny": "CaiT-tiny (dim 108, 24 + 2 layers; the README's CaiT row)",
    "pit": "PiT (dims 96-192-384, depths 2-6-4, pooling by depthwise conv)",
    "t2t": "T2T-ViT (soft splits to 8x8 tokens, embed 256, 12 blocks)",
}


def entry_name(arch: str, img: int, gmm: bool) -> str:
    return f"{'gmm_' if gmm else ''}{arch}_{img}"


def _entry(arch: str, img: int, gmm: bool) -> ModelEntry:
    pubs = published(arch, img, gmm)
    head = "head" if arch in ("swin", "t2t") else "mlp_head.1"
    desc = _DESCRIPTION[arch] + (", Gaussian mixture mask (K=5)" if gmm else "") + f", {img} px"
    if arch == "vit" and gmm:
        desc += " (no class token, mean pooling)"
    return ModelEntry(
        name=entry_name(arch, img, gmm), family="gmm", cls=CLASS_NAMES[arch],
        kwargs=dict(arch_kwargs(arch, img), gmm=gmm, num_kernels=NUM_KERNELS),
        input_size=(3, img, img), num_classes=CLASSES[img], classifier=head, shallow_kwargs=SHALLOW[CLASS_NAMES[arch]],
        published=pubs[0], more_published=pubs[1:], preprocess=PREPROCESS[img], layouts=("official",),
        description=desc)


for _arch in ARCHS:
    for _img in IMG_SIZES:
        for _gmm in (False, True):
            register(_entry(_arch, _img, _gmm))
