"""Swin for small images, MindSpore twin of ``zoo.models.gmm.pt.swin`` (the same names, the same function).

Computed without ``ops.roll``: the cyclic shift is two slices and a concatenation per axis. Window
partition, reverse and patch merging are reshapes and transposes; attention is batched matmuls on
(windows, heads, 16, 16). What does not depend on the weights is fixed at construction: the relative
position index and the shift masks are frozen Parameters (named as the PyTorch twin's buffers, so the
checkpoint round trip is exact). The base mask is the model's one frozen ``mask``, passed down to every
block (PyTorch's state dict repeats it per block). The relative-position bias is gathered from its table
once per forward, for all windows.
"""
from __future__ import annotations

import mindspore as ms
import numpy as np
from mindspore import nn, ops

from zoo.models.gmm import config as C
from zoo.models.gmm.tables import relative_position_index, shift_attn_mask
from zoo.models.gmm.ms.common import GaussianMixtureMask, base_mask_parameter, tokens_to_map
from zoo.nn import ms as L


def _frozen(value: np.ndarray, name: str) -> ms.Parameter:
    return ms.Parameter(ms.Tensor(value), name=name, requires_grad=False)


class Mlp(nn.Cell):
    def __init__(self, in_features, hidden_features, drop=0.0):
        super().__init__()
        self.fc1 = L.Linear(in_features, hidden_features)
        self.act = L.GELU()
        self.fc2 = L.Linear(hidden_features, in_features)
        self.drop = L.Dropout(drop)

    def construct(self, x):
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


