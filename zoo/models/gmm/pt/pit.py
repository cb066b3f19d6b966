"""PiT for small images (GMM repo ``models/pit.py``), PyTorch twin.

Module names (the ``nn.Sequential`` indices and ``PreNorm.fn`` wrappers included) and construction order
are the reference's, so its state dicts load strictly and one seed gives the same initial weights. What
the reference computes, kept here:

- patch embedding Conv2d(in_chans, 96, p, stride p) (bias), class token prepended, ``pos_embedding``
  (1, N + 1, 96) added once;
- ``layers``: Transformer, Pool, Transformer, Pool, Transformer. Each Transformer owns the base mask of its
  grid (``layers.S.mask``: 16x16, 8x8, 4x4 tokens at the default sizes), shared by its attention layers;
  the Gaussian mixture mask multiplies only the patch-patch block of the scaled logits
  (``dots[:, :, 1:, 1:]``): the class token's row and column are untouched;
- pre-norm layers, ``to_qkv`` without bias, scale ``dim_head^-0.5`` (48 in every stage), FF hidden 2 x dim;
- Pool: class token through ``cls_ff`` Linear(d, 2d); patch tokens as an image through a depthwise
  Conv2d(d, 2d, 3, stride 2, pad 1, groups d) and a 1x1 Conv2d(2d, 2d);
- stochastic depth CONSTANT (one DropPath per Transformer, reused for every branch);
- head ``mlp_head`` = [LayerNorm, Linear] on the class token; xavier-normal init of every Linear and
  Conv2d (bias 0), ``pos_embedding`` and ``cls_token`` standard normal.

The input must be ``img_size`` x ``img_size`` (the position embedding fixes the grid).
"""
from __future__ import annotations

import torch
from torch import nn

from zoo.models.gmm import config as C
from zoo.models.gmm.pt.common import FeedForward, GaussianMixtureMask, PreNorm, base_mask_parameter, tokens_to_map
from zoo.nn.pt import DropPath


def init_weights(m):
    if isinstance(m, (nn.Linear, nn.Conv2d)):
        nn.init.xavier_normal_(m.weight)
        if m.bias is not None:
            nn.init.constant_(m.bias, 0)
    elif isinstance(m, nn.LayerNorm):
        nn.init.constant_(m.bias, 0)
        nn.init.constant_(m.weight, 1.0)


class ToTokens(nn.Module):
    """(B, C, H, W) -> (B, H*W, C), row-major (einops ``'b c h w -> b (h w) c'``; no parameters)."""

    def forward(self, x):
        return x.flatten(2).transpose(1, 2)


class Attention(nn.Module):
    """to_qkv (no bias) -> q.k * dim_head^-0.5 -> [GMM on the patch-patch block] -> softmax -> @ v -> to_out."""

    def __init__(self, dim, num_patches, heads=8, dim_head=32, dropout=0.0, gmm=False, num_kernels=C.NUM_KERNELS,
                 mask=None):
        super().__init__()
        inner_dim = dim_head * heads
        self.heads, self.dim, self.inner_dim, self.num_patches = heads, dim, inner_dim, num_patches
        self.scale = dim_head ** -0.5
        self.attend = nn.Softmax(dim=-1)
        self.to_qkv = nn.Linear(dim, inner_dim * 3, bias=False)
        init_weights(self.to_qkv)  # as the reference (its apply(init_weights) draws again later)
        if heads == 1 and dim_head == dim:
            raise ValueError("PiT attention without an output projection (1 head of the full width) is not built here")
        self.to_out = nn.Sequential(nn.Linear(inner_dim, dim), nn.Dropout(dropout))
        self.mask = GaussianMixtureMask(heads, num_kernels, mask) if gmm else None

    def forward(self, x):
        b, n, _ = x.shape
        h = self.heads
        q, k, v = (t.reshape(b, n, h, -1).transpose(1, 2) for t in self.to_qkv(x).chunk(3, dim=-1))
        dots = (q @ k.transpose(-1, -2)) * self.scale
        if self.mask is not None:
            dots[:, :, 1:, 1:] = self.mask(dots[:, :, 1:, 1:].clone())
        out = self.attend(dots) @ v
        return self.to_out(out.transpose(1, 2).reshape(b, n, -1))


class Transformer(nn.Module):
    """``depth`` pre-norm layers on a ``grid`` x ``grid`` patch grid plus the class token; owns the grid's base mask."""

    def __init__(self, dim, grid, depth, heads, dim_head, mlp_dim, dropout=0.0, stochastic_depth=0.0, gmm=False,
                 num_kernels=C.NUM_KERNELS):
        super().__init__()
        self.grid = grid
        num_tokens = grid ** 2 + 1
        self.layers = nn.ModuleList([])
        self.mask = base_mask_parameter(grid ** 2)
        for _ in range(depth):
            self.layers.append(nn.ModuleList([
                PreNorm(dim, Attention(dim, num_tokens, heads, dim_head, dropout, gmm, num_kernels, self.mask)),
                PreNorm(dim, FeedForward(dim, mlp_dim, dropout))]))
        self.drop_path = DropPath(stochastic_depth) if stochastic_depth > 0 else nn.Identity()

    def forward(self, x):
        for attn, ff in self.layers:
            x = self.drop_path(attn(x)) + x
            x = self.drop_path(ff(x)) + x
        return x


