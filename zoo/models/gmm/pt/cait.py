"""CaiT for small images, with and without the Gaussian mixture mask: PyTorch twin of the reference's
``models/cait.py`` (``cait`` is dim 192, ``cait-tiny`` dim 108; one class).

Quirks kept: the mask multiplies the scaled logits of the patch (self-attention) layers *before* the
talking-heads pre-softmax mixing, and the class-attention layers have none. Class attention takes its
queries from the class token and its keys and values from the patch tokens only (``context``), and the
context is not normalised (``PreNorm`` normalises ``x`` only). Layer scale starts at 0.1 for layers 1-18,
1e-5 for 19-24 and 1e-6 beyond. One ``DropPath`` per transformer (constant stochastic depth). The
reference's layer dropout (``layer_dropout``, 0 in create_model) is not offered.
"""
from __future__ import annotations

import torch
from torch import nn

from zoo.models.gmm import config as C
from zoo.models.gmm.pt.common import (FeedForward, GaussianMixtureMask, PreNorm, base_mask_parameter,
                                      tokens_to_map, xavier_init_)
from zoo.models.gmm.pt.vit import PatchRearrange
from zoo.nn.pt import DropPath


class LayerScale(nn.Module):
    """``fn(x, **kwargs) * scale`` with ``scale`` (1, 1, dim)."""

    def __init__(self, dim: int, fn: nn.Module, depth: int):
        super().__init__()
        self.scale = nn.Parameter(torch.full((1, 1, dim), C.layer_scale_init(depth)))
        self.fn = fn

    def forward(self, x, **kwargs):
        return self.fn(x, **kwargs) * self.scale


class Attention(nn.Module):
    """Talking-heads attention: q from ``x``, k, v from ``context`` (default ``x``); logits * dim_head^-0.5,
    [mask], mixed over heads by ``mix_heads_pre_attn``, softmax, mixed by ``mix_heads_post_attn``, @ v."""

    def __init__(self, dim: int, heads: int, dim_head: int, dropout: float = 0.0, gmm: bool = False,
                 num_kernels: int = C.NUM_KERNELS, mask=None):
        super().__init__()
        inner = dim_head * heads
        self.heads = heads
        self.scale = dim_head ** -0.5
        self.to_q = nn.Linear(dim, inner, bias=False)
        self.to_kv = nn.Linear(dim, inner * 2, bias=False)
        self.mix_heads_pre_attn = nn.Parameter(torch.randn(heads, heads))
        self.mix_heads_post_attn = nn.Parameter(torch.randn(heads, heads))
        self.to_out = nn.Sequential(nn.Linear(inner, dim), nn.Dropout(dropout))
        self.mask = GaussianMixtureMask(heads, num_kernels, mask) if gmm else None

    def forward(self, x, context=None):
        context = x if context is None else context
        B, N, _ = x.shape
        h = self.heads
        q = self.to_q(x).reshape(B, N, h, -1).transpose(1, 2)
        k, v = (t.reshape(B, context.shape[1], h, -1).transpose(1, 2) for t in self.to_kv(context).chunk(2, dim=-1))
        dots = torch.matmul(q, k.transpose(-1, -2)) * self.scale
        if self.mask is not None:
            dots = self.mask(dots)
        dots = torch.einsum("bhij,hg->bgij", dots, self.mix_heads_pre_attn)
        attn = torch.einsum("bhij,hg->bgij", dots.softmax(dim=-1), self.mix_heads_post_attn)
        out = torch.matmul(attn, v)
        return self.to_out(out.transpose(1, 2).reshape(B, N, -1))


class Transformer(nn.Module):
    """``layers[i] = [LayerScale(PreNorm(Attention)), LayerScale(PreNorm(FeedForward))]`` (depth i + 1)."""

    def __init__(self, dim: int, depth: int, heads: int, dim_head: int, mlp_dim: int, dropout: float = 0.0,
                 stochastic_depth: float = 0.0, gmm: bool = False, num_kernels: int = C.NUM_KERNELS, mask=None):
        super().__init__()
        self.layers = nn.ModuleList([nn.ModuleList([
            LayerScale(dim, PreNorm(dim, Attention(dim, heads, dim_head, dropout, gmm, num_kernels, mask)), i + 1),
            LayerScale(dim, PreNorm(dim, FeedForward(dim, mlp_dim, dropout)), i + 1),
        ]) for i in range(depth)])
        self.drop_path = DropPath(stochastic_depth) if stochastic_depth > 0 else nn.Identity()

    def forward(self, x, context=None, collect: bool = False):
        outs = []
        for attn, ff in self.layers:
            x = self.drop_path(attn(x, context=context)) + x
            x = self.drop_path(ff(x)) + x
            if collect:
                outs.append(x)
        return (x, outs) if collect else x


