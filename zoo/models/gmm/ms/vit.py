"""ViT for small images, with and without the Gaussian mixture mask: MindSpore twin of ``pt/vit.py``.

Same attribute names and operations in the same order; attention as batched matmuls. The frozen base mask is
the model's one ``mask`` parameter, passed to every attention layer (PyTorch's state dict repeats it per
layer; see ``zoo.models.gmm.ms.common``).
"""
from __future__ import annotations

from mindspore import nn, ops

from zoo.models.gmm import config as C
from zoo.models.gmm.ms.common import (FeedForward, GaussianMixtureMask, PreNorm, base_mask_parameter,
                                      batched_heads, merge_heads, normal_parameter, tokens_to_map, xavier_init_)
from zoo.nn import ms as L


class PatchRearrange(nn.Cell):
    """'b c (h p1) (w p2) -> b (h w) (p1 p2 c)' (the reference's einops Rearrange)."""

    def __init__(self, patch_size: int):
        super().__init__()
        self.patch_size = patch_size

    def construct(self, x):
        B, Cc, H, W = x.shape
        p = self.patch_size
        x = ops.transpose(x.reshape(B, Cc, H // p, p, W // p, p), (0, 2, 4, 3, 5, 1))
        return x.reshape(B, (H // p) * (W // p), p * p * Cc)


class Attention(nn.Cell):
    def __init__(self, dim: int, heads: int, dim_head: int, dropout: float = 0.0, gmm: bool = False,
                 num_kernels: int = C.NUM_KERNELS):
        super().__init__()
        inner = dim_head * heads
        project_out = not (heads == 1 and dim_head == dim)
        self.heads, self.inner = heads, inner
        self.scale = dim_head ** -0.5
        self.to_qkv = L.Linear(dim, inner * 3, bias=False)
        self.to_out = L.SequentialCell([L.Linear(inner, dim), L.Dropout(dropout)]) if project_out else L.Identity()
        self.mask = GaussianMixtureMask(heads, num_kernels) if gmm else None
        self.qk = ops.BatchMatMul(transpose_b=True)
        self.av = ops.BatchMatMul()
        self.softmax = L.Softmax(dim=-1)

    def construct(self, x, base):
        qkv = self.to_qkv(x)
        n = self.inner
        q = batched_heads(qkv[:, :, :n], self.heads)
        k = batched_heads(qkv[:, :, n:2 * n], self.heads)
        v = batched_heads(qkv[:, :, 2 * n:], self.heads)
        dots = self.qk(q, k) * self.scale
        if self.mask is not None:
            dots = self.mask(dots, base)
        return self.to_out(merge_heads(self.av(self.softmax(dots), v)))


class Transformer(nn.Cell):
    def __init__(self, dim: int, depth: int, heads: int, dim_head: int, mlp_dim_ratio: int, dropout: float = 0.0,
                 stochastic_depth: float = 0.0, gmm: bool = False, num_kernels: int = C.NUM_KERNELS):
        super().__init__()
        self.layers = L.CellList([L.CellList([
            PreNorm(dim, Attention(dim, heads, dim_head, dropout, gmm, num_kernels)),
            PreNorm(dim, FeedForward(dim, dim * mlp_dim_ratio, dropout)),
        ]) for _ in range(depth)])
        self.drop_path = L.DropPath(stochastic_depth) if stochastic_depth > 0 else L.Identity()

    def construct(self, x, base):
        for layer in self.layers:
            x = self.drop_path(layer[0](x, base)) + x
            x = self.drop_path(layer[1](x)) + x
        return x

    def collect(self, x, base):
        outs = []
        for layer in self.layers:
            x = self.drop_path(layer[0](x, base)) + x
            x = self.drop_path(layer[1](x)) + x
            outs.append(x)
        return x, outs


class ViT(nn.Cell):
    """See ``pt.ViT``: the same arguments and the same function."""

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
        self.to_patch_embedding = L.SequentialCell([PatchRearrange(patch_size),
                                                    L.Linear(in_chans * patch_size ** 2, dim)])
        tokens = self.num_patches if gmm else self.num_patches + 1
        self.pos_embedding = normal_parameter((1, tokens, dim), "pos_embedding")
        self.cls_token = None if gmm else normal_parameter((1, 1, dim), "cls_token")
        self.dropout = L.Dropout(emb_dropout)
        self.transformer = Transformer(dim, depth, heads, dim_head, mlp_dim_ratio, drop_rate, drop_path_rate, gmm,
                                       num_kernels)
        self.mlp_head = L.SequentialCell([L.LayerNorm(dim, eps=C.LN_EPS),
                                          L.Linear(dim, num_classes) if num_classes > 0 else L.Identity()])
        self.feature_info = [dict(num_chs=dim, reduction=patch_size, module=f"transformer.layers.{i}")
                             for i in range(depth)]
        xavier_init_(self)

    def reset_classifier(self, num_classes: int) -> None:
        self.num_classes = num_classes
        head = L.Linear(self.dim, num_classes) if num_classes > 0 else L.Identity()
        self.mlp_head = L.SequentialCell([self.mlp_head[0], head])

    def _embed(self, x):
        C.check_input(x.shape, self.in_chans, self.img_size, "ViT")
        x = self.to_patch_embedding(x)
        if not self.gmm:
            cls = ops.broadcast_to(self.cls_token, (x.shape[0], 1, self.dim))
            x = ops.concat((cls, x), axis=1)
        return self.dropout(x + self.pos_embedding)

    def forward_features(self, x):
        return self.transformer(self._embed(x), self.mask)

    def forward_intermediates(self, x):
        x, outs = self.transformer.collect(self._embed(x), self.mask)
        maps = []
        for t in outs:
            maps.append(tokens_to_map(t if self.gmm else t[:, 1:], self.grid))
        return x, maps

    def forward_head(self, x, pre_logits: bool = False):
        x = x.mean(1) if self.gmm else x[:, 0]
        x = self.mlp_head[0](x)
        if pre_logits:
            return x
        return self.mlp_head[1](x)

    def construct(self, x):
        return self.forward_head(self.forward_features(x))
