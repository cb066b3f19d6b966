"""Swin for small images (GMM repo ``models/swin.py``), PyTorch twin.

The module names, buffers and construction order are the reference's, so its state dicts load
strictly and the same seed gives the same initial weights. What the reference computes, kept here:

- the Gaussian mixture mask multiplies ``(q * scale) @ k^T`` BEFORE the relative-position bias and the
  shifted-window -100 mask are added; one 16-token base mask (4x4 window) owned by the model
  (``mask``) and shared by every block (``layers.S.blocks.B.attn.mask.mask``);
- the cyclic shift (``torch.roll`` by -2, back by +2) on odd blocks of the stages whose grid is larger
  than the window; the last stage (4x4 == window) never shifts;
- ``PatchMerging`` at the END of stages 0 and 1 (inside ``layers.S.downsample``);
- the absolute position embedding is always added; no weight-init pass (PyTorch's default init, only
  the position embedding and the bias tables are trunc-normal(0.02));
- stochastic depth rising linearly 0..``drop_path_rate`` over the 12 blocks (block 0: none);
- final LayerNorm, mean over tokens, ``head``.

The input must be ``img_size`` x ``img_size``: the token grid (and with it the windows and the shift
masks) is fixed at construction.
"""
from __future__ import annotations

import torch
from torch import nn

from zoo.models.gmm import config as C
from zoo.models.gmm.tables import relative_position_index, shift_attn_mask
from zoo.models.gmm.pt.common import GaussianMixtureMask, base_mask_parameter
from zoo.nn.pt import DropPath


def _trunc_normal_(t, std=0.02):
    # timm's trunc_normal_(std=..): bounds -2, 2 are absolute values (so nothing is cut at std 0.02)
    return nn.init.trunc_normal_(t, std=std, a=-2.0, b=2.0)


def window_partition(x: torch.Tensor, window: int) -> torch.Tensor:
    """(B, H, W, C) -> (B * nW, window, window, C), windows row-major."""
    b, h, w, c = x.shape
    x = x.view(b, h // window, window, w // window, window, c)
    return x.permute(0, 1, 3, 2, 4, 5).contiguous().view(-1, window, window, c)


def window_reverse(windows: torch.Tensor, window: int, h: int, w: int) -> torch.Tensor:
    """(B * nW, window, window, C) -> (B, H, W, C)."""
    b = windows.shape[0] // ((h // window) * (w // window))
    x = windows.view(b, h // window, w // window, window, window, -1)
    return x.permute(0, 1, 3, 2, 4, 5).contiguous().view(b, h, w, -1)


class Mlp(nn.Module):
    def __init__(self, in_features, hidden_features, drop=0.0):
        super().__init__()
        self.fc1 = nn.Linear(in_features, hidden_features)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_features, in_features)
        self.drop = nn.Dropout(drop)

    def forward(self, x):
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


class WindowAttention(nn.Module):
    """Window attention: qkv (bias), q * head_dim^-0.5, q @ k^T, [GMM], + relative bias, [+ shift mask], softmax."""

    def __init__(self, dim, window_size, num_heads, qkv_bias=True, drop=0.0, gmm=False, num_kernels=C.NUM_KERNELS,
                 mask=None):
        super().__init__()
        self.dim, self.window_size, self.num_heads = dim, window_size, num_heads
        self.scale = (dim // num_heads) ** -0.5
        # the reference creates the mixture (random sigma, alpha) first, then the tables and layers
        self.mask = GaussianMixtureMask(num_heads, num_kernels, mask) if gmm else None
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window_size - 1) ** 2, num_heads))
        self.register_buffer("relative_position_index", torch.from_numpy(relative_position_index(window_size)))
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.attn_drop = nn.Dropout(0.0)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(drop)
        _trunc_normal_(self.relative_position_bias_table)
        self.softmax = nn.Softmax(dim=-1)

    def forward(self, x, mask=None):
        b_, n, c = x.shape
        qkv = self.qkv(x).reshape(b_, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        attn = (q * self.scale) @ k.transpose(-2, -1)
        if self.mask is not None:
            attn = self.mask(attn)
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)].view(n, n, -1)
        attn = attn + bias.permute(2, 0, 1).contiguous().unsqueeze(0)
        if mask is not None:
            nw = mask.shape[0]
            attn = attn.view(b_ // nw, nw, self.num_heads, n, n) + mask.unsqueeze(1).unsqueeze(0)
            attn = attn.view(-1, self.num_heads, n, n)
        attn = self.attn_drop(self.softmax(attn))
        x = (attn @ v).transpose(1, 2).reshape(b_, n, c)
        return self.proj_drop(self.proj(x))


class SwinTransformerBlock(nn.Module):
    def __init__(self, dim, input_resolution, num_heads, window_size=4, shift_size=0, mlp_ratio=2.0, qkv_bias=True,
                 drop=0.0, drop_path=0.0, gmm=False, num_kernels=C.NUM_KERNELS, mask=None):
        super().__init__()
        self.dim, self.input_resolution, self.num_heads = dim, input_resolution, num_heads
        self.window_size, self.shift_size = window_size, shift_size
        if input_resolution <= window_size:  # one window covers the grid: no partition, no shift
            self.shift_size, self.window_size = 0, input_resolution
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, self.window_size, num_heads, qkv_bias, drop, gmm, num_kernels, mask)
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop)
        attn_mask = (torch.from_numpy(shift_attn_mask(input_resolution, self.window_size, self.shift_size))
                     if self.shift_size > 0 else None)
        self.register_buffer("attn_mask", attn_mask)

    def forward(self, x):
        b, length, c = x.shape
        h = w = self.input_resolution
        shortcut = x
        x = self.norm1(x).view(b, h, w, c)
        if self.shift_size > 0:
            x = torch.roll(x, shifts=(-self.shift_size, -self.shift_size), dims=(1, 2))
        win = window_partition(x, self.window_size).view(-1, self.window_size * self.window_size, c)
        win = self.attn(win, mask=self.attn_mask).view(-1, self.window_size, self.window_size, c)
        x = window_reverse(win, self.window_size, h, w)
        if self.shift_size > 0:
            x = torch.roll(x, shifts=(self.shift_size, self.shift_size), dims=(1, 2))
        x = shortcut + self.drop_path(x.reshape(b, length, c))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class PatchMerging(nn.Module):
    """2x2 neighbours concatenated as [(0,0), (1,0), (0,1), (1,1)] -> LayerNorm(4C) -> Linear(4C, 2C, no bias)."""

    def __init__(self, input_resolution, dim):
        super().__init__()
        self.input_resolution, self.dim = input_resolution, dim
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)
        self.norm = nn.LayerNorm(4 * dim)

    def forward(self, x):
        h = w = self.input_resolution
        b, _, c = x.shape
        x = x.view(b, h, w, c)
        x = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], -1)
        return self.reduction(self.norm(x.view(b, -1, 4 * c)))


