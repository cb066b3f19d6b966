"""HaloNet family, MindSpore twin.

Same attribute names, operations and order as ``pt.py``; layers come from ``zoo.nn.ms`` (PyTorch's
defaults). The halo attention gathers the key/value windows of all blocks with one static index (no
``nn.Unfold``/``ExtractImagePatches``, which have no CPU kernel, and no loop over blocks), so it
compiles in GRAPH mode and runs on CPU, GPU and Ascend.
"""
from __future__ import annotations

import mindspore as ms
from mindspore import nn, ops

from zoo.models.halonet import config as C
from zoo.nn import make_divisible
from zoo.nn import ms as L

_ACTS = {"relu": L.ReLU, "silu": L.SiLU}


def _act(name):
    return _ACTS[name]() if name else L.Identity()


# --- conv / norm blocks -------------------------------------------------------------------------

def _bn(num_features: int):
    return L.BatchNorm2d(num_features, eps=C.BN_EPS, momentum=C.BN_MOMENTUM)


class ConvNormAct(nn.Cell):
    """Conv -> BatchNorm -> activation. PyTorch's ``_BatchNormAct2d`` applies the activation inside the
    norm module; here it is the cell's own ``act``, so the BatchNorm is a plain cell with the same name."""

    def __init__(self, in_chs: int, out_chs: int, kernel_size: int = 1, stride: int = 1, act: str = ""):
        super().__init__()
        self.conv = L.Conv2d(in_chs, out_chs, kernel_size, stride, ((stride - 1) + (kernel_size - 1)) // 2, bias=False)
        self.bn = _bn(out_chs)
        self.act = _act(act)

    def construct(self, x):
        return self.act(self.bn(self.conv(x)))


class SEModule(nn.Cell):
    def __init__(self, channels: int):
        super().__init__()
        rd = make_divisible(channels * C.SE_RD_RATIO, C.SE_RD_DIVISOR, round_limit=0.0)
        self.fc1 = L.Conv2d(channels, rd, 1)
        self.act = L.ReLU()
        self.fc2 = L.Conv2d(rd, channels, 1)

    def construct(self, x):
        s = self.fc2(self.act(self.fc1(x.mean((2, 3), keep_dims=True))))
        return x * ops.sigmoid(s)


# --- attention ----------------------------------------------------------------------------------

def rel_to_abs(x, n: int):
    """(M, L, 2n - 1) logits against relative offsets -> (M, L, n) against absolute key positions:
    ``out[m, i, j] = x[m, i, j - i + n - 1]``.

    In the flattened row, that element sits at ``n - 1 + i * (2n - 2) + j``: pad the flat rows with
    zeros to cover the last window, read L rows of 2n - 2 starting at n - 1, keep the first n columns.
    """
    m, length, r = x.shape
    flat = x.reshape(m, length * r)
    pad = n - 1 - length
    if pad > 0:
        flat = ops.concat((flat, ops.zeros((m, pad), x.dtype)), 1)
    return flat[:, n - 1:n - 1 + length * (r - 1)].reshape(m, length, r - 1)[:, :, :n]


class PosEmbedRel(nn.Cell):
    """See ``pt.PosEmbedRel``: relative logits between a qh x qw query grid and a kh x kw key grid."""

    def __init__(self, q_size, k_size, dim_head: int):
        super().__init__()
        self.q_size, self.k_size = tuple(q_size), tuple(k_size)
        self.dim_head = dim_head
        self.height_rel = ms.Parameter(ops.zeros((2 * self.k_size[0] - 1, dim_head), ms.float32), name="height_rel")
        self.width_rel = ms.Parameter(ops.zeros((2 * self.k_size[1] - 1, dim_head), ms.float32), name="width_rel")
        self.matmul_t = ops.MatMul(transpose_b=True)

    def _rel_1d(self, q, rel, n):  # q (M, L, d) -> (M, L, n)
        m, length, d = q.shape
        logits = self.matmul_t(q.reshape(m * length, d), rel).reshape(m, length, 2 * n - 1)
        return rel_to_abs(logits, n)

    def construct(self, q):
        (qh, qw), (kh, kw) = self.q_size, self.k_size
        lead = q.shape[:-2]
        d = self.dim_head
        q = q.reshape(-1, qh, qw, d)
        nq = q.shape[0]
        rel_w = self._rel_1d(q.reshape(nq * qh, qw, d), self.width_rel, kw).reshape(nq, qh, qw, 1, kw)
        q_t = ops.transpose(q, (0, 2, 1, 3)).reshape(nq * qw, qh, d)
        rel_h = self._rel_1d(q_t, self.height_rel, kh).reshape(nq, qw, qh, kh)
        rel_h = ops.transpose(rel_h, (0, 2, 1, 3)).reshape(nq, qh, qw, kh, 1)
        return (rel_h + rel_w).reshape(lead + (qh * qw, kh * kw))


class HaloAttn(nn.Cell):
    """See ``pt.HaloAttn``; the same function, computed without unfold.

    Windows: the zero-padded key/value map is laid out as (position, channel) rows, and the rows of
    every window of every block are gathered at once with a static index (block (by, bx), window
    position (ky, kx) -> padded position (by * block + ky, bx * block + kx)). No loop over blocks, no
    op without a CPU kernel, every shape static; the gather's gradient is a scatter-add.
    """

    def __init__(self, dim: int, stride: int = 1, num_heads: int = 8, block_size: int = 8, halo_size: int = 3,
                 window_order: str = "timm"):
        super().__init__()
        d = C.halo_dims(dim, stride, num_heads, block_size, halo_size, window_order)
        self.num_heads, self.dim_head_qk, self.dim_head_v, self.scale = num_heads, d.dim_head_qk, d.dim_head_v, d.scale
        self.block_size, self.halo_size, self.win_size = block_size, halo_size, d.win_size
        self.block_stride, self.block_size_ds = d.block_stride, d.block_size_ds
        self.window_order = window_order
        self.q = L.Conv2d(dim, num_heads * self.dim_head_qk, 1, stride=self.block_stride, bias=False)
        self.kv = L.Conv2d(dim, num_heads * (self.dim_head_qk + self.dim_head_v), 1, bias=False)
        self.pos_embed = PosEmbedRel((self.block_size_ds,) * 2, (self.win_size,) * 2, self.dim_head_qk)
        self.pool = L.AvgPool2d(2, 2) if d.pool else None
        # zero padding, after the projection
        self.pad = ops.Pad(((0, 0), (0, 0), (halo_size, halo_size), (halo_size, halo_size)))
        self.bmm_qk = ops.BatchMatMul(transpose_b=True)
        self.bmm_av = ops.BatchMatMul()
        self.softmax = ops.Softmax(-1)

    def reset_parameters(self):
        std = self.q.weight.shape[1] ** -0.5  # fan-in
        L.trunc_normal_(self.q.weight, std=std)
        L.trunc_normal_(self.kv.weight, std=std)
        L.trunc_normal_(self.pos_embed.height_rel, std=self.scale)
        L.trunc_normal_(self.pos_embed.width_rel, std=self.scale)

    def _windows(self, x, n, nhb, nwb):
        """x (n, d, H, W) -> (n, nb, win * win, d): each block's window, positions row-major, channels last."""
        bs, win, halo = self.block_size, self.win_size, self.halo_size
        d, h, w = x.shape[1], x.shape[2], x.shape[3]
        wp = w + 2 * halo
        rows = ops.transpose(self.pad(x), (0, 2, 3, 1)).reshape(n, (h + 2 * halo) * wp, d)
        k = ops.arange(win, dtype=ms.int32)
        ys = (ops.arange(nhb, dtype=ms.int32) * bs).reshape(nhb, 1, 1, 1) + k.reshape(1, 1, win, 1)
        xs = (ops.arange(nwb, dtype=ms.int32) * bs).reshape(1, nwb, 1, 1) + k.reshape(1, 1, 1, win)
        return ops.gather(rows, (ys * wp + xs).reshape(-1), 1).reshape(n, nhb * nwb, win * win, d)

    def construct(self, x):
        b, _, h, w = x.shape
        nh, dqk, dv = self.num_heads, self.dim_head_qk, self.dim_head_v
        bs, bsd, win = self.block_size, self.block_size_ds, self.win_size
        nhb, nwb = h // bs, w // bs
        nb = nhb * nwb
        q = self.q(x).reshape(b * nh, dqk, nhb, bsd, nwb, bsd)
        q = ops.transpose(q, (0, 2, 4, 3, 5, 1)).reshape(b * nh, nb, bsd * bsd, dqk)
        kv = self.kv(x)
        if self.window_order == "timm":  # per-head interleaved channels [k_h | v_h]: split, then windows
            kv = kv.reshape(b * nh, dqk + dv, h, w)
            k = self._windows(kv[:, :dqk], b * nh, nhb, nwb)
            v = self._windows(kv[:, dqk:], b * nh, nhb, nwb)
        else:  # mindcv: (window position, channel) flattened, then read as (head, channel, position)
            kv = self._windows(kv, b, nhb, nwb).reshape(b, nb, nh, dqk + dv, win * win)
            kv = ops.transpose(kv, (0, 2, 1, 4, 3)).reshape(b * nh, nb, win * win, dqk + dv)
            k, v = kv[..., :dqk], kv[..., dqk:]
        attn = self.bmm_qk(q, k) * self.scale + self.pos_embed(q)
        out = self.bmm_av(self.softmax(attn), v)  # (b * nh, nb, bsd^2, dv)
        out = ops.transpose(out.reshape(b, nh, nhb, nwb, bsd, bsd, dv), (0, 1, 6, 2, 4, 3, 5))
        out = out.reshape(b, nh * dv, nhb * bsd, nwb * bsd)
        return out if self.pool is None else self.pool(out)


class BottleneckAttn(nn.Cell):
    """See ``pt.BottleneckAttn``."""

    def __init__(self, dim: int, feat_size, stride: int = 1, num_heads: int = 4):
        super().__init__()
        self.num_heads = num_heads
        self.dim_head_qk, self.dim_head_v = C.attn_dims(dim, num_heads)
        self.scale = self.dim_head_qk ** -0.5
        self.feat_size = tuple(feat_size)
        self.qkv = L.Conv2d(dim, num_heads * (2 * self.dim_head_qk + self.dim_head_v), 1, bias=False)
        self.pos_embed = PosEmbedRel(self.feat_size, self.feat_size, self.dim_head_qk)
        self.pool = L.AvgPool2d(2, 2) if stride == 2 else None
        self.bmm = ops.BatchMatMul()

    def reset_parameters(self):
        L.trunc_normal_(self.qkv.weight, std=self.qkv.weight.shape[1] ** -0.5)
        L.trunc_normal_(self.pos_embed.height_rel, std=self.scale)
        L.trunc_normal_(self.pos_embed.width_rel, std=self.scale)

    def construct(self, x):
        b, _, h, w = x.shape
        nh, dqk, dv = self.num_heads, self.dim_head_qk, self.dim_head_v
        qkv = self.qkv(x)
        q = ops.transpose(qkv[:, :nh * dqk].reshape(b * nh, dqk, h * w), (0, 2, 1))
        k = qkv[:, nh * dqk:2 * nh * dqk].reshape(b * nh, dqk, h * w)
        v = ops.transpose(qkv[:, 2 * nh * dqk:].reshape(b * nh, dv, h * w), (0, 2, 1))
        attn = self.bmm(q, k) * self.scale + self.pos_embed(q)
        out = ops.transpose(self.bmm(ops.softmax(attn, -1), v), (0, 2, 1)).reshape(b, nh * dv, h, w)
        return out if self.pool is None else self.pool(out)


# --- blocks ---------------------------------------------------------------------------------------

def _shortcut(in_chs, out_chs, stride):
    return ConvNormAct(in_chs, out_chs, 1, stride) if in_chs != out_chs or stride != 1 else None


class BottleneckBlock(nn.Cell):
    def __init__(self, in_chs, out_chs, stride=1, bottle_ratio=0.25, se=False, act="relu", drop_path=0.0):
        super().__init__()
        mid = C.mid_chs(out_chs, bottle_ratio)
        self.shortcut = _shortcut(in_chs, out_chs, stride)
        self.conv1_1x1 = ConvNormAct(in_chs, mid, 1, act=act)
        self.conv2_kxk = ConvNormAct(mid, mid, 3, stride, act=act)
        self.attn = SEModule(mid) if se else None
        self.conv3_1x1 = ConvNormAct(mid, out_chs, 1)
        self.drop_path = L.DropPath(drop_path)
        self.act = _act(act)

    def construct(self, x):
        y = self.conv2_kxk(self.conv1_1x1(x))
        if self.attn is not None:
            y = self.attn(y)
        y = self.drop_path(self.conv3_1x1(y))
        return self.act(y + (x if self.shortcut is None else self.shortcut(x)))


class SelfAttnBlock(nn.Cell):
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
        self.post_attn = _bn(mid)  # PyTorch: _BatchNormAct2d (BN + act in one module)
        self.post_act = _act(act)
        self.conv3_1x1 = ConvNormAct(mid, out_chs, 1)
        self.drop_path = L.DropPath(drop_path)
        self.act = _act(act)

    def construct(self, x):
        y = self.post_act(self.post_attn(self.self_attn(self.conv1_1x1(x))))
        y = self.drop_path(self.conv3_1x1(y))
        return self.act(y + (x if self.shortcut is None else self.shortcut(x)))


class Stem(nn.Cell):
    """See ``pt.Stem``."""

    def __init__(self, in_chans, kind, pool, act, pool_pad="neg_inf"):
        super().__init__()
        convs = [ConvNormAct(cin, cout, k, s, act) for cin, cout, k, s in C.stem_convs(in_chans, kind, pool, pool_pad)]
        self.conv1, self.conv2, self.conv3 = convs + [None] * (3 - len(convs))  # the 7x7 stem: conv1 only
        self.zero_pad = ops.Pad(((0, 0), (0, 0), (1, 1), (1, 1))) if pool_pad == "zero" else None
        self.pool = (L.MaxPool2d(3, 2, 1) if pool_pad == "neg_inf" else L.MaxPool2d(3, 2)) if pool else None

    def construct(self, x):
        x = self.conv1(x)
        if self.conv2 is not None:
            x = self.conv3(self.conv2(x))
        if self.pool is not None:
            x = self.pool(x if self.zero_pad is None else self.zero_pad(x))
        return x

    def forward_intermediates(self, x):
        """See ``pt.Stem.forward_intermediates``."""
        x = self.conv1(x)
        feat = x
        if self.conv2 is not None:
            x = self.conv2(x)
            feat = x
            x = self.conv3(x)
            if self.pool is not None:
                feat = x
        if self.pool is not None:
            x = self.pool(x if self.zero_pad is None else self.zero_pad(x))
        return x, feat


class ClassifierHead(nn.Cell):
    def __init__(self, in_features, num_classes, drop_rate=0.0):
        super().__init__()
        self.drop = L.Dropout(drop_rate)
        self.fc = L.Linear(in_features, num_classes) if num_classes > 0 else L.Identity()

    def construct(self, x, pre_logits: bool = False):
        x = self.drop(x.mean((2, 3)))
        return x if pre_logits else self.fc(x)


# --- the model --------------------------------------------------------------------------------------

class HaloNet(nn.Cell):
    """See ``pt.HaloNet``: the same arguments and the same function."""

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
        self.stages = L.SequentialCell([L.SequentialCell(blocks) for blocks in stages])
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
        """See ``pt.HaloNet.reset_classifier``."""
        self.num_classes = num_classes
        self.head = ClassifierHead(self.num_features, num_classes, self.drop_rate)
        if num_classes > 0:
            L.normal_(self.head.fc.weight, 0.0, 0.01)
            L.zeros_(self.head.fc.bias)

    def _init_weights(self, zero_init_last):
        """See ``pt.HaloNet._init_weights``."""
        L.init_fan_out_(self, linear_std=0.01)
        for _, cell in self.cells_and_names():
            if isinstance(cell, (BottleneckBlock, SelfAttnBlock)) and zero_init_last:
                L.zeros_(cell.conv3_1x1.bn.gamma)
            if isinstance(cell, (HaloAttn, BottleneckAttn)):
                cell.reset_parameters()

    def forward_features(self, x):
        C.check_input(x.shape[-2], x.shape[-1], self.arch, self.constraint)
        x = self.stages(self.stem(x))
        return x if self.final_conv is None else self.final_conv(x)

    def forward_head(self, x, pre_logits: bool = False):
        return self.head(x, pre_logits)

    def construct(self, x):
        return self.forward_head(self.forward_features(x))

    def forward_intermediates(self, x):
        """See ``pt.HaloNet.forward_intermediates``."""
        C.check_input(x.shape[-2], x.shape[-1], self.arch, self.constraint)
        x, feat = self.stem.forward_intermediates(x)
        feats = [feat]
        n = len(self.stages)
        for i, stage in enumerate(self.stages):
            x = stage(x)
            if i == n - 1 and self.final_conv is not None:
                x = self.final_conv(x)
            feats.append(x)
        return x, feats
