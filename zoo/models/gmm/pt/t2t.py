"""T2T-ViT for small images (GMM repo ``models/t2t.py``), PyTorch twin.

Module names and construction order are the reference's, so its state dicts load strictly and one seed
gives the same initial weights. What the reference computes, kept here (its quirks included):

- soft split = ``nn.Unfold(3, stride 2, padding 1)``: features in (channel, ky, kx) order, channel slowest;
  32 px: split (27-d, 16x16 tokens) -> token transformer -> split (576-d, 8x8) -> ``project``;
  64 px: split (32x32) -> token transformer -> split (16x16) -> token transformer -> split (8x8) -> project;
- token transformer (one head): ``x = attn(norm1(x))`` where the attention's scale is ``dim^-0.5`` of its
  INPUT width (27 or 576), not of its 64-wide heads, and its skip is the VALUE (``v + proj(...)``); then
  ``x = x + mlp(norm2(x))``. Each owns the base mask of its grid;
- main blocks: ``x = x + drop_path(attn(norm1(x)))`` where the attention returns ``proj(...) + norm1(x)``:
  a double residual; qkv without bias, q scaled by 64^-0.5 before the matmul;
- ``cls_token`` and ``tokens_to_token.norm`` exist but are never used; ``pos_embed`` is the frozen
  sinusoid table (a Parameter without gradient);
- stochastic depth rising linearly 0..``drop_path_rate`` over the 12 blocks; final LayerNorm, mean over
  tokens, ``head``. Init: Linear trunc-normal(0.02), bias 0; LayerNorm 1/0.

The Gaussian mixture mask (``gmm``) multiplies the scaled logits of every block and token transformer
(1 head there). The input must be ``img_size`` x ``img_size`` with img_size 32 or 64.
"""
from __future__ import annotations

import torch
from torch import nn

from zoo.models.gmm import config as C
from zoo.models.gmm.tables import sinusoid_table, t2t_grids
from zoo.models.gmm.pt.common import GaussianMixtureMask, base_mask_parameter
from zoo.nn import drop_path_rates
from zoo.nn.pt import DropPath


def _trunc_normal_(t, std=0.02):
    return nn.init.trunc_normal_(t, std=std, a=-2.0, b=2.0)  # timm's: absolute bounds


class Mlp(nn.Module):
    def __init__(self, in_features, hidden_features, out_features=None, drop=0.0):
        super().__init__()
        out_features = out_features or in_features
        self.fc1 = nn.Linear(in_features, hidden_features)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_features, out_features)
        self.drop = nn.Dropout(drop)

    def forward(self, x):
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


class Attention(nn.Module):
    """qkv (dim -> 3 in_dim) -> (q * (dim // heads)^-0.5) @ k^T -> [GMM] -> softmax -> @ v -> proj -> skip.

    The skip is ``v + out`` with one head (token transformers: the widths differ) and ``out + x`` otherwise.
    """

    def __init__(self, dim, num_heads=8, in_dim=256, qkv_bias=False, drop=0.0, gmm=False, num_kernels=C.NUM_KERNELS,
                 mask=None):
        super().__init__()
        self.num_heads, self.in_dim = num_heads, in_dim
        self.scale = (dim // num_heads) ** -0.5
        self.qkv = nn.Linear(dim, in_dim * 3, bias=qkv_bias)
        self.attn_drop = nn.Dropout(0.0)
        self.proj = nn.Linear(in_dim, in_dim)
        self.proj_drop = nn.Dropout(drop)
        self.mask = GaussianMixtureMask(num_heads, num_kernels, mask) if gmm else None

    def forward(self, x):
        b, n, _ = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, self.in_dim // self.num_heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        attn = (q * self.scale) @ k.transpose(-2, -1)
        if self.mask is not None:
            attn = self.mask(attn)
        attn = self.attn_drop(attn.softmax(dim=-1))
        out = self.proj_drop(self.proj((attn @ v).transpose(1, 2).reshape(b, n, self.in_dim)))
        return v.squeeze(1) + out if self.num_heads == 1 else out + x


class Block(nn.Module):
    def __init__(self, dim, num_heads, mlp_ratio=2.0, qkv_bias=False, drop=0.0, drop_path=0.0, gmm=False,
                 num_kernels=C.NUM_KERNELS, mask=None):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, num_heads, dim, qkv_bias, drop, gmm, num_kernels, mask)
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop=drop)

    def forward(self, x):
        x = x + self.drop_path(self.attn(self.norm1(x)))  # attn adds norm1(x) itself: a double residual
        return x + self.drop_path(self.mlp(self.norm2(x)))