class BasicLayer(nn.Module):
    """One stage: ``depth`` blocks (shift on odd blocks), then ``downsample`` (PatchMerging) if any."""

    def __init__(self, dim, input_resolution, depth, num_heads, window_size, mlp_ratio, qkv_bias, drop, drop_path,
                 downsample, gmm, num_kernels, mask):
        super().__init__()
        self.dim, self.input_resolution, self.depth = dim, input_resolution, depth
        self.blocks = nn.ModuleList([
            SwinTransformerBlock(dim, input_resolution, num_heads, window_size, 0 if i % 2 == 0 else window_size // 2,
                                 mlp_ratio, qkv_bias, drop, drop_path[i], gmm, num_kernels, mask)
            for i in range(depth)])
        self.downsample = PatchMerging(input_resolution, dim) if downsample else None

    def forward_blocks(self, x):
        for blk in self.blocks:
            x = blk(x)
        return x

    def forward(self, x):
        x = self.forward_blocks(x)
        return x if self.downsample is None else self.downsample(x)


class PatchEmbed(nn.Module):
    def __init__(self, img_size, patch_size, in_chans, embed_dim):
        super().__init__()
        self.img_size, self.patch_size = img_size, patch_size
        self.patches_resolution = img_size // patch_size
        self.proj = nn.Conv2d(in_chans, embed_dim, patch_size, patch_size)
        self.norm = nn.LayerNorm(embed_dim)

    def forward(self, x):
        return self.norm(self.proj(x).flatten(2).transpose(1, 2))


class Swin(nn.Module):
    """The GMM repo's ``SwinTransformer`` as ``create_model('swin')`` builds it (see the module docstring).

    ``gmm``: the Gaussian mixture mask with ``num_kernels`` kernels in every block. ``drop_rate``: dropout
    after the position embedding, in the MLPs and after the attention projection (0 in the reference).
    ``num_classes=0``: no head (``forward`` returns the pooled features).
    """

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
        self.absolute_pos_embed = nn.Parameter(torch.zeros(1, res * res, embed_dim))
        _trunc_normal_(self.absolute_pos_embed)
        self.pos_drop = nn.Dropout(drop_rate)
        self.layers = nn.ModuleList([BasicLayer(
            st.dim, st.resolution, st.depth, st.heads, window_size, mlp_ratio, qkv_bias, drop_rate,
            list(st.drop_path), st.downsample, gmm, num_kernels, self.mask) for st in plan])
        self.feature_info = [dict(num_chs=st.dim, reduction=st.reduction,
                                  module=f"layers.{st.index}.blocks.{st.depth - 1}") for st in plan]
        self.norm = nn.LayerNorm(self.num_features)
        self.avgpool = nn.AdaptiveAvgPool1d(1)
        self.head = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()

    def reset_classifier(self, num_classes: int):
        self.num_classes = num_classes
        self.head = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()

    def _stem(self, x):
        C.check_input(tuple(x.shape), self.in_chans, self.img_size, "Swin")
        return self.pos_drop(self.patch_embed(x) + self.absolute_pos_embed)

    def forward_features(self, x):
        """(B, in_chans, img, img) -> the final-norm tokens (B, 16, num_features) (4x4 grid at the default sizes)."""
        x = self._stem(x)
        for layer in self.layers:
            x = layer(x)
        return self.norm(x)

    def forward_intermediates(self, x):
        """(forward_features(x), [each stage's output before its patch merging, (B, C, H, W)])."""
        x = self._stem(x)
        feats = []
        for layer in self.layers:
            x = layer.forward_blocks(x)
            r = layer.input_resolution
            feats.append(x.transpose(1, 2).reshape(x.shape[0], x.shape[2], r, r))
            if layer.downsample is not None:
                x = layer.downsample(x)
        return self.norm(x), feats

    def forward_head(self, x, pre_logits: bool = False):
        x = torch.flatten(self.avgpool(x.transpose(1, 2)), 1)
        return x if pre_logits else self.head(x)

    def forward(self, x):
        return self.forward_head(self.forward_features(x))
