"""PiT for small images, MindSpore twin of ``zoo.models.gmm.pt.pit`` (the same names, the same function).

The Gaussian mixture mask acts on the patch-patch block only: its mixture G (heads, N, N) is padded with
a row and a column of ones for the class token (multiplying by 1 is exact), so the logits are multiplied
once, with no slice assignment. Attention is batched matmuls. Each stage (``Transformer``) owns the frozen
base mask of its grid and passes it to its attention layers (PyTorch's state dict repeats it per layer).
"""
from __future__ import annotations

import mindspore as ms
import numpy as np
from mindspore import nn, ops

from zoo.models.gmm import config as C
from zoo.models.gmm.ms.common import (FeedForward, GaussianMixtureMask, PreNorm, base_mask_parameter,
                                      batched_heads, merge_heads, normal_parameter, tokens_to_map, xavier_init_)
from zoo.nn import ms as L


class ToTokens(nn.Cell):
    """(B, C, H, W) -> (B, H*W, C)."""

    def construct(self, x):
        b, c = x.shape[0], x.shape[1]
        return ops.transpose(x.reshape(b, c, -1), (0, 2, 1))


class Attention(nn.Cell):
    """See ``pt.pit.Attention``."""

    def __init__(self, dim, num_patches, heads=8, dim_head=32, dropout=0.0, gmm=False, num_kernels=C.NUM_KERNELS):
        super().__init__()
        inner_dim = dim_head * heads
        self.heads, self.dim, self.inner_dim, self.num_patches = heads, dim, inner_dim, num_patches
        self.dim_head = dim_head
        self.scale = dim_head ** -0.5
        self.to_qkv = L.Linear(dim, inner_dim * 3, bias=False)
        if heads == 1 and dim_head == dim:
            raise ValueError("PiT attention without an output projection (1 head of the full width) is not built here")
        self.to_out = L.SequentialCell([L.Linear(inner_dim, dim), L.Dropout(dropout)])
        self.mask = GaussianMixtureMask(heads, num_kernels) if gmm else None
        self.bmm_qk = ops.BatchMatMul(transpose_b=True)
        self.bmm_av = ops.BatchMatMul()
        self.softmax = ops.Softmax(-1)
        self.ones_row = ms.Tensor(np.ones((heads, 1, num_patches - 1), np.float32))
        self.ones_col = ms.Tensor(np.ones((heads, num_patches, 1), np.float32))

    def _patch_block_mask(self, base):
        """G (heads, N, N) of the mixture, bordered by ones for the class token: (heads, N + 1, N + 1)."""
        g = self.mask.weights(base)
        g = ops.concat((self.ones_row, g), 1)
        return ops.concat((self.ones_col, g), 2)

    def construct(self, x, base):
        h, n = self.heads, self.inner_dim
        qkv = self.to_qkv(x)
        q = batched_heads(qkv[:, :, :n], h)
        k = batched_heads(qkv[:, :, n:2 * n], h)
        v = batched_heads(qkv[:, :, 2 * n:], h)
        dots = self.bmm_qk(q, k) * self.scale
        if self.mask is not None:
            dots = dots * self._patch_block_mask(base)
        return self.to_out(merge_heads(self.bmm_av(self.softmax(dots), v)))


class Transformer(nn.Cell):
    def __init__(self, dim, grid, depth, heads, dim_head, mlp_dim, dropout=0.0, stochastic_depth=0.0, gmm=False,
                 num_kernels=C.NUM_KERNELS):
        super().__init__()
        self.grid = grid
        num_tokens = grid ** 2 + 1
        self.mask = base_mask_parameter(grid ** 2)
        self.layers = nn.CellList([
            nn.CellList([PreNorm(dim, Attention(dim, num_tokens, heads, dim_head, dropout, gmm, num_kernels)),
                         PreNorm(dim, FeedForward(dim, mlp_dim, dropout))])
            for _ in range(depth)])
        self.drop_path = L.DropPath(stochastic_depth)

    def construct(self, x):
        for layer in self.layers:
            x = self.drop_path(layer[0](x, self.mask)) + x
            x = self.drop_path(layer[1](x)) + x
        return x