class Token_transformer(nn.Module):  # noqa: N801 (the reference's name)
    """One-head transformer that changes the width (dim -> in_dim) on a ``grid`` x ``grid`` token grid."""

    def __init__(self, dim, in_dim, grid, mlp_ratio=1.0, drop=0.0, gmm=False, num_kernels=C.NUM_KERNELS):
        super().__init__()
        self.grid = grid
        self.norm1 = nn.LayerNorm(dim)
        self.mask = base_mask_parameter(grid ** 2)
        self.attn = Attention(dim, 1, in_dim, False, drop, gmm, num_kernels, self.mask)
        self.drop_path = nn.Identity()
        self.norm2 = nn.LayerNorm(in_dim)
        self.mlp = Mlp(in_dim, int(in_dim * mlp_ratio), in_dim, drop)

    def forward(self, x):
        x = self.attn(self.norm1(x))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class T2T_module(nn.Module):  # noqa: N801
    """Soft split -> token transformer -> ... -> soft split -> ``project`` (see the module docstring)."""

    def __init__(self, img_size=32, in_chans=3, embed_dim=256, token_dim=64, drop=0.0, gmm=False,
                 num_kernels=C.NUM_KERNELS):
        super().__init__()
        grids = t2t_grids(img_size)
        for i in range(len(grids)):
            setattr(self, f"soft_split{i}", nn.Unfold(kernel_size=(3, 3), stride=(2, 2), padding=(1, 1)))
        self.attention1 = Token_transformer(in_chans * 9, token_dim, grids[0], 1.0, drop, gmm, num_kernels)
        self.attention2 = (Token_transformer(token_dim * 9, token_dim, grids[1], 1.0, drop, gmm, num_kernels)
                           if len(grids) == 3 else None)
        self.grids = grids
        self.num_patches = grids[-1] ** 2
        self.norm = nn.LayerNorm(token_dim * 9)  # created by the reference, never used
        self.project = nn.Linear(token_dim * 9, embed_dim)

    def forward(self, x):
        x = self.soft_split0(x).transpose(1, 2)
        x = self.attention1(x)
        b, _, c = x.shape
        x = self.soft_split1(x.transpose(1, 2).reshape(b, c, self.grids[0], self.grids[0])).transpose(1, 2)
        if self.attention2 is not None:
            x = self.attention2(x)
            b, _, c = x.shape
            x = self.soft_split2(x.transpose(1, 2).reshape(b, c, self.grids[1], self.grids[1])).transpose(1, 2)
        return self.project(x)


class T2T(nn.Module):
    """The GMM repo's ``T2T_ViT`` as ``create_model('t2t')`` builds it (see the module docstring).

    ``drop_rate``: dropout after the position embedding, in the MLPs and after the attention projections
    (0 in the reference). ``num_classes=0``: no head (``forward`` returns the pooled features).
    """

    def __init__(self, img_size=32, num_classes=10, in_chans=3, embed_dim=256, depth=12, num_heads=4, mlp_ratio=2.0,
                 qkv_bias=False, token_dim=64, drop_rate=0.0, drop_path_rate=C.STOCHASTIC_DEPTH, gmm=False,
                 num_kernels=C.NUM_KERNELS):
        super().__init__()
        self.img_size, self.in_chans, self.num_classes = img_size, in_chans, num_classes
        self.num_features = self.embed_dim = embed_dim
        self.tokens_to_token = T2T_module(img_size, in_chans, embed_dim, token_dim, drop_rate, gmm, num_kernels)
        num_patches = self.tokens_to_token.num_patches
        self.grid = self.tokens_to_token.grids[-1]
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))  # never used (as in the reference)
        self.pos_embed = nn.Parameter(torch.from_numpy(sinusoid_table(num_patches, embed_dim)), requires_grad=False)
        self.pos_drop = nn.Dropout(drop_rate)
        self.mask = base_mask_parameter(num_patches)
        dpr = drop_path_rates(drop_path_rate, depth)
        self.blocks = nn.ModuleList([
            Block(embed_dim, num_heads, mlp_ratio, qkv_bias, drop_rate, dpr[i], gmm, num_kernels, self.mask)
            for i in range(depth)])
        self.norm = nn.LayerNorm(embed_dim)
        self.head = nn.Linear(embed_dim, num_classes) if num_classes > 0 else nn.Identity()
        reduction = img_size // self.grid
        self.feature_info = [dict(num_chs=embed_dim, reduction=reduction, module=f"blocks.{i}") for i in range(depth)]
        _trunc_normal_(self.cls_token)
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(m):
        if isinstance(m, nn.Linear):
            _trunc_normal_(m.weight)
            if m.bias is not None:
                nn.init.constant_(m.bias, 0)
        elif isinstance(m, nn.LayerNorm):
            nn.init.constant_(m.bias, 0)
            nn.init.constant_(m.weight, 1.0)

    def reset_classifier(self, num_classes: int):
        self.num_classes = num_classes
        self.head = nn.Linear(self.embed_dim, num_classes) if num_classes > 0 else nn.Identity()
        self.head.apply(self._init_weights)

    def _stem(self, x):
        C.check_input(tuple(x.shape), self.in_chans, self.img_size, "T2T")
        return self.pos_drop(self.tokens_to_token(x) + self.pos_embed)

    def forward_features(self, x):
        """(B, in_chans, img, img) -> the final-norm tokens (B, 64, embed_dim) of the 8x8 grid."""
        x = self._stem(x)
        for blk in self.blocks:
            x = blk(x)
        return self.norm(x)

    def forward_intermediates(self, x):
        """(forward_features(x), [every block's tokens as (B, embed_dim, 8, 8)])."""
        x = self._stem(x)
        feats = []
        for blk in self.blocks:
            x = blk(x)
            feats.append(x.transpose(1, 2).reshape(x.shape[0], x.shape[2], self.grid, self.grid))
        return self.norm(x), feats

    def forward_head(self, x, pre_logits: bool = False):
        x = x.mean(dim=1)
        return x if pre_logits else self.head(x)

    def forward(self, x):
        return self.forward_head(self.forward_features(x))