class CaiT(nn.Module):
    """The reference's ``CaiT`` as ``create_model`` builds it (``--model cait`` / ``cait-tiny``, ``--is_GMM``).

    ``forward_features`` returns the class token after the class-attention layers, (B, 1, dim);
    ``forward_head`` applies ``mlp_head`` = [LayerNorm, Linear] to it (``pre_logits``: after the LayerNorm).
    ``drop_rate`` is the reference's ``dropout``, ``drop_path_rate`` its ``stochastic_depth`` (``--sd``).
    ``forward_intermediates`` gives the patch tokens after each self-attention layer as maps.
    """

    def __init__(self, img_size: int = 32, patch_size: int = 4, num_classes: int = 10, dim: int = 192, depth: int = 24,
                 cls_depth: int = 2, heads: int = 4, dim_head: int = 64, mlp_dim: int = 384, gmm: bool = False,
                 num_kernels: int = C.NUM_KERNELS, in_chans: int = 3, drop_rate: float = 0.0,
                 drop_path_rate: float = C.STOCHASTIC_DEPTH, emb_dropout: float = 0.0):
        super().__init__()
        if img_size % patch_size:
            raise ValueError(f"img_size {img_size} is not a multiple of patch_size {patch_size}")
        self.img_size, self.patch_size, self.in_chans, self.gmm = img_size, patch_size, in_chans, gmm
        self.grid = img_size // patch_size
        num_patches = self.grid ** 2
        self.num_classes, self.num_features, self.dim = num_classes, dim, dim
        self.to_patch_embedding = nn.Sequential(PatchRearrange(patch_size), nn.Linear(in_chans * patch_size ** 2, dim))
        self.pos_embedding = nn.Parameter(torch.randn(1, num_patches, dim))
        self.cls_token = nn.Parameter(torch.randn(1, 1, dim))
        self.dropout = nn.Dropout(emb_dropout)
        self.mask = base_mask_parameter(num_patches)
        self.patch_transformer = Transformer(dim, depth, heads, dim_head, mlp_dim, drop_rate, drop_path_rate, gmm,
                                             num_kernels, self.mask)
        self.cls_transformer = Transformer(dim, cls_depth, heads, dim_head, mlp_dim, drop_rate, drop_path_rate)
        self.mlp_head = nn.Sequential(nn.LayerNorm(dim, eps=C.LN_EPS),
                                      nn.Linear(dim, num_classes) if num_classes > 0 else nn.Identity())
        self.feature_info = [dict(num_chs=dim, reduction=patch_size, module=f"patch_transformer.layers.{i}")
                             for i in range(depth)]
        xavier_init_(self)

    def reset_classifier(self, num_classes: int) -> None:
        self.num_classes = num_classes
        self.mlp_head[1] = nn.Linear(self.dim, num_classes) if num_classes > 0 else nn.Identity()

    def _patches(self, x):
        C.check_input(x.shape, self.in_chans, self.img_size, "CaiT")
        return self.dropout(self.to_patch_embedding(x) + self.pos_embedding)

    def _classes(self, x):
        # repeat (a copy, as einops.repeat): an expanded view of a Parameter trips torch's FlopCounterMode
        return self.cls_transformer(self.cls_token.repeat(x.shape[0], 1, 1), context=x)

    def forward_features(self, x):
        return self._classes(self.patch_transformer(self._patches(x)))

    def forward_intermediates(self, x):
        """(forward_features(x), [the patch tokens after each self-attention layer as (B, dim, grid, grid)])."""
        x, outs = self.patch_transformer(self._patches(x), collect=True)
        return self._classes(x), [tokens_to_map(t) for t in outs]

    def forward_head(self, x, pre_logits: bool = False):
        x = self.mlp_head[0](x[:, 0])
        return x if pre_logits else self.mlp_head[1](x)

    def forward(self, x):
        return self.forward_head(self.forward_features(x))
