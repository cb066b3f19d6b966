"""T2T-ViT for small images, MindSpore twin of ``zoo.models.gmm.pt.t2t`` (the same names, the same function).

The soft split is ``ops.unfold`` (Im2Col, which has a CPU kernel in MindSpore 2.8): (B, C * 9, L) with the
features in torch's (channel, ky, kx) order, channel slowest, as ``torch.nn.Unfold``; never
``nn.Unfold`` (TensorFlow's (ky, kx, channel) order and no CPU kernel). The base masks and the sinusoid
table are frozen Parameters (each token transformer owns the base mask of its grid, the model the one of
the 8x8 grid, passed to every block); attention is batched matmuls.
"""
from __future__ import annotations

import mindspore as ms
import numpy as np
from mindspore import nn, ops

from zoo.models.gmm import config as C
from zoo.models.gmm.ms.common import GaussianMixtureMask, base_mask_parameter, tokens_to_map
from zoo.models.gmm.tables import sinusoid_table, t2t_grids
from zoo.nn import drop_path_rates
from zoo.nn import ms as L


def _frozen(value: np.ndarray, name: str) -> ms.Parameter:
    return ms.Parameter(ms.Tensor(value), name=name, requires_grad=False)


class _SoftSplit(nn.Cell):
    """``torch.nn.Unfold(3, stride=2, padding=1)`` followed by ``.transpose(1, 2)``: (B, C, H, W) -> (B, L, C * 9)."""

    def construct(self, x):
        return ops.transpose(ops.unfold(x, 3, 1, 1, 2), (0, 2, 1))


class Mlp(nn.Cell):
    def __init__(self, in_features, hidden_features, out_features=None, drop=0.0):
        super().__init__()
        out_features = out_features or in_features
        self.fc1 = L.Linear(in_features, hidden_features)
        self.act = L.GELU()
        self.fc2 = L.Linear(hidden_features, out_features)
        self.drop = L.Dropout(drop)

    def construct(self, x):
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


class Attention(nn.Cell):
    """See ``pt.t2t.Attention``: scale from the input width, value skip with one head, input skip otherwise."""

    def __init__(self, dim, num_heads=8, in_dim=256, qkv_bias=False, drop=0.0, gmm=False, num_kernels=C.NUM_KERNELS):
        super().__init__()
        self.num_heads, self.in_dim = num_heads, in_dim
        self.head_dim = in_dim // num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.qkv = L.Linear(dim, in_dim * 3, bias=qkv_bias)
        self.proj = L.Linear(in_dim, in_dim)
        self.proj_drop = L.Dropout(drop)
        self.mask = GaussianMixtureMask(num_heads, num_kernels) if gmm else None
        self.bmm_qk = ops.BatchMatMul(transpose_b=True)
        self.bmm_av = ops.BatchMatMul()
        self.softmax = ops.Softmax(-1)

    def construct(self, x, base):
        b, n, _ = x.shape
        nh, hd = self.num_heads, self.head_dim
        qkv = ops.transpose(self.qkv(x).reshape(b, n, 3, nh, hd), (2, 0, 3, 1, 4))
        q, k, v = qkv[0], qkv[1], qkv[2]
        attn = self.bmm_qk(q * self.scale, k)
        if self.mask is not None:
            attn = self.mask(attn, base)
        out = ops.transpose(self.bmm_av(self.softmax(attn), v), (0, 2, 1, 3)).reshape(b, n, self.in_dim)
        out = self.proj_drop(self.proj(out))
        if nh == 1:
            return v.reshape(b, n, hd) + out
        return out + x


class Block(nn.Cell):
    def __init__(self, dim, num_heads, mlp_ratio=2.0, qkv_bias=False, drop=0.0, drop_path=0.0, gmm=False,
                 num_kernels=C.NUM_KERNELS):
        super().__init__()
        self.norm1 = L.LayerNorm(dim)
        self.attn = Attention(dim, num_heads, dim, qkv_bias, drop, gmm, num_kernels)
        self.drop_path = L.DropPath(drop_path)
        self.norm2 = L.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop=drop)

    def construct(self, x, base):
        x = x + self.drop_path(self.attn(self.norm1(x), base))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class Token_transformer(nn.Cell):  # noqa: N801
    def __init__(self, dim, in_dim, grid, mlp_ratio=1.0, drop=0.0, gmm=False, num_kernels=C.NUM_KERNELS):
        super().__init__()
        self.grid = grid
        self.norm1 = L.LayerNorm(dim)
        self.mask = base_mask_parameter(grid ** 2)
        self.attn = Attention(dim, 1, in_dim, False, drop, gmm, num_kernels)
        self.drop_path = L.Identity()  # the reference's Token_transformer is built with drop_path 0
        self.norm2 = L.LayerNorm(in_dim)
        self.mlp = Mlp(in_dim, int(in_dim * mlp_ratio), in_dim, drop)

    def construct(self, x):
        x = self.attn(self.norm1(x), self.mask)
        return x + self.drop_path(self.mlp(self.norm2(x)))


