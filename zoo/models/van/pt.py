"""VAN (Visual Attention Network), PyTorch twin.

Module names and shapes follow the reference's ``models/van.py``, so its released checkpoints (the
weights under ``checkpoint['state_dict']``, no prefix) load with ``load_state_dict(strict=True)``.
The MindSpore twin in ``ms.py`` uses the same attribute names and the same operations in the same order.
"""
from __future__ import annotations

import torch
from torch import nn

from zoo.nn.pt import DropPath, init_fan_out_
from zoo.models.van import config as C


class DWConv(nn.Module):
    """Depthwise 3x3 convolution (with bias) inside the MLP."""

    def __init__(self, dim: int):
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, C.MLP_DW_KERNEL, 1, C.MLP_DW_KERNEL // 2, groups=dim, bias=True)

    def forward(self, x):
        return self.dwconv(x)


class Mlp(nn.Module):
    """fc1 (1x1) -> depthwise 3x3 -> GELU -> dropout -> fc2 (1x1) -> dropout: the activation follows the dwconv."""

    def __init__(self, in_features: int, hidden_features: int, drop: float = 0.0):
        super().__init__()
        self.fc1 = nn.Conv2d(in_features, hidden_features, 1)
        self.dwconv = DWConv(hidden_features)
        self.act = nn.GELU()  # exact (erf)
        self.fc2 = nn.Conv2d(hidden_features, in_features, 1)
        self.drop = nn.Dropout(drop)

    def forward(self, x):
        x = self.act(self.dwconv(self.fc1(x)))
        x = self.drop(x)
        x = self.fc2(x)
        return self.drop(x)


class LKA(nn.Module):
    """Large kernel attention: x * conv1(conv_spatial(conv0(x))), a plain product (no sigmoid)."""

    def __init__(self, dim: int):
        super().__init__()
        self.conv0 = nn.Conv2d(dim, dim, C.LKA_KERNEL, padding=C.LKA_PAD, groups=dim)
        self.conv_spatial = nn.Conv2d(dim, dim, C.LKA_SPATIAL_KERNEL, stride=1, padding=C.LKA_SPATIAL_PAD,
                                      groups=dim, dilation=C.LKA_SPATIAL_DILATION)
        self.conv1 = nn.Conv2d(dim, dim, 1)

    def forward(self, x):
        attn = self.conv1(self.conv_spatial(self.conv0(x)))
        return x * attn


class Attention(nn.Module):
    """proj_1 (1x1) -> GELU -> LKA -> proj_2 (1x1), plus its own residual to its (normalised) input."""

    def __init__(self, d_model: int):
        super().__init__()
        self.proj_1 = nn.Conv2d(d_model, d_model, 1)
        self.activation = nn.GELU()
        self.spatial_gating_unit = LKA(d_model)
        self.proj_2 = nn.Conv2d(d_model, d_model, 1)

    def forward(self, x):
        y = self.proj_2(self.spatial_gating_unit(self.activation(self.proj_1(x))))
        return y + x


class Block(nn.Module):
    """x + drop_path(ls1 * attn(bn1(x))), then x + drop_path(ls2 * mlp(bn2(x))); the scale comes before drop-path."""

    def __init__(self, dim: int, mlp_ratio: float = 4.0, drop: float = 0.0, drop_path: float = 0.0):
        super().__init__()
        self.norm1 = nn.BatchNorm2d(dim)
        self.attn = Attention(dim)
        self.drop_path = DropPath(drop_path)
        self.norm2 = nn.BatchNorm2d(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop)
        self.layer_scale_1 = nn.Parameter(C.LAYER_SCALE_INIT * torch.ones(dim))
        self.layer_scale_2 = nn.Parameter(C.LAYER_SCALE_INIT * torch.ones(dim))

    def forward(self, x):
        x = x + self.drop_path(self.layer_scale_1.unsqueeze(-1).unsqueeze(-1) * self.attn(self.norm1(x)))
        x = x + self.drop_path(self.layer_scale_2.unsqueeze(-1).unsqueeze(-1) * self.mlp(self.norm2(x)))
        return x


class OverlapPatchEmbed(nn.Module):
    """Strided convolution (with bias) -> BatchNorm2d."""

    def __init__(self, patch_size: int, stride: int, padding: int, in_chans: int, embed_dim: int):
        super().__init__()
        self.proj = nn.Conv2d(in_chans, embed_dim, patch_size, stride=stride, padding=padding)
        self.norm = nn.BatchNorm2d(embed_dim)

    def forward(self, x):
        return self.norm(self.proj(x))


