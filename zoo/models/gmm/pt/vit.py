"""ViT for small images, with and without the Gaussian mixture mask: PyTorch twin of the reference's
``models/vit.py`` (module names, ``nn.Sequential`` indices and ``fn`` wrappers as there, so its state dicts load
strictly).

Quirks kept: the GMM model is not "ViT + mask": it drops the class token (``pos_embedding`` covers the
patches only) and classifies the mean token; the baseline prepends a class token and classifies it. The mask
multiplies the scaled logits before the softmax. One ``DropPath`` per transformer serves every branch
(constant stochastic depth, not a linear decay). The frozen base ``mask`` exists in the baseline too
(unused).
"""
from __future__ import annotations

import torch
from torch import nn

from zoo.models.gmm import config as C
from zoo.models.gmm.pt.common import (FeedForward, GaussianMixtureMask, PreNorm, base_mask_parameter,
                                      tokens_to_map, xavier_init_)
from zoo.nn.pt import DropPath


class PatchRearrange(nn.Module):
    """einops ``Rearrange('b c (h p1) (w p2) -> b (h w) (p1 p2 c)')``: patch features in (p1, p2, c) order."""

    def __init__(self, patch_size: int):
        super().__init__()
        self.patch_size = patch_size

    def forward(self, x):
        B, Cc, H, W = x.shape
        p = self.patch_size
        x = x.reshape(B, Cc, H // p, p, W // p, p).permute(0, 2, 4, 3, 5, 1)
        return x.reshape(B, (H // p) * (W // p), p * p * Cc)

    def extra_repr(self) -> str:
        return f"patch_size={self.patch_size}"


class Attention(nn.Module):
    """Multi-head self-attention: ``to_qkv`` (no bias), logits * dim_head^-0.5, [mask], softmax, ``to_out``."""

    def __init__(self, dim: int, heads: int, dim_head: int, dropout: float = 0.0, gmm: bool = False,
                 num_kernels: int = C.NUM_KERNELS, mask=None):
        super().__init__()
        inner = dim_head * heads
        project_out = not (heads == 1 and dim_head == dim)
        self.heads = heads
        self.scale = dim_head ** -0.5
        self.to_qkv = nn.Linear(dim, inner * 3, bias=False)
        self.to_out = nn.Sequential(nn.Linear(inner, dim), nn.Dropout(dropout)) if project_out else nn.Identity()
        self.mask = GaussianMixtureMask(heads, num_kernels, mask) if gmm else None

    def forward(self, x):
        B, N, _ = x.shape
        q, k, v = (t.reshape(B, N, self.heads, -1).transpose(1, 2) for t in self.to_qkv(x).chunk(3, dim=-1))
        dots = torch.matmul(q, k.transpose(-1, -2)) * self.scale
        if self.mask is not None:
            dots = self.mask(dots)
        out = torch.matmul(dots.softmax(dim=-1), v)
        return self.to_out(out.transpose(1, 2).reshape(B, N, -1))


class Transformer(nn.Module):
    """``layers[i] = [PreNorm(Attention), PreNorm(FeedForward)]``; x += drop_path(branch(x)) for each."""

    def __init__(self, dim: int, depth: int, heads: int, dim_head: int, mlp_dim_ratio: int, dropout: float = 0.0,
                 stochastic_depth: float = 0.0, gmm: bool = False, num_kernels: int = C.NUM_KERNELS, mask=None):
        super().__init__()
        self.layers = nn.ModuleList([nn.ModuleList([
            PreNorm(dim, Attention(dim, heads, dim_head, dropout, gmm, num_kernels, mask)),
            PreNorm(dim, FeedForward(dim, dim * mlp_dim_ratio, dropout)),
        ]) for _ in range(depth)])
        self.drop_path = DropPath(stochastic_depth) if stochastic_depth > 0 else nn.Identity()

    def forward(self, x, collect: bool = False):
        outs = []
        for attn, ff in self.layers:
            x = self.drop_path(attn(x)) + x
            x = self.drop_path(ff(x)) + x
            if collect:
                outs.append(x)
        return (x, outs) if collect else x


class ViT(nn.Module):
    """The reference's ``ViT`` as ``create_model`` builds it (``--model vit``; ``gmm=True`` is ``--is_GMM``).

    ``drop_rate`` is the reference's ``dropout`` (after the MLP layers and the attention output),
    ``drop_path_rate`` its ``stochastic_depth`` (``--sd``, 0.1), ``emb_dropout`` the dropout after the position
    embedding. ``forward_features`` returns the tokens after the last layer ((B, 1 + N, dim) for the
    baseline, (B, N, dim) with GMM); ``forward_head`` takes the class token (baseline) or the mean token (GMM)
    and applies ``mlp_head`` = [LayerNorm, Linear]; ``pre_logits`` returns the normalised pooled features.
    """

    def __init__(self, img_size: int = 32, patch_size: int = 4, num_classes: int = 10, dim: int = 192, depth: int = 9,
                 heads: int = 12, dim_head: int = 16, mlp_dim_ratio: int = 2, gmm: bool = False,
                 num_kernels: int = C.NUM_KERNELS, in_chans: int = 3, drop_rate: float = 0.0,
                 drop_path_rate: float = C.STOCHASTIC_DEPTH, emb_dropout: float = 0.0):
        super().__init__()
        if img_size % patch_size:
            raise ValueError(f"img_size {img_size} is not a multiple of patch_size {patch_size}")
        self.img_size, self.patch_size, self.in_chans, self.gmm = img_size, patch_size, in_chans, gmm
        self.grid = img_size // patch_size
        self.num_patches = self.grid ** 2
        self.num_classes, self.num_features, self.dim = num_classes, dim, dim
        self.mask = base_mask_parameter(self.num_patches)
        self.to_patch_embedding = nn.Sequential(PatchRearrange(patch_size), nn.Linear(in_chans * patch_size ** 2, dim))
        if gmm:
            self.pos_embedding = nn.Parameter(torch.randn(1, self.num_patches, dim))
        else:
            self.pos_embedding = nn.Parameter(torch.randn(1, self.num_patches + 1, dim))
            self.cls_token = nn.Parameter(torch.randn(1, 1, dim))
        self.dropout = nn.Dropout(emb_dropout)
        self.transformer = Transformer(dim, depth, heads, dim_head, mlp_dim_ratio, drop_rate, drop_path_rate, gmm,
                                       num_kernels, self.mask)
        self.mlp_head = nn.Sequential(nn.LayerNorm(dim, eps=C.LN_EPS),
                                      nn.Linear(dim, num_classes) if num_classes > 0 else nn.Identity())
        self.feature_info = [dict(num_chs=dim, reduction=patch_size, module=f"transformer.layers.{i}")
                             for i in range(depth)]
        xavier_init_(self)

    def reset_classifier(self, num_classes: int) -> None:
        self.num_classes = num_classes
        self.mlp_head[1] = nn.Linear(self.dim, num_classes) if num_classes > 0 else nn.Identity()

    def _embed(self, x):
        C.check_input(x.shape, self.in_chans, self.img_size, "ViT")
        x = self.to_patch_embedding(x)
        if not self.gmm:
            x = torch.cat((self.cls_token.expand(x.shape[0], -1, -1), x), dim=1)
        return self.dropout(x + self.pos_embedding)

    def forward_features(self, x):
        return self.transformer(self._embed(x))

    def forward_intermediates(self, x):
        """(forward_features(x), [the patch tokens after each layer as (B, dim, grid, grid) maps])."""
        x, outs = self.transformer(self._embed(x), collect=True)
        skip = 0 if self.gmm else 1
        return x, [tokens_to_map(t[:, skip:]) for t in outs]

    def forward_head(self, x, pre_logits: bool = False):
        x = x.mean(dim=1) if self.gmm else x[:, 0]
        x = self.mlp_head[0](x)
        return x if pre_logits else self.mlp_head[1](x)

    def forward(self, x):
        return self.forward_head(self.forward_features(x))
