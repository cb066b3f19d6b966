"""MindSpore layers built with PyTorch's arguments and meanings.

MindSpore's own layer defaults differ from PyTorch's in ways that change numbers silently
(see shared/specs/mindspore_vs_pytorch.md): Conv2d pads 'same' and has no bias, BatchNorm's
momentum weighs the *old* statistic, LayerNorm's epsilon is 1e-7, GELU is the tanh form, Dropout's
first argument is the keep probability, and pools default to stride 1. Every model in the zoo builds
its MindSpore layers through the constructors below, which take exactly the arguments of the
``torch.nn`` layer of the same name and return the plain ``mindspore.nn`` cell (so the converter
can recognise cells by type).

Only legacy ``mindspore.nn``/``ops`` is used: these run on CPU, GPU and Ascend, in GRAPH and
PYNATIVE mode.
"""
from __future__ import annotations

import math
from typing import Sequence, Tuple, Union

import mindspore as ms
import numpy as np
from mindspore import nn, ops
from mindspore.common import initializer as msinit

IntPair = Union[int, Tuple[int, int]]


def _pair(v: IntPair) -> Tuple[int, int]:
    return (v, v) if isinstance(v, int) else tuple(v)


def Conv2d(in_channels: int, out_channels: int, kernel_size: IntPair, stride: IntPair = 1,
           padding: IntPair = 0, dilation: IntPair = 1, groups: int = 1, bias: bool = True) -> nn.Conv2d:
    """``torch.nn.Conv2d`` semantics: explicit symmetric zero padding, bias on by default.

    The default initialisation matches PyTorch's (kaiming-uniform with a=sqrt(5), bias uniform
    in +-1/sqrt(fan_in)).
    """
    if isinstance(padding, str):
        raise ValueError("pass padding as an int or (ph, pw); string padding is not supported")
    ph, pw = _pair(padding)
    return nn.Conv2d(in_channels, out_channels, _pair(kernel_size), stride=_pair(stride), pad_mode="pad",
                     padding=(ph, ph, pw, pw), dilation=_pair(dilation), group=groups, has_bias=bias)


def Linear(in_features: int, out_features: int, bias: bool = True) -> nn.Dense:
    """``torch.nn.Linear``: weight (out, in), PyTorch's default initialisation."""
    return nn.Dense(in_features, out_features, has_bias=bias)


def BatchNorm2d(num_features: int, eps: float = 1e-5, momentum: float = 0.1, affine: bool = True) -> nn.BatchNorm2d:
    """``torch.nn.BatchNorm2d``: ``momentum`` weighs the new batch statistic, as in PyTorch.

    MindSpore's momentum weighs the old running statistic, so it is passed as ``1 - momentum``.
    """
    return nn.BatchNorm2d(num_features, eps=eps, momentum=1.0 - momentum, affine=affine)


def BatchNorm1d(num_features: int, eps: float = 1e-5, momentum: float = 0.1, affine: bool = True) -> nn.BatchNorm1d:
    return nn.BatchNorm1d(num_features, eps=eps, momentum=1.0 - momentum, affine=affine)


def LayerNorm(normalized_shape: Union[int, Sequence[int]], eps: float = 1e-5) -> nn.LayerNorm:
    """``torch.nn.LayerNorm`` over the trailing dims with PyTorch's epsilon (MindSpore's is 1e-7)."""
    shape = (normalized_shape,) if isinstance(normalized_shape, int) else tuple(normalized_shape)
    axis = -len(shape)
    return nn.LayerNorm(shape, begin_norm_axis=axis, begin_params_axis=axis, epsilon=eps)


# The exact GELU as x * sigmoid(u(x)) with u = logit(Phi(x)) = x * P(x^2): the tanh form's
# sqrt(8/pi) * (x + 0.044715 x^3) carried to degree 13, fitted (weighted by GELU's sensitivity to u) so that the
# fit is within 2.1e-7 * max(1, |GELU(x)|) of the float64 erf GELU (5.8e-7 measured through MindSpore's Sigmoid;
# PyTorch's own float32 GELU: 1.0e-6). P's coefficients, highest power of x^2 first; P > 0 for every x, so the
# sigmoid saturates the right way.
_GELU_P = (3.237514960628843e-09, -2.541216967187247e-07, 7.789358578024796e-06, -1.0977777177239419e-04,
           -6.740705632648615e-05, 7.26684683157896e-02, 1.5957692857894148)
