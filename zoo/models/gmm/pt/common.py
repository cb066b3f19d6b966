"""Pieces the GMM family's PyTorch twins share: the Gaussian mixture mask and the pre-norm MLP blocks.

Names follow the reference (``models/gmm.py``, and the ``PreNorm``/``FeedForward`` of ``models/vit.py``,
``cait.py`` and ``pit.py``), so that its state dicts load strictly.

The frozen base mask is one ``nn.Parameter(requires_grad=False)`` owned by the model (or by a stage), and
every attention layer's ``GaussianMixtureMask`` holds the *same* tensor as its ``mask``: the state dict
lists it once per holder, as the reference's does. The converter maps all those names to the one MindSpore
parameter of the owner and checks, on loading, that the copies in a file are equal.
"""
from __future__ import annotations

import torch
from torch import nn

from zoo.models.gmm import config as C


def base_mask_parameter(num_patches: int) -> nn.Parameter:
    """The reference's ``nn.Parameter(On_attention_gaussian_mask(N), requires_grad=False)``, (1, 1, N, N)."""
    return nn.Parameter(torch.from_numpy(C.base_mask(num_patches)), requires_grad=False)


class GaussianMixtureMask(nn.Module):
    """``Gaussian_Mixture_Mask``: ``G = sum_k alpha_k * mask ** (1 / (sigma_k^2 + 1e-5))``, returns ``G * x``.

    ``x`` are the scaled attention logits (B, heads, N, N); the mask multiplies them before the softmax (no
    additive bias: where the base mask is 0 the logit becomes 0, and a negative alpha flips signs).
    ``sigma`` ~ randn * 10 + 10 and ``alpha`` ~ randn * 2, shape (K, heads, 1, 1), drawn in that order.
    ``mask`` is the shared frozen base mask (``base_mask_parameter``), not a copy.
    """

    def __init__(self, num_heads: int, num_kernels: int, mask: nn.Parameter):
        super().__init__()
        self.num_kernels = num_kernels
        self.sigma = nn.Parameter(torch.randn(num_kernels, num_heads, 1, 1) * C.SIGMA_INIT[1] + C.SIGMA_INIT[0])
        self.alpha = nn.Parameter(torch.randn(num_kernels, num_heads, 1, 1) * C.ALPHA_STD)
        self.mask = mask

    def weights(self) -> torch.Tensor:
        """G, (heads, N, N). PyTorch's pow gives a zero exponent gradient where the base mask is 0."""
        return torch.sum(self.alpha * self.mask ** (1 / (self.sigma ** 2 + C.MASK_EPS)), 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.weights() * x


class PreNorm(nn.Module):
    """``fn(LayerNorm(x), **kwargs)``: keyword arguments (CaiT's ``context``) reach ``fn`` un-normalised."""

    def __init__(self, dim: int, fn: nn.Module):
        super().__init__()
        self.norm = nn.LayerNorm(dim, eps=C.LN_EPS)
        self.fn = fn

    def forward(self, x, **kwargs):
        return self.fn(self.norm(x), **kwargs)


class FeedForward(nn.Module):
    """``net = [Linear(dim, hidden), GELU (exact), Dropout, Linear(hidden, dim), Dropout]`` (indices 0 and 3)."""

    def __init__(self, dim: int, hidden_dim: int, dropout: float = 0.0):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim, hidden_dim), nn.GELU(), nn.Dropout(dropout),
                                 nn.Linear(hidden_dim, dim), nn.Dropout(dropout))

    def forward(self, x):
        return self.net(x)


def xavier_init_(model: nn.Module) -> None:
    """The reference's ``init_weights`` applied to every module (ViT, CaiT, PiT): Linear and Conv2d weights
    xavier_normal, biases 0, LayerNorm 1/0."""
    for m in model.modules():
        if isinstance(m, (nn.Linear, nn.Conv2d)):
            nn.init.xavier_normal_(m.weight)
            if m.bias is not None:
                nn.init.constant_(m.bias, 0)
        elif isinstance(m, nn.LayerNorm):
            nn.init.constant_(m.bias, 0)
            nn.init.constant_(m.weight, 1.0)


def tokens_to_map(tokens: torch.Tensor) -> torch.Tensor:
    """(B, N, C) patch tokens on a row-major sqrt(N) x sqrt(N) grid -> (B, C, H, W)."""
    B, N, Cc = tokens.shape
    s = int(round(N ** 0.5))
    return tokens.transpose(1, 2).reshape(B, Cc, s, s)
