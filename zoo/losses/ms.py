"""AT and KD losses, MindSpore (see ``zoo.losses`` for the definitions).

Plain functions of legacy ``ops`` with CPU kernels; called from a cell's ``construct`` they compile into its
GRAPH. The L2 normalisation is written out (``ops.L2Normalize``'s epsilon is 1e-4 on the squared norm), and
every map is computed in float32.
"""
from __future__ import annotations

import mindspore as ms
from mindspore import ops

from zoo.losses import EPS, check_mode


def _f32(x):
    """At least float32 (float16 activations under amp are upcast; float64 stays)."""
    return x if x.dtype == ms.float64 else ops.cast(x, ms.float32)


def _normalize(q):
    """``F.normalize(q, p=2, dim=1, eps=1e-12)``: q / max(||q||, eps) = q / sqrt(max(||q||^2, eps^2))."""
    n2 = (q * q).sum(axis=1, keepdims=True)
    return q / ops.sqrt(ops.maximum(n2, EPS * EPS))


def attention_map(x, mode: str = "code"):
    """(B, C, H, W) -> (B, H*W), float32, L2-normalised per sample."""
    check_mode(mode)
    x = _f32(x)
    sq = x * x
    q = sq.mean(axis=1) if mode == "code" else sq.sum(axis=1)
    return _normalize(q.reshape(x.shape[0], -1))


def at_loss(f_s, f_t, mode: str = "code"):
    """The AT loss of one pair of maps (same spatial size; channels may differ)."""
    if f_s.shape[0] != f_t.shape[0] or f_s.shape[2:] != f_t.shape[2:]:
        raise ValueError(f"at_loss: student map {f_s.shape} and teacher map {f_t.shape} need the same batch and "
                         "spatial size (pool the larger one with pool_to)")
    d = attention_map(f_s, mode) - attention_map(f_t, mode)
    if mode == "code":
        return (d * d).mean()
    n2 = (d * d).sum(axis=1)
    pos = n2 > 0
    # ||d||, with a zero (not NaN) gradient where the two maps are equal, as torch.norm's backward gives
    norm = ops.select(pos, ops.sqrt(ops.select(pos, n2, ops.ones_like(n2))), ops.zeros_like(n2))
    return norm.sum() / d.shape[0]


def _targets(labels, n: int, label_smoothing: float, dtype):
    if labels.ndim == 1:
        labels = ops.one_hot(ops.cast(labels, ms.int32), n, ms.Tensor(1.0, dtype), ms.Tensor(0.0, dtype))
    labels = ops.cast(labels, dtype)
    if label_smoothing:
        labels = labels * (1.0 - label_smoothing) + label_smoothing / n
    return labels


def log_softmax(z):
    """``z - max - log(sum(exp(z - max)))`` over axis 1, written out: on CPU ``ops.log_softmax`` is ~4e-6
    relative off float64 (torch's ~4e-7), which the KL term multiplies by T^2."""
    zm = z - z.max(axis=1, keepdims=True)
    return zm - ops.log(ops.exp(zm).sum(axis=1, keepdims=True))


def kd_terms(y_s, y_t, labels, temperature: float = 4.0, label_smoothing: float = 0.0):
    """(KL term, CE term) of ``kd_loss``: ``KL_sum(q || p) * T^2 / batch`` and the cross-entropy."""
    y_s, y_t = _f32(y_s), _f32(y_t)
    p = log_softmax(y_s / temperature)
    log_q = log_softmax(y_t / temperature)
    q = ops.exp(log_q)
    kl = (q * (log_q - p)).sum() * (temperature ** 2) / y_s.shape[0]
    ce = -(_targets(labels, y_s.shape[1], label_smoothing, y_s.dtype) * log_softmax(y_s)).sum(axis=1).mean()
    return kl, ce


def kd_loss(y_s, y_t, labels, temperature: float = 4.0, alpha: float = 0.9, label_smoothing: float = 0.0):
    kl, ce = kd_terms(y_s, y_t, labels, temperature, label_smoothing)
    return kl * alpha + ce * (1.0 - alpha)


def pool_to(x, size):
    """Adaptive average pooling to ``size`` = (h, w); the identity when the map already has it."""
    if x.shape[2] == size[0] and x.shape[3] == size[1]:
        return x
    return ops.AdaptiveAvgPool2D((int(size[0]), int(size[1])))(x)
