"""AT and KD losses, PyTorch (see ``zoo.losses`` for the definitions)."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from zoo.losses import EPS, check_mode


def _f32(x: torch.Tensor) -> torch.Tensor:
    """At least float32 (half-precision activations under amp are upcast; float64 stays)."""
    return x if x.dtype == torch.float64 else x.float()


def attention_map(x: torch.Tensor, mode: str = "code") -> torch.Tensor:
    """(B, C, H, W) -> (B, H*W), float32, L2-normalised per sample."""
    check_mode(mode)
    x = _f32(x)
    q = x.pow(2).mean(1) if mode == "code" else x.pow(2).sum(1)
    return F.normalize(q.reshape(x.shape[0], -1), p=2, dim=1, eps=EPS)


def at_loss(f_s: torch.Tensor, f_t: torch.Tensor, mode: str = "code") -> torch.Tensor:
    """The AT loss of one pair of maps (same spatial size; channels may differ)."""
    if f_s.shape[0] != f_t.shape[0] or f_s.shape[2:] != f_t.shape[2:]:
        raise ValueError(f"at_loss: student map {tuple(f_s.shape)} and teacher map {tuple(f_t.shape)} need the same "
                         "batch and spatial size (pool the larger one with pool_to)")
    d = attention_map(f_s, mode) - attention_map(f_t, mode)
    if mode == "code":
        return d.pow(2).mean()
    return torch.norm(d, dim=1).sum() / d.shape[0]


def _targets(labels: torch.Tensor, n: int, label_smoothing: float, dtype) -> torch.Tensor:
    if labels.ndim == 1:
        labels = F.one_hot(labels.long(), n)
    labels = labels.to(dtype)
    return labels * (1.0 - label_smoothing) + label_smoothing / n if label_smoothing else labels


def kd_terms(y_s, y_t, labels, temperature: float = 4.0, label_smoothing: float = 0.0):
    """(KL term, CE term) of ``kd_loss``: ``KL_sum(q || p) * T^2 / batch`` and the cross-entropy."""
    y_s, y_t = _f32(y_s), _f32(y_t)
    p = F.log_softmax(y_s / temperature, dim=1)
    q = F.softmax(y_t / temperature, dim=1)
    kl = F.kl_div(p, q, reduction="sum") * (temperature ** 2) / y_s.shape[0]
    if labels.ndim == 1 and not label_smoothing:
        ce = F.cross_entropy(y_s, labels.long())
    else:
        ce = -(_targets(labels, y_s.shape[1], label_smoothing, y_s.dtype) * F.log_softmax(y_s, dim=1)).sum(1).mean()
    return kl, ce


def kd_loss(y_s, y_t, labels, temperature: float = 4.0, alpha: float = 0.9, label_smoothing: float = 0.0):
    kl, ce = kd_terms(y_s, y_t, labels, temperature, label_smoothing)
    return kl * alpha + ce * (1.0 - alpha)


def pool_to(x: torch.Tensor, size) -> torch.Tensor:
    """Adaptive average pooling to ``size`` = (h, w); the identity when the map already has it."""
    if tuple(x.shape[2:]) == tuple(size):
        return x
    return F.adaptive_avg_pool2d(x, tuple(size))
