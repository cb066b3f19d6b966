"""Pieces the GMM family's MindSpore twins share (see ``zoo.models.gmm.pt.common``).

The frozen base mask is one ``Parameter(requires_grad=False)`` on its owner (the model, or a stage) and is
passed to the attention cells in ``construct``: MindSpore stores it once, where PyTorch's state dict lists
it once per holder (the converter maps those names to this one parameter and checks the copies are equal).

``GaussianMixtureMask.construct(x, base)`` takes the base mask as an argument for that reason. MindSpore's
``Pow`` gives the exponent a zero gradient where the base is exactly 0, as PyTorch does (checked in both
modes by ``parity_tests/test_gmm.py::test_mask_exponent_gradient_at_zero``), so the mask is computed with
it directly. Note that MindSpore's GRAPH mode on CPU flushes denormal floats to zero; the stored base masks
hold none (their smallest non-zero value is sqrt of the smallest denormal, ~3.7e-23).
"""
from __future__ import annotations

import mindspore as ms
import numpy as np
from mindspore import nn, ops

from zoo.models.gmm import config as C
from zoo.nn import ms as L


def base_mask_parameter(num_patches: int, name: str = "mask") -> ms.Parameter:
    """The frozen (1, 1, N, N) base mask (``config.base_mask``), named as its PyTorch owner's attribute."""
    return ms.Parameter(ms.Tensor(C.base_mask(num_patches)), name=name, requires_grad=False)


def _normal_parameter(shape, name: str, std: float, mean: float = 0.0) -> ms.Parameter:
    p = ms.Parameter(ms.Tensor(np.zeros(shape, np.float32)), name=name)
    L.normal_(p, mean, std)
    return p


class GaussianMixtureMask(nn.Cell):
    """``G = sum_k alpha_k * base ** (1 / (sigma_k^2 + 1e-5))``; ``construct(x, base)`` returns ``G * x``.

    ``sigma`` ~ N(10, 10^2), ``alpha`` ~ N(0, 2^2), shape (K, heads, 1, 1), as in the PyTorch twin.
    """

    def __init__(self, num_heads: int, num_kernels: int):
        super().__init__()
        self.num_kernels = num_kernels
        shape = (num_kernels, num_heads, 1, 1)
        self.sigma = _normal_parameter(shape, "sigma", C.SIGMA_INIT[1], C.SIGMA_INIT[0])
        self.alpha = _normal_parameter(shape, "alpha", C.ALPHA_STD)

    def weights(self, base):
        """G, (heads, N, N)."""
        return (self.alpha * ops.pow(base, 1.0 / (self.sigma * self.sigma + C.MASK_EPS))).sum(0)

    def construct(self, x, base):
        return self.weights(base) * x


class PreNorm(nn.Cell):
    """``fn(LayerNorm(x), *args)``: further arguments (CaiT's context, the base mask) reach ``fn`` unchanged."""

    def __init__(self, dim: int, fn: nn.Cell):
        super().__init__()
        self.norm = L.LayerNorm(dim, eps=C.LN_EPS)
        self.fn = fn

    def construct(self, x, *args):
        return self.fn(self.norm(x), *args)


class FeedForward(nn.Cell):
    """``net = [Linear, GELU (exact), Dropout, Linear, Dropout]``, the PyTorch twin's indices."""

    def __init__(self, dim: int, hidden_dim: int, dropout: float = 0.0):
        super().__init__()
        self.net = L.SequentialCell([L.Linear(dim, hidden_dim), L.GELU("none"), L.Dropout(dropout),
                                     L.Linear(hidden_dim, dim), L.Dropout(dropout)])

    def construct(self, x):
        return self.net(x)


def normal_parameter(shape, name: str, std: float = 1.0, mean: float = 0.0) -> ms.Parameter:
    """A float32 Parameter drawn from N(mean, std^2) (the reference's ``torch.randn(...) * std + mean``)."""
    return _normal_parameter(shape, name, std, mean)


def _fans(shape):
    receptive = int(np.prod(shape[2:])) if len(shape) > 2 else 1
    return shape[1] * receptive, shape[0] * receptive


def xavier_init_(net: nn.Cell) -> None:
    """``pt.common.xavier_init_``: Dense/Conv2d weights xavier_normal (torch's fans), biases 0, LayerNorm 1/0."""
    for _, cell in net.cells_and_names():
        if isinstance(cell, (nn.Dense, nn.Conv2d)):
            fan_in, fan_out = _fans(cell.weight.shape)
            L.normal_(cell.weight, 0.0, float(np.sqrt(2.0 / (fan_in + fan_out))))
            if cell.bias is not None:
                L.zeros_(cell.bias)
        elif isinstance(cell, nn.LayerNorm):
            L.ones_(cell.gamma)
            L.zeros_(cell.beta)


def tokens_to_map(tokens, grid: int):
    """(B, N, C) patch tokens on a row-major grid x grid layout -> (B, C, grid, grid) (static shapes)."""
    B, _, Cc = tokens.shape
    return ops.transpose(tokens, (0, 2, 1)).reshape(B, Cc, grid, grid)


def batched_heads(t, heads: int):
    """'b n (h d) -> b h n d'."""
    B, N, D = t.shape
    return ops.transpose(t.reshape(B, N, heads, D // heads), (0, 2, 1, 3))


def merge_heads(t):
    """'b h n d -> b n (h d)'."""
    B, H, N, D = t.shape
    return ops.transpose(t, (0, 2, 1, 3)).reshape(B, N, H * D)