class DepthWiseConv2d(nn.Module):
    def __init__(self, img_size, dim_in, dim_out, kernel_size, padding, stride, bias=True):
        super().__init__()
        self.dim_in, self.dim_out, self.kernel_size, self.out_size = dim_in, dim_out, kernel_size, img_size // 2
        self.net = nn.Sequential(
            nn.Conv2d(dim_in, dim_out, kernel_size, padding=padding, groups=dim_in, stride=stride, bias=bias),
            nn.Conv2d(dim_out, dim_out, 1, bias=bias))

    def forward(self, x):
        return self.net(x)


class Pool(nn.Module):
    """Class token: Linear(d, 2d); patch tokens: depthwise 3x3 / 2 conv to 2d, then 1x1 conv."""

    def __init__(self, img_size, dim):
        super().__init__()
        self.downsample = DepthWiseConv2d(img_size, dim, dim * 2, kernel_size=3, stride=2, padding=1)
        self.cls_ff = nn.Linear(dim, dim * 2)
        self.dim, self.grid = dim, img_size

    def forward(self, x):
        cls_token, tokens = x[:, :1], x[:, 1:]
        b, n, c = tokens.shape
        tokens = self.downsample(tokens.transpose(1, 2).reshape(b, c, self.grid, self.grid))
        return torch.cat((self.cls_ff(cls_token), tokens.flatten(2).transpose(1, 2)), dim=1)


class PiT(nn.Module):
    """The GMM repo's ``PiT`` as ``create_model('pit')`` builds it (see the module docstring).

    ``depth``/``heads``: per stage; ``dim`` doubles at each Pool. ``drop_rate``: the reference's ``dropout``
    (FF and attention output) and ``emb_dropout`` (0 in the reference). ``num_classes=0``: ``mlp_head.1`` is
    an identity (``forward`` returns the normalised class token).
    """

    def __init__(self, img_size=32, patch_size=2, num_classes=10, in_chans=3, dim=96, depth=(2, 6, 4),
                 heads=(2, 4, 8), dim_head=48, mlp_dim_ratio=2, drop_rate=0.0, drop_path_rate=C.STOCHASTIC_DEPTH,
                 gmm=False, num_kernels=C.NUM_KERNELS):
        super().__init__()
        plan = C.pit_plan(img_size, patch_size, dim, depth, heads)
        self.img_size, self.in_chans, self.num_classes = img_size, in_chans, num_classes
        self.to_patch_embedding = nn.Sequential(nn.Conv2d(in_chans, dim, patch_size, patch_size), ToTokens())
        self.pos_embedding = nn.Parameter(torch.randn(1, plan[0].grid ** 2 + 1, dim))
        self.cls_token = nn.Parameter(torch.randn(1, 1, dim))
        self.dropout = nn.Dropout(drop_rate)
        self.layers = nn.ModuleList([])
        for st in plan:
            self.layers.append(Transformer(st.dim, st.grid, st.depth, st.heads, dim_head, st.dim * mlp_dim_ratio,
                                           drop_rate, drop_path_rate, gmm, num_kernels))
            if st.pool:
                self.layers.append(Pool(st.grid, st.dim))
        self.feature_info = [dict(num_chs=st.dim, reduction=st.reduction, module=f"layers.{st.layer}") for st in plan]
        self.num_features = dim = plan[-1].dim
        self.mlp_head = nn.Sequential(nn.LayerNorm(dim),
                                      nn.Linear(dim, num_classes) if num_classes > 0 else nn.Identity())
        self.apply(init_weights)

    def reset_classifier(self, num_classes: int):
        self.num_classes = num_classes
        head = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()
        if num_classes > 0:
            init_weights(head)
        self.mlp_head[1] = head

    def _stem(self, x):
        C.check_input(tuple(x.shape), self.in_chans, self.img_size, "PiT")
        x = self.to_patch_embedding(x)
        x = torch.cat((self.cls_token.expand(x.shape[0], -1, -1), x), dim=1)
        return self.dropout(x + self.pos_embedding)

    def forward_features(self, x):
        """(B, in_chans, img, img) -> the last stage's tokens (B, 1 + 16, num_features), class token first."""
        x = self._stem(x)
        for layer in self.layers:
            x = layer(x)
        return x

    def forward_intermediates(self, x):
        """(forward_features(x), [each Transformer stage's patch tokens as (B, C, H, W)])."""
        x = self._stem(x)
        feats = []
        for layer in self.layers:
            x = layer(x)
            if isinstance(layer, Transformer):
                feats.append(tokens_to_map(x[:, 1:]))
        return x, feats

    def forward_head(self, x, pre_logits: bool = False):
        x = self.mlp_head[0](x[:, 0])
        return x if pre_logits else self.mlp_head[1](x)

    def forward(self, x):
        return self.forward_head(self.forward_features(x))