_INV_SQRT_2PI = 0.3989422804014327


def _gelu_logit(x):
    """u(x) = logit(Phi(x)) through multiply-adds and no Erf: MindSpore 2.8's CPU ``Erf`` and ``GeLU`` kernels
    cost ~30-35 ns an element (PyTorch's GELU ~2-4 ns)."""
    x2 = x * x
    p = ((((((x2 * _GELU_P[0] + _GELU_P[1]) * x2 + _GELU_P[2]) * x2 + _GELU_P[3]) * x2 + _GELU_P[4]) * x2
          + _GELU_P[5]) * x2 + _GELU_P[6])
    return x * p


class ExactGELU(nn.GELU):
    """The exact (erf) GELU ``x * Phi(x)``, computed as ``x * sigmoid(logit(Phi(x)))`` with the logit as an odd
    polynomial (see ``_GELU_P``), and the exact derivative ``Phi(x) + x * phi(x)`` as its backward.

    The same function as ``nn.GELU(approximate=False)`` to float32 rounding, 2-3x faster than it on MindSpore 2.8's
    CPU; see docs/benchmarks.md ("Where the time goes"). A subclass, so ``isinstance(cell, nn.GELU)`` holds.
    """

    def __init__(self, approximate: bool = False):
        if approximate:
            raise ValueError("ExactGELU is the erf form; use nn.GELU(approximate=True) for the tanh form")
        super().__init__(approximate=False)

    def construct(self, x):
        return x * ops.sigmoid(_gelu_logit(x))

    def bprop(self, x, out, dout):
        pdf = ops.exp(x * x * -0.5) * _INV_SQRT_2PI
        return (dout * (ops.sigmoid(_gelu_logit(x)) + x * pdf),)


def GELU(approximate: str = "none") -> nn.GELU:
    """``torch.nn.GELU``: exact (erf) by default; MindSpore's default is the tanh form."""
    if approximate not in ("none", "tanh"):
        raise ValueError(f"approximate must be 'none' or 'tanh', got {approximate!r}")
    return nn.GELU(approximate=True) if approximate == "tanh" else ExactGELU()


def Dropout(p: float = 0.5) -> nn.Dropout:
    """``torch.nn.Dropout(p)``: p is the drop probability (MindSpore's first argument is keep_prob)."""
    return nn.Dropout(p=p)


def MaxPool2d(kernel_size: IntPair, stride: IntPair = None, padding: IntPair = 0,
              ceil_mode: bool = False) -> nn.MaxPool2d:
    """``torch.nn.MaxPool2d``: stride defaults to the kernel size, padding pads with -inf."""
    stride = kernel_size if stride is None else stride
    if _pair(padding) == (0, 0):
        return nn.MaxPool2d(_pair(kernel_size), _pair(stride), pad_mode="valid", ceil_mode=ceil_mode)
    return nn.MaxPool2d(_pair(kernel_size), _pair(stride), pad_mode="pad", padding=_pair(padding), ceil_mode=ceil_mode)


def AvgPool2d(kernel_size: IntPair, stride: IntPair = None, padding: IntPair = 0, ceil_mode: bool = False,
              count_include_pad: bool = True) -> nn.AvgPool2d:
    """``torch.nn.AvgPool2d``: stride defaults to the kernel size."""
    stride = kernel_size if stride is None else stride
    if _pair(padding) == (0, 0):
        return nn.AvgPool2d(_pair(kernel_size), _pair(stride), pad_mode="valid", ceil_mode=ceil_mode)
    return nn.AvgPool2d(_pair(kernel_size), _pair(stride), pad_mode="pad", padding=_pair(padding),
                        ceil_mode=ceil_mode, count_include_pad=count_include_pad)


ReLU = nn.ReLU
ReLU6 = nn.ReLU6
SiLU = nn.SiLU
Sigmoid = nn.Sigmoid
Identity = nn.Identity
SequentialCell = nn.SequentialCell
CellList = nn.CellList


class DropPath(nn.Cell):
    """Per-sample stochastic depth (timm's ``DropPath``): identity in eval mode and when p == 0."""

    def __init__(self, drop_prob: float = 0.0):
        super().__init__()
        self.drop_prob = float(drop_prob)
        self.dropout = nn.Dropout(p=self.drop_prob) if self.drop_prob > 0 else None

    def construct(self, x):
        if self.dropout is None or not self.training:
            return x
        mask_shape = (x.shape[0],) + (1,) * (x.ndim - 1)
        # Dropout of a ones tensor is a 0 / (1/keep) mask: the same scaling timm applies.
        return x * self.dropout(ops.ones(mask_shape, x.dtype))