class DepthWiseConv2d(nn.Cell):
    def __init__(self, img_size, dim_in, dim_out, kernel_size, padding, stride, bias=True):
        super().__init__()
        self.dim_in, self.dim_out, self.kernel_size, self.out_size = dim_in, dim_out, kernel_size, img_size // 2
        self.net = L.SequentialCell([
            L.Conv2d(dim_in, dim_out, kernel_size, stride=stride, padding=padding, groups=dim_in, bias=bias),
            L.Conv2d(dim_out, dim_out, 1, bias=bias)])

    def construct(self, x):
        return self.net(x)


class Pool(nn.Cell):
    def __init__(self, img_size, dim):
        super().__init__()
        self.downsample = DepthWiseConv2d(img_size, dim, dim * 2, kernel_size=3, stride=2, padding=1)
        self.cls_ff = L.Linear(dim, dim * 2)
        self.dim, self.grid = dim, img_size

    def construct(self, x):
        cls_token, tokens = x[:, :1], x[:, 1:]
        b, n, c = tokens.shape
        tokens = self.downsample(ops.transpose(tokens, (0, 2, 1)).reshape(b, c, self.grid, self.grid))
        tokens = ops.transpose(tokens.reshape(b, 2 * c, -1), (0, 2, 1))
        return ops.concat((self.cls_ff(cls_token), tokens), 1)


class PiT(nn.Cell):
    """See ``pt.pit.PiT``: the same arguments and the same function."""

    def __init__(self, img_size=32, patch_size=2, num_classes=10, in_chans=3, dim=96, depth=(2, 6, 4),
                 heads=(2, 4, 8), dim_head=48, mlp_dim_ratio=2, drop_rate=0.0, drop_path_rate=C.STOCHASTIC_DEPTH,
                 gmm=False, num_kernels=C.NUM_KERNELS):
        super().__init__()
        plan = C.pit_plan(img_size, patch_size, dim, depth, heads)
        self.img_size, self.in_chans, self.num_classes = img_size, in_chans, num_classes
        self.to_patch_embedding = L.SequentialCell([L.Conv2d(in_chans, dim, patch_size, patch_size), ToTokens()])
        self.pos_embedding = normal_parameter((1, plan[0].grid ** 2 + 1, dim), "pos_embedding")
        self.cls_token = normal_parameter((1, 1, dim), "cls_token")
        self.dropout = L.Dropout(drop_rate)
        layers = []
        for st in plan:
            layers.append(Transformer(st.dim, st.grid, st.depth, st.heads, dim_head, st.dim * mlp_dim_ratio,
                                      drop_rate, drop_path_rate, gmm, num_kernels))
            if st.pool:
                layers.append(Pool(st.grid, st.dim))
        self.layers = nn.CellList(layers)
        self.stage_index = [st.layer for st in plan]
        self.feature_info = [dict(num_chs=st.dim, reduction=st.reduction, module=f"layers.{st.layer}") for st in plan]
        self.num_features = dim = plan[-1].dim
        head = L.Linear(dim, num_classes) if num_classes > 0 else L.Identity()
        self.mlp_head = L.SequentialCell([L.LayerNorm(dim, eps=C.LN_EPS), head])
        xavier_init_(self)

    def reset_classifier(self, num_classes: int):
        self.num_classes = num_classes
        head = L.Linear(self.num_features, num_classes) if num_classes > 0 else L.Identity()
        xavier_init_(head)
        self.mlp_head = L.SequentialCell([self.mlp_head[0], head])

    def _stem(self, x):
        C.check_input(x.shape, self.in_chans, self.img_size, "PiT")
        x = self.to_patch_embedding(x)
        cls = ops.broadcast_to(self.cls_token, (x.shape[0], 1, self.cls_token.shape[2]))
        return self.dropout(ops.concat((cls, x), 1) + self.pos_embedding)

    def forward_features(self, x):
        x = self._stem(x)
        for layer in self.layers:
            x = layer(x)
        return x

    def forward_intermediates(self, x):
        x = self._stem(x)
        feats = []
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i % 2 == 0:  # a Transformer stage (layers alternate Transformer, Pool)
                feats.append(tokens_to_map(x[:, 1:], self.layers[i].grid))
        return x, feats

    def forward_head(self, x, pre_logits: bool = False):
        x = self.mlp_head[0](x[:, 0])
        return x if pre_logits else self.mlp_head[1](x)

    def construct(self, x):
        return self.forward_head(self.forward_features(x))
