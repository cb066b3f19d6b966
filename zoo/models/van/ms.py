"""VAN (Visual Attention Network), MindSpore twin.

Same attribute names, operations and order as ``pt.py``; layers come from ``zoo.nn.ms`` so they carry
PyTorch's defaults (explicit padding and bias, BatchNorm momentum, LayerNorm epsilon, exact GELU,
dropout probability).
"""
from __future__ import annotations

import mindspore as ms
import numpy as np
from mindspore import nn, ops

from zoo.nn import ms as L
from zoo.models.van import config as C


class DWConv(nn.Cell):
    def __init__(self, dim: int):
        super().__init__()
        self.dwconv = L.Conv2d(dim, dim, C.MLP_DW_KERNEL, 1, C.MLP_DW_KERNEL // 2, groups=dim, bias=True)

    def construct(self, x):
        return self.dwconv(x)


class Mlp(nn.Cell):
    def __init__(self, in_features: int, hidden_features: int, drop: float = 0.0):
        super().__init__()
        self.fc1 = L.Conv2d(in_features, hidden_features, 1)
        self.dwconv = DWConv(hidden_features)
        self.act = L.GELU("none")
        self.fc2 = L.Conv2d(hidden_features, in_features, 1)
        self.drop = L.Dropout(drop)

    def construct(self, x):
        x = self.act(self.dwconv(self.fc1(x)))
        x = self.drop(x)
        x = self.fc2(x)
        return self.drop(x)


class LKA(nn.Cell):
    def __init__(self, dim: int):
        super().__init__()
        self.conv0 = L.Conv2d(dim, dim, C.LKA_KERNEL, padding=C.LKA_PAD, groups=dim)
        self.conv_spatial = L.Conv2d(dim, dim, C.LKA_SPATIAL_KERNEL, stride=1, padding=C.LKA_SPATIAL_PAD,
                                     groups=dim, dilation=C.LKA_SPATIAL_DILATION)
        self.conv1 = L.Conv2d(dim, dim, 1)

    def construct(self, x):
        attn = self.conv1(self.conv_spatial(self.conv0(x)))
        return x * attn


class Attention(nn.Cell):
    def __init__(self, d_model: int):
        super().__init__()
        self.proj_1 = L.Conv2d(d_model, d_model, 1)
        self.activation = L.GELU("none")
        self.spatial_gating_unit = LKA(d_model)
        self.proj_2 = L.Conv2d(d_model, d_model, 1)

    def construct(self, x):
        y = self.proj_2(self.spatial_gating_unit(self.activation(self.proj_1(x))))
        return y + x


class Block(nn.Cell):
    def __init__(self, dim: int, mlp_ratio: float = 4.0, drop: float = 0.0, drop_path: float = 0.0):
        super().__init__()
        self.norm1 = L.BatchNorm2d(dim)
        self.attn = Attention(dim)
        self.drop_path = L.DropPath(drop_path)
        self.norm2 = L.BatchNorm2d(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop)
        # named as the PyTorch attributes (MindSpore prefixes them with the cell's path)
        self.layer_scale_1 = ms.Parameter(ms.Tensor(np.full((dim,), C.LAYER_SCALE_INIT, np.float32)),
                                          name="layer_scale_1")
        self.layer_scale_2 = ms.Parameter(ms.Tensor(np.full((dim,), C.LAYER_SCALE_INIT, np.float32)),
                                          name="layer_scale_2")

    def construct(self, x):
        ls1 = self.layer_scale_1.reshape(-1, 1, 1)
        ls2 = self.layer_scale_2.reshape(-1, 1, 1)
        x = x + self.drop_path(ls1 * self.attn(self.norm1(x)))
        x = x + self.drop_path(ls2 * self.mlp(self.norm2(x)))
        return x


class OverlapPatchEmbed(nn.Cell):
    def __init__(self, patch_size: int, stride: int, padding: int, in_chans: int, embed_dim: int):
        super().__init__()
        self.proj = L.Conv2d(in_chans, embed_dim, patch_size, stride=stride, padding=padding)
        self.norm = L.BatchNorm2d(embed_dim)

    def construct(self, x):
        return self.norm(self.proj(x))


class VAN(nn.Cell):
    """See ``pt.VAN``; the same arguments and the same function."""

    def __init__(self, embed_dims=(64, 128, 320, 512), depths=(3, 3, 12, 3), mlp_ratios=C.MLP_RATIOS,
                 num_classes=1000, in_chans=3, drop_rate=0.0, drop_path_rate=0.0, ln_eps=C.LN_EPS):
        super().__init__()
        plan = C.van_plan(embed_dims, depths, mlp_ratios, in_chans, drop_path_rate)
        self.num_classes, self.in_chans = num_classes, in_chans
        self.depths, self.num_stages = tuple(depths), C.NUM_STAGES
        for st in plan:
            setattr(self, f"patch_embed{st.index + 1}", OverlapPatchEmbed(*st.patch, st.in_chs, st.dim))
            setattr(self, f"block{st.index + 1}",
                    L.CellList([Block(st.dim, st.mlp_ratio, drop_rate, dp) for dp in st.drop_paths]))
            setattr(self, f"norm{st.index + 1}", L.LayerNorm(st.dim, eps=ln_eps))
        self.num_features = embed_dims[3]
        self.head = L.Linear(embed_dims[3], num_classes) if num_classes > 0 else L.Identity()
        self._init_weights()

    def reset_classifier(self, num_classes: int) -> None:
        """See ``pt.VAN.reset_classifier``."""
        self.num_classes = num_classes
        self.head = L.Linear(self.num_features, num_classes) if num_classes > 0 else L.Identity()
        if num_classes > 0:
            L.trunc_normal_(self.head.weight, std=0.02, a=-2.0, b=2.0)
            L.zeros_(self.head.bias)

    def _init_weights(self):
        """The reference's init (see ``pt.VAN._init_weights``)."""
        L.init_fan_out_(self, linear_std=0.02, linear_trunc=True)

    def forward_features(self, x):
        C.check_input(x.shape, self.in_chans)
        x = self._stage(x, self.patch_embed1, self.block1, self.norm1, True)
        x = self._stage(x, self.patch_embed2, self.block2, self.norm2, True)
        x = self._stage(x, self.patch_embed3, self.block3, self.norm3, True)
        return self._stage(x, self.patch_embed4, self.block4, self.norm4, False)

    def _stage(self, x, patch_embed, blocks, norm, to_map: bool):
        x = patch_embed(x)
        B, Cc, H, W = x.shape
        for blk in blocks:
            x = blk(x)
        x = norm(ops.transpose(x.reshape(B, Cc, H * W), (0, 2, 1)))  # (B, H*W, C): LayerNorm per token
        if to_map:
            x = ops.transpose(x.reshape(B, H, W, Cc), (0, 3, 1, 2))
        return x

    def forward_head(self, x, pre_logits: bool = False):
        x = x.mean(1)
        return x if pre_logits else self.head(x)

    def construct(self, x):
        return self.forward_head(self.forward_features(x))

    @property
    def feature_info(self):
        """See ``pt.VAN.feature_info``."""
        return C.feature_info([getattr(self, f"patch_embed{i + 1}").proj.out_channels for i in range(self.num_stages)])

    def forward_intermediates(self, x):
        """See ``pt.VAN.forward_intermediates``."""
        C.check_input(x.shape, self.in_chans)
        x1 = self._stage(x, self.patch_embed1, self.block1, self.norm1, True)
        x2 = self._stage(x1, self.patch_embed2, self.block2, self.norm2, True)
        x3 = self._stage(x2, self.patch_embed3, self.block3, self.norm3, True)
        x4 = self._stage(x3, self.patch_embed4, self.block4, self.norm4, True)
        B, Cc, H, W = x4.shape
        return ops.transpose(x4.reshape(B, Cc, H * W), (0, 2, 1)), [x1, x2, x3, x4]