class WindowAttention(nn.Cell):
    """See ``pt.swin.WindowAttention``: [GMM] multiplies the logits before the bias and the shift mask."""

    def __init__(self, dim, window_size, num_heads, qkv_bias=True, drop=0.0, gmm=False, num_kernels=C.NUM_KERNELS):
        super().__init__()
        self.dim, self.window_size, self.num_heads = dim, window_size, num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim ** -0.5
        self.n = window_size * window_size
        self.mask = GaussianMixtureMask(num_heads, num_kernels) if gmm else None
        table = np.zeros(((2 * window_size - 1) ** 2, num_heads), np.float32)
        self.relative_position_bias_table = ms.Parameter(ms.Tensor(table), name="relative_position_bias_table")
        self.relative_position_index = _frozen(relative_position_index(window_size), "relative_position_index")
        self.qkv = L.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = L.Linear(dim, dim)
        self.proj_drop = L.Dropout(drop)
        L.trunc_normal_(self.relative_position_bias_table, std=0.02)
        self.bmm_qk = ops.BatchMatMul(transpose_b=True)
        self.bmm_av = ops.BatchMatMul()
        self.softmax = ops.Softmax(-1)

    def construct(self, x, base, attn_mask=None):
        b_, n, c = x.shape
        nh, hd = self.num_heads, self.head_dim
        qkv = ops.transpose(self.qkv(x).reshape(b_, n, 3, nh, hd), (2, 0, 3, 1, 4))
        q, k, v = qkv[0], qkv[1], qkv[2]
        attn = self.bmm_qk(q * self.scale, k)  # (b_, nh, n, n)
        if self.mask is not None:
            attn = self.mask(attn, base)
        bias = ops.gather(self.relative_position_bias_table, self.relative_position_index.reshape(-1), 0)
        attn = attn + ops.transpose(bias.reshape(n, n, nh), (2, 0, 1)).reshape(1, nh, n, n)
        if attn_mask is not None:
            nw = attn_mask.shape[0]
            attn = attn.reshape(b_ // nw, nw, nh, n, n) + attn_mask.reshape(1, nw, 1, n, n)
            attn = attn.reshape(b_, nh, n, n)
        out = ops.transpose(self.bmm_av(self.softmax(attn), v), (0, 2, 1, 3)).reshape(b_, n, c)
        return self.proj_drop(self.proj(out))


class SwinTransformerBlock(nn.Cell):
    def __init__(self, dim, input_resolution, num_heads, window_size=4, shift_size=0, mlp_ratio=2.0, qkv_bias=True,
                 drop=0.0, drop_path=0.0, gmm=False, num_kernels=C.NUM_KERNELS):
        super().__init__()
        self.dim, self.input_resolution, self.num_heads = dim, input_resolution, num_heads
        self.window_size, self.shift_size = window_size, shift_size
        if input_resolution <= window_size:
            self.shift_size, self.window_size = 0, input_resolution
        self.norm1 = L.LayerNorm(dim)
        self.attn = WindowAttention(dim, self.window_size, num_heads, qkv_bias, drop, gmm, num_kernels)
        self.drop_path = L.DropPath(drop_path)
        self.norm2 = L.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop)
        self.attn_mask = (_frozen(shift_attn_mask(input_resolution, self.window_size, self.shift_size), "attn_mask")
                          if self.shift_size > 0 else None)

    def _roll(self, x, s):
        """torch.roll(x, (s, s), dims=(1, 2)) on (B, H, W, C), as slices and concatenations (no ops.roll)."""
        h = x.shape[1]
        s = s % h
        x = ops.concat((x[:, h - s:], x[:, :h - s]), 1)
        return ops.concat((x[:, :, h - s:], x[:, :, :h - s]), 2)

    def _partition(self, x):
        """(B, H, W, C) -> (B * nW, window^2, C)."""
        b, h, w, c = x.shape
        ws = self.window_size
        x = ops.transpose(x.reshape(b, h // ws, ws, w // ws, ws, c), (0, 1, 3, 2, 4, 5))
        return x.reshape(-1, ws * ws, c)

    def _reverse(self, x, b):
        """(B * nW, window^2, C) -> (B, H, W, C)."""
        ws, r = self.window_size, self.input_resolution
        c = x.shape[-1]
        x = ops.transpose(x.reshape(b, r // ws, r // ws, ws, ws, c), (0, 1, 3, 2, 4, 5))
        return x.reshape(b, r, r, c)

    def construct(self, x, base):
        b, length, c = x.shape
        r = self.input_resolution
        shortcut = x
        x = self.norm1(x).reshape(b, r, r, c)
        if self.shift_size > 0:
            x = self._roll(x, -self.shift_size)
        x = self._reverse(self.attn(self._partition(x), base, self.attn_mask), b)
        if self.shift_size > 0:
            x = self._roll(x, self.shift_size)
        x = shortcut + self.drop_path(x.reshape(b, length, c))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class PatchMerging(nn.Cell):
    """See ``pt.swin.PatchMerging``: the 2x2 neighbours in the order (0,0), (1,0), (0,1), (1,1) as one transpose."""

    def __init__(self, input_resolution, dim):
        super().__init__()
        self.input_resolution, self.dim = input_resolution, dim
        self.reduction = L.Linear(4 * dim, 2 * dim, bias=False)
        self.norm = L.LayerNorm(4 * dim)

    def construct(self, x):
        r = self.input_resolution
        b, _, c = x.shape
        x = ops.transpose(x.reshape(b, r // 2, 2, r // 2, 2, c), (0, 1, 3, 4, 2, 5))  # (b, y, x, dx, dy, c)
        return self.reduction(self.norm(x.reshape(b, (r // 2) * (r // 2), 4 * c)))


class BasicLayer(nn.Cell):
    def __init__(self, dim, input_resolution, depth, num_heads, window_size, mlp_ratio, qkv_bias, drop, drop_path,
                 downsample, gmm, num_kernels):
        super().__init__()
        self.dim, self.input_resolution, self.depth = dim, input_resolution, depth
        self.blocks = nn.CellList([
            SwinTransformerBlock(dim, input_resolution, num_heads, window_size, 0 if i % 2 == 0 else window_size // 2,
                                 mlp_ratio, qkv_bias, drop, drop_path[i], gmm, num_kernels)
            for i in range(depth)])
        self.downsample = PatchMerging(input_resolution, dim) if downsample else None

    def forward_blocks(self, x, base):
        for blk in self.blocks:
            x = blk(x, base)
        return x

    def construct(self, x, base):
        x = self.forward_blocks(x, base)
        return x if self.downsample is None else self.downsample(x)


class PatchEmbed(nn.Cell):
    def __init__(self, img_size, patch_size, in_chans, embed_dim):
        super().__init__()
        self.img_size, self.patch_size = img_size, patch_size
        self.patches_resolution = img_size // patch_size
        self.proj = L.Conv2d(in_chans, embed_dim, patch_size, patch_size)
        self.norm = L.LayerNorm(embed_dim)

    def construct(self, x):
        x = self.proj(x)
        b, c = x.shape[0], x.shape[1]
        return self.norm(ops.transpose(x.reshape(b, c, -1), (0, 2, 1)))


class Swin(nn.Cell):
    """See ``pt.swin.Swin``: the same arguments and the same function."""

    def __init__(self, img_size=32, patch_size=2, num_classes=10, in_chans=3, embed_dim=96, depths=(2, 6, 4),
                 num_heads=(3, 6, 12), window_size=4, mlp_ratio=2.0, qkv_bias=True, drop_rate=0.0,
                 drop_path_rate=C.STOCHASTIC_DEPTH, gmm=False, num_kernels=C.NUM_KERNELS):
        super().__init__()
        plan = C.swin_plan(img_size, patch_size, embed_dim, depths, num_heads, drop_path_rate)
        self.img_size, self.in_chans = img_size, in_chans
        self.num_classes = num_classes
        self.num_layers = len(depths)
        self.embed_dim = embed_dim
        self.num_features = plan[-1].dim
        self.mask = base_mask_parameter(window_size ** 2)
        self.patch_embed = PatchEmbed(img_size, patch_size, in_chans, embed_dim)
        res = self.patch_embed.patches_resolution
        self.absolute_pos_embed = ms.Parameter(ms.Tensor(np.zeros((1, res * res, embed_dim), np.float32)),
                                               name="absolute_pos_embed")
        L.trunc_normal_(self.absolute_pos_embed, std=0.02)
        self.pos_drop = L.Dropout(drop_rate)
        self.layers = nn.CellList([BasicLayer(
            st.dim, st.resolution, st.depth, st.heads, window_size, mlp_ratio, qkv_bias, drop_rate,
            list(st.drop_path), st.downsample, gmm, num_kernels) for st in plan])
        self.feature_info = [dict(num_chs=st.dim, reduction=st.reduction,
                                  module=f"layers.{st.index}.blocks.{st.depth - 1}") for st in plan]
        self.norm = L.LayerNorm(self.num_features)
        self.head = L.Linear(self.num_features, num_classes) if num_classes > 0 else L.Identity()

    def reset_classifier(self, num_classes: int):
        self.num_classes = num_classes
        self.head = L.Linear(self.num_features, num_classes) if num_classes > 0 else L.Identity()

    def _stem(self, x):
        C.check_input(x.shape, self.in_chans, self.img_size, "Swin")
        return self.pos_drop(self.patch_embed(x) + self.absolute_pos_embed)

    def forward_features(self, x):
        x = self._stem(x)
        for layer in self.layers:
            x = layer(x, self.mask)
        return self.norm(x)

    def forward_intermediates(self, x):
        x = self._stem(x)
        feats = []
        for layer in self.layers:
            x = layer.forward_blocks(x, self.mask)
            feats.append(tokens_to_map(x, layer.input_resolution))
            if layer.downsample is not None:
                x = layer.downsample(x)
        return self.norm(x), feats

    def forward_head(self, x, pre_logits: bool = False):
        x = x.mean(1)
        return x if pre_logits else self.head(x)

    def construct(self, x):
        return self.forward_head(self.forward_features(x))
