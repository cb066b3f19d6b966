"""CaiT for small images, with and without the Gaussian mixture mask: MindSpore twin of ``pt/cait.py``.

Talking heads as matmuls (no einsum): the logits (B, h, i, j) are mixed over heads as ``W^T @ dots`` on
(B, h, i*j). The base mask is the model's one ``mask`` parameter, passed to the self-attention layers.
"""
from __future__ import annotations

import mindspore as ms
import numpy as np
from mindspore import nn, ops

from zoo.models.gmm import config as C
from zoo.models.gmm.ms.common import (FeedForward, GaussianMixtureMask, PreNorm, base_mask_parameter,
                                      batched_heads, merge_heads, normal_parameter, tokens_to_map, xavier_init_)
from zoo.models.gmm.ms.vit import PatchRearrange
from zoo.nn import ms as L


class LayerScale(nn.Cell):
    def __init__(self, dim: int, fn: nn.Cell, depth: int):
        super().__init__()
        self.scale = ms.Parameter(ms.Tensor(np.full((1, 1, dim), C.layer_scale_init(depth), np.float32)), name="scale")
        self.fn = fn

    def construct(self, x, *args):
        return self.fn(x, *args) * self.scale


class Attention(nn.Cell):
    def __init__(self, dim: int, heads: int, dim_head: int, dropout: float = 0.0, gmm: bool = False,
                 num_kernels: int = C.NUM_KERNELS):
        super().__init__()
        inner = dim_head * heads
        self.heads, self.inner = heads, inner
        self.scale = dim_head ** -0.5
        self.to_q = L.Linear(dim, inner, bias=False)
        self.to_kv = L.Linear(dim, inner * 2, bias=False)
        self.mix_heads_pre_attn = normal_parameter((heads, heads), "mix_heads_pre_attn")
        self.mix_heads_post_attn = normal_parameter((heads, heads), "mix_heads_post_attn")
        self.to_out = L.SequentialCell([L.Linear(inner, dim), L.Dropout(dropout)])
        self.mask = GaussianMixtureMask(heads, num_kernels) if gmm else None
        self.qk = ops.BatchMatMul(transpose_b=True)
        self.bmm = ops.BatchMatMul()
        self.softmax = L.Softmax(dim=-1)

    def _mix(self, t, w):
        """einsum('bhij,hg->bgij', t, w) as (w^T broadcast over the batch) @ t.reshape(B, h, i*j)."""
        B, H, Nq, Nk = t.shape
        wt = ops.broadcast_to(ops.transpose(w, (1, 0)), (B, H, H))
        return self.bmm(wt, t.reshape(B, H, Nq * Nk)).reshape(B, H, Nq, Nk)

    def construct(self, x, context=None, base=None):
        if context is None:
            context = x
        kv = self.to_kv(context)
        n = self.inner
        q = batched_heads(self.to_q(x), self.heads)
        k = batched_heads(kv[:, :, :n], self.heads)
        v = batched_heads(kv[:, :, n:], self.heads)
        dots = self.qk(q, k) * self.scale
        if self.mask is not None:
            dots = self.mask(dots, base)
        dots = self._mix(dots, self.mix_heads_pre_attn)
        attn = self._mix(self.softmax(dots), self.mix_heads_post_attn)
        return self.to_out(merge_heads(self.bmm(attn, v)))


class Transformer(nn.Cell):
    def __init__(self, dim: int, depth: int, heads: int, dim_head: int, mlp_dim: int, dropout: float = 0.0,
                 stochastic_depth: float = 0.0, gmm: bool = False, num_kernels: int = C.NUM_KERNELS):
        super().__init__()
        self.layers = L.CellList([L.CellList([
            LayerScale(dim, PreNorm(dim, Attention(dim, heads, dim_head, dropout, gmm, num_kernels)), i + 1),
            LayerScale(dim, PreNorm(dim, FeedForward(dim, mlp_dim, dropout)), i + 1),
        ]) for i in range(depth)])
        self.drop_path = L.DropPath(stochastic_depth) if stochastic_depth > 0 else L.Identity()

    def construct(self, x, context=None, base=None):
        for layer in self.layers:
            x = self.drop_path(layer[0](x, context, base)) + x
            x = self.drop_path(layer[1](x)) + x
        return x

    def collect(self, x, base):
        outs = []
        for layer in self.layers:
            x = self.drop_path(layer[0](x, None, base)) + x
            x = self.drop_path(layer[1](x)) + x
            outs.append(x)
        return x, outs


class CaiT(nn.Cell):
    """See ``pt.CaiT``: the same arguments and the same function."""

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
        self.to_patch_embedding = L.SequentialCell([PatchRearrange(patch_size),
                                                    L.Linear(in_chans * patch_size ** 2, dim)])
        self.pos_embedding = normal_parameter((1, num_patches, dim), "pos_embedding")
        self.cls_token = normal_parameter((1, 1, dim), "cls_token")
        self.dropout = L.Dropout(emb_dropout)
        self.mask = base_mask_parameter(num_patches)
        self.patch_transformer = Transformer(dim, depth, heads, dim_head, mlp_dim, drop_rate, drop_path_rate, gmm,
                                             num_kernels)
        self.cls_transformer = Transformer(dim, cls_depth, heads, dim_head, mlp_dim, drop_rate, drop_path_rate)
        self.mlp_head = L.SequentialCell([L.LayerNorm(dim, eps=C.LN_EPS),
                                          L.Linear(dim, num_classes) if num_classes > 0 else L.Identity()])
        self.feature_info = [dict(num_chs=dim, reduction=patch_size, module=f"patch_transformer.layers.{i}")
                             for i in range(depth)]
        xavier_init_(self)

    def reset_classifier(self, num_classes: int) -> None:
        self.num_classes = num_classes
        head = L.Linear(self.dim, num_classes) if num_classes > 0 else L.Identity()
        self.mlp_head = L.SequentialCell([self.mlp_head[0], head])

    def _patches(self, x):
        C.check_input(x.shape, self.in_chans, self.img_size, "CaiT")
        return self.dropout(self.to_patch_embedding(x) + self.pos_embedding)

    def _classes(self, x):
        cls = ops.broadcast_to(self.cls_token, (x.shape[0], 1, self.dim))
        return self.cls_transformer(cls, x, None)

    def forward_features(self, x):
        return self._classes(self.patch_transformer(self._patches(x), None, self.mask))

    def forward_intermediates(self, x):
        x, outs = self.patch_transformer.collect(self._patches(x), self.mask)
        maps = []
        for t in outs:
            maps.append(tokens_to_map(t, self.grid))
        return self._classes(x), maps

    def forward_head(self, x, pre_logits: bool = False):
        x = self.mlp_head[0](x[:, 0])
        if pre_logits:
            return x
        return self.mlp_head[1](x)

    def construct(self, x):
        return self.forward_head(self.forward_features(x))