class VAN(nn.Module):
    """Visual Attention Network (``VAN`` of the reference, as its ``van_b*`` functions build it).

    ``drop_rate`` is the dropout inside every MLP (the reference has no dropout before the head);
    ``drop_path_rate`` is spread linearly over all blocks of all stages. ``forward_features`` returns
    the last stage's tokens (B, H*W, C) after its LayerNorm; ``forward_head`` averages them and
    applies ``head`` (the reference's ``forward_features`` includes that average).
    """

    def __init__(self, embed_dims=(64, 128, 320, 512), depths=(3, 3, 12, 3), mlp_ratios=C.MLP_RATIOS,
                 num_classes=1000, in_chans=3, drop_rate=0.0, drop_path_rate=0.0, ln_eps=C.LN_EPS):
        super().__init__()
        plan = C.van_plan(embed_dims, depths, mlp_ratios, in_chans, drop_path_rate)
        self.num_classes, self.in_chans = num_classes, in_chans
        self.depths, self.num_stages = tuple(depths), C.NUM_STAGES
        for st in plan:
            setattr(self, f"patch_embed{st.index + 1}", OverlapPatchEmbed(*st.patch, st.in_chs, st.dim))
            setattr(self, f"block{st.index + 1}",
                    nn.ModuleList([Block(st.dim, st.mlp_ratio, drop_rate, dp) for dp in st.drop_paths]))
            setattr(self, f"norm{st.index + 1}", nn.LayerNorm(st.dim, eps=ln_eps))
        self.num_features = embed_dims[3]
        self.head = nn.Linear(embed_dims[3], num_classes) if num_classes > 0 else nn.Identity()
        self._init_weights()

    def reset_classifier(self, num_classes: int) -> None:
        """A new ``head`` for ``num_classes`` (0: none, the pooled features), initialised as the model's."""
        self.num_classes = num_classes
        self.head = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()
        if num_classes > 0:
            nn.init.trunc_normal_(self.head.weight, std=0.02, a=-2.0, b=2.0)
            nn.init.zeros_(self.head.bias)

    def _init_weights(self):
        """The reference's: conv normal(0, sqrt(2 / fan_out)) with fan_out = kh*kw*out/groups and zero bias,
        Linear trunc_normal(std 0.02) (timm's absolute bounds +-2) and zero bias, LayerNorm 1/0,
        BatchNorm PyTorch's 1/0, layer scales 1e-2 (set in ``Block``)."""
        init_fan_out_(self, linear_std=0.02, linear_trunc=True)

    def forward_features(self, x):
        C.check_input(x.shape, self.in_chans)
        B = x.shape[0]
        for i in range(self.num_stages):
            x = getattr(self, f"patch_embed{i + 1}")(x)
            _, _, H, W = x.shape
            for blk in getattr(self, f"block{i + 1}"):
                x = blk(x)
            x = getattr(self, f"norm{i + 1}")(x.flatten(2).transpose(1, 2))  # (B, H*W, C): LayerNorm per token
            if i != self.num_stages - 1:
                x = x.reshape(B, H, W, -1).permute(0, 3, 1, 2).contiguous()
        return x

    def forward_head(self, x, pre_logits: bool = False):
        x = x.mean(dim=1)
        return x if pre_logits else self.head(x)

    def forward(self, x):
        return self.forward_head(self.forward_features(x))

    @property
    def feature_info(self):
        """The four stage outputs (see ``config.feature_info``)."""
        return C.feature_info([getattr(self, f"patch_embed{i + 1}").proj.out_channels for i in range(self.num_stages)])

    def forward_intermediates(self, x):
        """(``forward_features(x)``, [each stage's output after its LayerNorm as a (B, C, H, W) map])."""
        C.check_input(x.shape, self.in_chans)
        B, feats = x.shape[0], []
        for i in range(self.num_stages):
            x = getattr(self, f"patch_embed{i + 1}")(x)
            _, _, H, W = x.shape
            for blk in getattr(self, f"block{i + 1}"):
                x = blk(x)
            x = getattr(self, f"norm{i + 1}")(x.flatten(2).transpose(1, 2))
            x = x.reshape(B, H, W, -1).permute(0, 3, 1, 2).contiguous()
            feats.append(x)
        return x.flatten(2).transpose(1, 2), feats
