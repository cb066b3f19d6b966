"""HaloNet family, PyTorch twin.

Module names and shapes are timm's (``ByobNet`` with ``HaloAttn`` / ``BottleneckAttn``), so a timm
checkpoint of these variants loads with ``load_state_dict(strict=True)``. Only what the five
variants use is here: blocks, then the model. The MindSpore twin in ``ms.py`` has the same names.
"""
from __future__ import annotations


import torch
import torch.nn.functional as F
from torch import nn

from zoo.models.halonet import config as C
from zoo.nn import make_divisible
from zoo.nn.pt import DropPath, init_fan_out_

_ACTS = {"relu": nn.ReLU, "silu": nn.SiLU}


def _act(name):
    return _ACTS[name]() if name else nn.Identity()


# --- conv / norm blocks -------------------------------------------------------------------------

class _BatchNormAct2d(nn.BatchNorm2d):
    """BatchNorm with its activation inside the norm module (timm's ``BatchNormAct2d``: no extra key level)."""

    def __init__(self, num_features: int, act: str = ""):
        super().__init__(num_features, eps=C.BN_EPS, momentum=C.BN_MOMENTUM)
        self.act = _act(act)

    def forward(self, x):
        return self.act(super().forward(x))


class ConvNormAct(nn.Module):
    """Conv (no bias, symmetric padding ((stride - 1) + (k - 1)) // 2) -> BatchNorm -> activation."""

    def __init__(self, in_chs: int, out_chs: int, kernel_size: int = 1, stride: int = 1, act: str = ""):
        super().__init__()
        self.conv = nn.Conv2d(in_chs, out_chs, kernel_size, stride, ((stride - 1) + (kernel_size - 1)) // 2, bias=False)
        self.bn = _BatchNormAct2d(out_chs, act)

    def forward(self, x):
        return self.bn(self.conv(x))


class SEModule(nn.Module):
    """Squeeze-excitation: mean -> 1x1 conv (bias) -> ReLU -> 1x1 conv (bias) -> sigmoid gate."""

    def __init__(self, channels: int):
        super().__init__()
        rd = make_divisible(channels * C.SE_RD_RATIO, C.SE_RD_DIVISOR, round_limit=0.0)
        self.fc1 = nn.Conv2d(channels, rd, 1)
        self.act = nn.ReLU(inplace=True)
        self.fc2 = nn.Conv2d(rd, channels, 1)

    def forward(self, x):
        s = self.fc2(self.act(self.fc1(x.mean((2, 3), keepdim=True))))
        return x * torch.sigmoid(s)


# --- attention ----------------------------------------------------------------------------------

def rel_logits_1d(q: torch.Tensor, rel: torch.Tensor) -> torch.Tensor:
    """Relative logits along one axis: q (..., L, d), rel (2n - 1, d) -> (..., L, n) with
    ``out[..., i, j] = q[..., i, :] . rel[j - i + n - 1]`` (query i, key j; i < L <= n)."""
    n = (rel.shape[0] + 1) // 2
    length = q.shape[-2]
    logits = q @ rel.transpose(0, 1)  # (..., L, 2n - 1)
    idx = (torch.arange(n, device=q.device)[None, :] - torch.arange(length, device=q.device)[:, None]) + n - 1
    return logits.gather(-1, idx.expand(*logits.shape[:-2], length, n))


class PosEmbedRel(nn.Module):
    """Relative position logits between a qh x qw query grid and a kh x kw key grid.

    ``rel[(qy, qx), (ky, kx)] = q . height_rel[ky - qy + kh - 1] + q . width_rel[kx - qx + kw - 1]`` (timm's
    relative-to-absolute trick, written as a gather). Halo attention: query block vs key window;
    bottleneck attention: the whole map against itself.
    """

    def __init__(self, q_size, k_size, dim_head: int):
        super().__init__()
        self.q_size, self.k_size = tuple(q_size), tuple(k_size)
        self.height_rel = nn.Parameter(torch.zeros(2 * self.k_size[0] - 1, dim_head))
        self.width_rel = nn.Parameter(torch.zeros(2 * self.k_size[1] - 1, dim_head))

    def forward(self, q):
        (qh, qw), (kh, kw) = self.q_size, self.k_size
        lead = q.shape[:-2]
        q = q.reshape(-1, qh, qw, q.shape[-1])
        rel_w = rel_logits_1d(q, self.width_rel)  # (N, qy, qx, kx)
        rel_h = rel_logits_1d(q.transpose(1, 2), self.height_rel).transpose(1, 2)  # (N, qy, qx, ky)
        rel = rel_h.unsqueeze(-1) + rel_w.unsqueeze(-2)  # (N, qy, qx, ky, kx)
        return rel.reshape(*lead, qh * qw, kh * kw)


class HaloAttn(nn.Module):
    """Halo attention (timm ``HaloAttn``, qkv_bias False, dim_head from the width, qk_ratio 1).

    Queries: 1x1 conv (stride ``stride``), cut into (block_size / stride)^2 blocks. Keys and values:
    1x1 conv with per-head interleaved channels ([k_h | v_h] for each head h), zero-padded by
    ``halo_size`` AFTER the projection, then windows of block_size + 2 halo_size with stride
    block_size. Padded keys are not masked. ``attn = q.k * scale + rel(q)``, softmax, ``@ v``.

    ``window_order='mindcv'`` reads the windows as mindcv's ``halonet_50t`` does: its ``nn.Unfold``
    (``ExtractImagePatches``, TensorFlow order: window position major, channel fastest) reshaped as
    if channel-major, which mixes positions and channels (see docs/halonet.md).
    """

    def __init__(self, dim: int, stride: int = 1, num_heads: int = 8, block_size: int = 8, halo_size: int = 3,
                 window_order: str = "timm"):
        super().__init__()
        d = C.halo_dims(dim, stride, num_heads, block_size, halo_size, window_order)
        self.num_heads, self.dim_head_qk, self.dim_head_v, self.scale = num_heads, d.dim_head_qk, d.dim_head_v, d.scale
        self.block_size, self.halo_size, self.win_size = block_size, halo_size, d.win_size
        self.block_stride, self.block_size_ds = d.block_stride, d.block_size_ds
        self.window_order = window_order
        self.q = nn.Conv2d(dim, num_heads * self.dim_head_qk, 1, stride=self.block_stride, bias=False)
        self.kv = nn.Conv2d(dim, num_heads * (self.dim_head_qk + self.dim_head_v), 1, bias=False)
        self.pos_embed = PosEmbedRel((self.block_size_ds,) * 2, (self.win_size,) * 2, self.dim_head_qk)
        self.pool = nn.AvgPool2d(2, 2) if d.pool else None

    def reset_parameters(self):
        std = self.q.weight.shape[1] ** -0.5  # fan-in
        nn.init.trunc_normal_(self.q.weight, std=std)
        nn.init.trunc_normal_(self.kv.weight, std=std)
        nn.init.trunc_normal_(self.pos_embed.height_rel, std=self.scale)
        nn.init.trunc_normal_(self.pos_embed.width_rel, std=self.scale)

    def forward(self, x):
        B, _, H, W = x.shape
        nh, dqk, dv = self.num_heads, self.dim_head_qk, self.dim_head_v
        bs, bsd, win = self.block_size, self.block_size_ds, self.win_size
        nhb, nwb = H // bs, W // bs
        nb = nhb * nwb
        q = self.q(x).reshape(B * nh, dqk, nhb, bsd, nwb, bsd)
        q = q.permute(0, 2, 4, 3, 5, 1).reshape(B * nh, nb, bsd * bsd, dqk)  # (.., block, in-block pos, d)
        kv = F.pad(self.kv(x), [self.halo_size] * 4)
        kv = kv.unfold(2, win, bs).unfold(3, win, bs)  # (B, C, nhb, nwb, win, win)
        if self.window_order == "timm":
            kv = kv.reshape(B * nh, dqk + dv, nb, win * win).permute(0, 2, 3, 1)
        else:  # the (window position, channel) order of ExtractImagePatches, read as (channel, position)
            kv = kv.permute(0, 2, 3, 4, 5, 1).reshape(B, nb, nh, dqk + dv, win * win)
            kv = kv.permute(0, 2, 1, 4, 3).reshape(B * nh, nb, win * win, dqk + dv)
        k, v = torch.split(kv, [dqk, dv], dim=-1)
        attn = (q @ k.transpose(-1, -2)) * self.scale + self.pos_embed(q)
        out = attn.softmax(dim=-1) @ v  # (B * nh, nb, bsd^2, dv)
        out = out.reshape(B, nh, nhb, nwb, bsd, bsd, dv).permute(0, 1, 6, 2, 4, 3, 5)
        out = out.reshape(B, nh * dv, nhb * bsd, nwb * bsd)
        return out if self.pool is None else self.pool(out)


class BottleneckAttn(nn.Module):
    """Bottleneck (global) attention (timm ``BottleneckAttn``): one 1x1 conv to [all q | all k | all v],
    attention over the whole ``feat_size`` map with relative logits, 2x2 average pool if stride 2."""

    def __init__(self, dim: int, feat_size, stride: int = 1, num_heads: int = 4):
        super().__init__()
        self.num_heads = num_heads
        self.dim_head_qk, self.dim_head_v = C.attn_dims(dim, num_heads)
        self.scale = self.dim_head_qk ** -0.5
        self.feat_size = tuple(feat_size)
        self.qkv = nn.Conv2d(dim, num_heads * (2 * self.dim_head_qk + self.dim_head_v), 1, bias=False)
        self.pos_embed = PosEmbedRel(self.feat_size, self.feat_size, self.dim_head_qk)
        self.pool = nn.AvgPool2d(2, 2) if stride == 2 else None

    def reset_parameters(self):
        nn.init.trunc_normal_(self.qkv.weight, std=self.qkv.weight.shape[1] ** -0.5)
        nn.init.trunc_normal_(self.pos_embed.height_rel, std=self.scale)
        nn.init.trunc_normal_(self.pos_embed.width_rel, std=self.scale)

    def forward(self, x):
        B, _, H, W = x.shape
        nh, dqk, dv = self.num_heads, self.dim_head_qk, self.dim_head_v
        q, k, v = torch.split(self.qkv(x), [nh * dqk, nh * dqk, nh * dv], dim=1)
        q = q.reshape(B * nh, dqk, H * W).transpose(1, 2)
        k = k.reshape(B * nh, dqk, H * W)
        v = v.reshape(B * nh, dv, H * W).transpose(1, 2)
        attn = (q @ k) * self.scale + self.pos_embed(q)
        out = (attn.softmax(dim=-1) @ v).transpose(1, 2).reshape(B, nh * dv, H, W)
        return out if self.pool is None else self.pool(out)


# --- blocks ---------------------------------------------------------------------------------------

def _shortcut(in_chs, out_chs, stride):
    """timm ``downsample='conv1x1'``: a 1x1 ConvNorm (no activation) when the shape changes, else identity."""
    return ConvNormAct(in_chs, out_chs, 1, stride) if in_chs != out_chs or stride != 1 else None


class BottleneckBlock(nn.Module):
    """1x1 -> 3x3 (stride) -> [SE] -> 1x1 (no act) -> drop path -> + shortcut -> act."""

    def __init__(self, in_chs, out_chs, stride=1, bottle_ratio=0.25, se=False, act="relu", drop_path=0.0):
        super().__init__()
        mid = C.mid_chs(out_chs, bottle_ratio)
        self.shortcut = _shortcut(in_chs, out_chs, stride)
        self.conv1_1x1 = ConvNormAct(in_chs, mid, 1, act=act)
        self.conv2_kxk = ConvNormAct(mid, mid, 3, stride, act=act)
        self.attn = SEModule(mid) if se else None
        self.conv3_1x1 = ConvNormAct(mid, out_chs, 1)
        self.drop_path = DropPath(drop_path)
        self.act = _act(act)

    def forward(self, x):
        y = self.conv2_kxk(self.conv1_1x1(x))
        if self.attn is not None:
            y = self.attn(y)
        y = self.drop_path(self.conv3_1x1(y))
        return self.act(y + (x if self.shortcut is None else self.shortcut(x)))


class SelfAttnBlock(nn.Module):
    """1x1 -> self-attention (stride) -> BN + act -> 1x1 (no act) -> drop path -> + shortcut -> act."""

    def __init__(self, in_chs, out_chs, attn: C.AttnCfg, stride=1, bottle_ratio=0.25, act="relu", drop_path=0.0,
                 feat_size=None, window_order="timm"):
        super().__init__()
        mid = C.mid_chs(out_chs, bottle_ratio)
        self.shortcut = _shortcut(in_chs, out_chs, stride)
        self.conv1_1x1 = ConvNormAct(in_chs, mid, 1, act=act)
        attn = C.attn_cfg(attn)
        if attn.kind == "halo":
            self.self_attn = HaloAttn(mid, stride, attn.num_heads, attn.block_size, attn.halo_size, window_order)
        else:
            self.self_attn = BottleneckAttn(mid, feat_size, stride, attn.num_heads)
        self.post_attn = _BatchNormAct2d(mid, act)
        self.conv3_1x1 = ConvNormAct(mid, out_chs, 1)
        self.drop_path = DropPath(drop_path)
        self.act = _act(act)

    def forward(self, x):
        y = self.post_attn(self.self_attn(self.conv1_1x1(x)))
        y = self.drop_path(self.conv3_1x1(y))
        return self.act(y + (x if self.shortcut is None else self.shortcut(x)))


class Stem(nn.Module):
    """'tiered': 3x3 convs to 24, 32, 64 (strides 2, 1, 1 + 3x3/2 max-pool, or 2, 1, 2 without pool);
    '7x7': one 7x7/2 conv to 64 + max-pool. ``pool_pad='zero'`` pads the max-pool with zeros
    (mindcv's ``ops.Pad`` + valid pool) instead of -inf."""

    def __init__(self, in_chans, kind, pool, act, pool_pad="neg_inf"):
        super().__init__()
        convs = [ConvNormAct(cin, cout, k, s, act) for cin, cout, k, s in C.stem_convs(in_chans, kind, pool, pool_pad)]
        self.conv1, self.conv2, self.conv3 = convs + [None] * (3 - len(convs))  # the 7x7 stem: conv1 only
        self.pool_pad = pool_pad
        self.pool = (nn.MaxPool2d(3, 2, 1) if pool_pad == "neg_inf" else nn.MaxPool2d(3, 2)) if pool else None

    def forward(self, x):
        x = self.conv1(x)
        if self.conv2 is not None:
            x = self.conv3(self.conv2(x))
        if self.pool is not None:
            x = self.pool(x if self.pool_pad == "neg_inf" else F.pad(x, [1, 1, 1, 1]))
        return x

    def forward_intermediates(self, x):
        """(``forward(x)``, the feature point: the last output before the final stride 2; config.feature_info)."""
        x = feat = self.conv1(x)
        if self.conv2 is not None:
            x = feat = self.conv2(x)
            x = self.conv3(x)
            if self.pool is not None:
                feat = x
        if self.pool is not None:
            x = self.pool(x if self.pool_pad == "neg_inf" else F.pad(x, [1, 1, 1, 1]))
        return x, feat


class ClassifierHead(nn.Module):
    """Global average pool -> dropout -> Linear (timm ``ClassifierHead``, key ``head.fc``)."""

    def __init__(self, in_features, num_classes, drop_rate=0.0):
        super().__init__()
        self.drop = nn.Dropout(drop_rate)
        self.fc = nn.Linear(in_features, num_classes) if num_classes > 0 else nn.Identity()

    def forward(self, x, pre_logits: bool = False):
        x = self.drop(x.mean((2, 3)))
        return x if pre_logits else self.fc(x)


# --- the model --------------------------------------------------------------------------------------

class HaloNet(nn.Module):
    """timm's ByobNet for the HaloNet variants (``cfg``: a name in ``config.CFGS``).

    ``img_size`` is needed (and fixes the input size) only for bottleneck attention.
    ``window_order`` and ``stem_pool_pad`` select mindcv's function ('mindcv', 'zero') instead of
    timm's ('timm', 'neg_inf'); the parameters are the same. ``drop_path_rate`` rises linearly over
    the blocks, ``drop_rate`` is dropout before the classifier.
    """

    def __init__(self, cfg="halonet50ts", num_classes=1000, in_chans=3, drop_rate=0.0, drop_path_rate=0.0,
                 img_size=None, window_order="timm", stem_pool_pad="neg_inf", zero_init_last=True):
        super().__init__()
        self.arch = cfg if isinstance(cfg, str) else "HaloNet"
        cfg = C.get_cfg(cfg)
        self.num_classes = num_classes
        self.constraint = C.input_constraint(cfg, img_size)
        act = cfg["act"]
        self.stem = Stem(in_chans, cfg["stem"], cfg["stem_pool"], act, stem_pool_pad)
        plan = C.block_plan(cfg, img_size, drop_path_rate)
        stages = [[] for _ in cfg["stages"]]
        for b in plan:
            if b.kind == "B":
                block = BottleneckBlock(b.in_chs, b.out_chs, b.stride, b.bottle_ratio, cfg["se"], act, b.drop_path)
            else:
                block = SelfAttnBlock(b.in_chs, b.out_chs, b.attn, b.stride, b.bottle_ratio, act, b.drop_path,
                                      b.feat_size, window_order)
            stages[b.stage].append(block)
        self.stages = nn.Sequential(*[nn.Sequential(*blocks) for blocks in stages])
        chs = plan[-1].out_chs
        if cfg["num_features"]:
            self.final_conv = ConvNormAct(chs, cfg["num_features"], 1, act=act)
            chs = cfg["num_features"]
        else:
            self.final_conv = None
        self.num_features = chs
        self.drop_rate = drop_rate
        self.head = ClassifierHead(chs, num_classes, drop_rate)
        self.feature_info = C.feature_info(cfg)
        self._init_weights(zero_init_last)

    def reset_classifier(self, num_classes: int) -> None:
        """A new head for ``num_classes`` (0: none, the pooled features), its Linear initialised as timm's."""
        self.num_classes = num_classes
        self.head = ClassifierHead(self.num_features, num_classes, self.drop_rate)
        if num_classes > 0:
            nn.init.normal_(self.head.fc.weight, 0.0, 0.01)
            nn.init.zeros_(self.head.fc.bias)

    def _init_weights(self, zero_init_last):
        """timm's: convs normal(0, sqrt(2 / fan_out)), Linear normal(0, 0.01), BN 1/0; then each block
        zeroes its last BN's weight and re-initialises its attention (trunc-normal, fan-in)."""
        init_fan_out_(self, linear_std=0.01)
        for m in self.modules():
            if isinstance(m, (BottleneckBlock, SelfAttnBlock)) and zero_init_last:
                nn.init.zeros_(m.conv3_1x1.bn.weight)
            if isinstance(m, (HaloAttn, BottleneckAttn)):
                m.reset_parameters()

    def forward_features(self, x):
        C.check_input(x.shape[-2], x.shape[-1], self.arch, self.constraint)
        x = self.stages(self.stem(x))
        return x if self.final_conv is None else self.final_conv(x)

    def forward_head(self, x, pre_logits: bool = False):
        return self.head(x, pre_logits)

    def forward(self, x):
        return self.forward_head(self.forward_features(x))

    def forward_intermediates(self, x):
        """(``forward_features(x)``, [the stem's feature point, every stage's output, the last after
        ``final_conv``]: timm's ByobNet feature points, described by ``feature_info``)."""
        C.check_input(x.shape[-2], x.shape[-1], self.arch, self.constraint)
        x, feat = self.stem.forward_intermediates(x)
        feats = [feat]
        for stage in self.stages:
            x = stage(x)
            feats.append(x)
        if self.final_conv is not None:
            feats[-1] = x = self.final_conv(x)
        return x, feats