# --- initialisers with torch.nn.init's meanings ------------------------------------------------

_NORMS = (nn.BatchNorm2d, nn.BatchNorm1d, nn.LayerNorm)
_PT_LEAF = {"gamma": "weight", "beta": "bias"}


def pt_named_parameters(net: nn.Cell):
    """``(PyTorch state-dict name, parameter)`` for every parameter of ``net``, so an init keyed on the
    PyTorch twin's names runs the same on both twins (a norm's gamma/beta read weight/bias)."""
    for prefix, cell in net.cells_and_names():
        norm = isinstance(cell, _NORMS)
        for local, param in cell._params.items():
            leaf = _PT_LEAF.get(local, local) if norm else local
            yield (f"{prefix}.{leaf}" if prefix else leaf), param


def _fill(param: ms.Parameter, init) -> None:
    param.set_data(msinit.initializer(init, param.shape, param.dtype))


def kaiming_normal_(param: ms.Parameter, mode: str = "fan_in", nonlinearity: str = "relu") -> None:
    """``torch.nn.init.kaiming_normal_`` (a=0): std = gain / sqrt(fan), fans as PyTorch computes them."""
    _fill(param, msinit.HeNormal(negative_slope=0, mode=mode, nonlinearity=nonlinearity))


def normal_(param: ms.Parameter, mean: float = 0.0, std: float = 1.0) -> None:
    _fill(param, msinit.Normal(sigma=std, mean=mean))


def trunc_normal_(param: ms.Parameter, std: float = 1.0, a: float = -2.0, b: float = 2.0) -> None:
    """timm's ``trunc_normal_(std=..)``: the bounds a, b are absolute values, as in timm."""
    _fill(param, msinit.TruncatedNormal(sigma=std, a=a, b=b))


def constant_(param: ms.Parameter, val: float) -> None:
    _fill(param, msinit.Constant(val))


def zeros_(param: ms.Parameter) -> None:
    constant_(param, 0.0)


def ones_(param: ms.Parameter) -> None:
    constant_(param, 1.0)


def fan_out_normal_(param: ms.Parameter, groups: int = 1) -> None:
    """``normal_(0, sqrt(2 / fan_out))`` with fan_out = kh*kw*out/groups (the init VAN and PVT use)."""
    out = param.shape[0]
    fan_out = out * int(np.prod(param.shape[2:])) // groups
    normal_(param, 0.0, math.sqrt(2.0 / fan_out))


def uniform_(param: ms.Parameter, a: float = 0.0, b: float = 1.0) -> None:
    """``torch.nn.init.uniform_(t, a, b)``: uniform in [a, b) (MindSpore's ``Uniform(s)`` draws from [-s, s])."""
    half = (b - a) / 2.0
    _fill(param, msinit.Uniform(half))
    param.set_data(param.value() + (a + half))


def init_fan_out_(net: nn.Cell, linear_std: float = 0.01, linear_trunc: bool = False) -> None:
    """``zoo.nn.pt.init_fan_out_`` for a MindSpore twin: convolutions ``fan_out_normal_`` with zero bias; Dense
    normal(0, ``linear_std``) or trunc-normal (absolute bounds +-2) with zero bias; BatchNorm/LayerNorm 1 / 0."""
    for _, cell in net.cells_and_names():
        if isinstance(cell, nn.Conv2d):
            fan_out_normal_(cell.weight, cell.group)
            if cell.bias is not None:
                zeros_(cell.bias)
        elif isinstance(cell, nn.Dense):
            if linear_trunc:
                trunc_normal_(cell.weight, std=linear_std, a=-2.0, b=2.0)
            else:
                normal_(cell.weight, 0.0, linear_std)
            if cell.bias is not None:
                zeros_(cell.bias)
        elif isinstance(cell, (nn.BatchNorm2d, nn.LayerNorm)):
            ones_(cell.gamma)
            zeros_(cell.beta)


def Softmax(dim: int = -1) -> nn.Softmax:
    """``torch.nn.Softmax(dim)`` (MindSpore names the argument ``axis``)."""
    return nn.Softmax(axis=dim)