class T2T_module(nn.Cell):  # noqa: N801
    def __init__(self, img_size=32, in_chans=3, embed_dim=256, token_dim=64, drop=0.0, gmm=False,
                 num_kernels=C.NUM_KERNELS):
        super().__init__()
        grids = t2t_grids(img_size)
        self.soft_split = _SoftSplit()
        self.attention1 = Token_transformer(in_chans * 9, token_dim, grids[0], 1.0, drop, gmm, num_kernels)
        self.attention2 = (Token_transformer(token_dim * 9, token_dim, grids[1], 1.0, drop, gmm, num_kernels)
                           if len(grids) == 3 else None)
        self.grids = grids
        self.num_patches = grids[-1] ** 2
        self.norm = L.LayerNorm(token_dim * 9)  # never used (as in the reference)
        self.project = L.Linear(token_dim * 9, embed_dim)

    def construct(self, x):
        x = self.attention1(self.soft_split(x))
        x = self.soft_split(tokens_to_map(x, self.grids[0]))
        if self.attention2 is not None:
            x = self.soft_split(tokens_to_map(self.attention2(x), self.grids[1]))
        return self.project(x)


class T2T(nn.Cell):
    """See ``pt.t2t.T2T``: the same arguments and the same function."""

    def __init__(self, img_size=32, num_classes=10, in_chans=3, embed_dim=256, depth=12, num_heads=4, mlp_ratio=2.0,
                 qkv_bias=False, token_dim=64, drop_rate=0.0, drop_path_rate=C.STOCHASTIC_DEPTH, gmm=False,
                 num_kernels=C.NUM_KERNELS):
        super().__init__()
        self.img_size, self.in_chans, self.num_classes = img_size, in_chans, num_classes
        self.num_features = self.embed_dim = embed_dim
        self.tokens_to_token = T2T_module(img_size, in_chans, embed_dim, token_dim, drop_rate, gmm, num_kernels)
        num_patches = self.tokens_to_token.num_patches
        self.grid = self.tokens_to_token.grids[-1]
        self.cls_token = ms.Parameter(ms.Tensor(np.zeros((1, 1, embed_dim), np.float32)), name="cls_token")
        self.pos_embed = _frozen(sinusoid_table(num_patches, embed_dim), "pos_embed")
        self.pos_drop = L.Dropout(drop_rate)
        self.mask = base_mask_parameter(num_patches)
        dpr = drop_path_rates(drop_path_rate, depth)
        self.blocks = nn.CellList([
            Block(embed_dim, num_heads, mlp_ratio, qkv_bias, drop_rate, dpr[i], gmm, num_kernels)
            for i in range(depth)])
        self.norm = L.LayerNorm(embed_dim)
        self.head = L.Linear(embed_dim, num_classes) if num_classes > 0 else L.Identity()
        self.feature_info = [dict(num_chs=embed_dim, reduction=img_size // self.grid, module=f"blocks.{i}")
                             for i in range(depth)]
        L.trunc_normal_(self.cls_token, std=0.02)
        for _, cell in self.cells_and_names():
            self._init_weights(cell)

    @staticmethod
    def _init_weights(cell):
        if isinstance(cell, nn.Dense):
            L.trunc_normal_(cell.weight, std=0.02)
            if cell.bias is not None:
                L.zeros_(cell.bias)
        elif isinstance(cell, nn.LayerNorm):
            L.ones_(cell.gamma)
            L.zeros_(cell.beta)

    def reset_classifier(self, num_classes: int):
        self.num_classes = num_classes
        self.head = L.Linear(self.embed_dim, num_classes) if num_classes > 0 else L.Identity()
        self._init_weights(self.head)

    def _stem(self, x):
        C.check_input(x.shape, self.in_chans, self.img_size, "T2T")
        return self.pos_drop(self.tokens_to_token(x) + self.pos_embed)

    def forward_features(self, x):
        x = self._stem(x)
        for blk in self.blocks:
            x = blk(x, self.mask)
        return self.norm(x)

    def forward_intermediates(self, x):
        x = self._stem(x)
        feats = []
        for blk in self.blocks:
            x = blk(x, self.mask)
            feats.append(tokens_to_map(x, self.grid))
        return self.norm(x), feats

    def forward_head(self, x, pre_logits: bool = False):
        x = x.mean(1)
        return x if pre_logits else self.head(x)

    def construct(self, x):
        return self.forward_head(self.forward_features(x))
