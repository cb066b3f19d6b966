"""Framework-free constants of the Swin and T2T twins (numpy), computed as the reference computes them.

Both twins build their frozen tensors from these functions, so the two hold the same values; the
PyTorch twin's state dict then equals the reference's (checked against the reference's own code by
``tools/check_reference.py gmm``).
"""
from __future__ import annotations

import numpy as np

from zoo.models.gmm import config as C


def relative_position_index(window: int) -> np.ndarray:
    """Swin: (window^2, window^2) int64 index into the (2 window - 1)^2-row bias table for each (query, key)."""
    ys, xs = np.meshgrid(np.arange(window), np.arange(window), indexing="ij")
    coords = np.stack([ys.reshape(-1), xs.reshape(-1)])  # (2, N): row, column of each window position
    rel = (coords[:, :, None] - coords[:, None, :]).transpose(1, 2, 0)  # (N, N, 2)
    return ((rel[:, :, 0] + window - 1) * (2 * window - 1) + rel[:, :, 1] + window - 1).astype(np.int64)


def shift_attn_mask(resolution: int, window: int, shift: int) -> np.ndarray:
    """Swin: (nW, window^2, window^2) float32 for a grid cyclically shifted by ``-shift``: 0 between tokens of the
    same original region, -100 across regions (windows row-major, positions row-major inside a window)."""
    img = np.zeros((resolution, resolution), np.float32)
    cuts = (slice(0, -window), slice(-window, -shift), slice(-shift, None))
    cnt = 0
    for h in cuts:
        for w in cuts:
            img[h, w] = cnt
            cnt += 1
    n = resolution // window
    win = img.reshape(n, window, n, window).transpose(0, 2, 1, 3).reshape(n * n, window * window)
    diff = win[:, None, :] - win[:, :, None]
    return np.where(diff != 0, np.float32(-100.0), np.float32(0.0)).astype(np.float32)


def sinusoid_table(n_position: int, d_hid: int) -> np.ndarray:
    """T2T: (1, n_position, d_hid) float32; sin on even, cos on odd channels of pos / 10000^(2 (j // 2) / d_hid),
    in float64 before the cast (as the reference's numpy code)."""
    pos = np.arange(n_position, dtype=np.float64)[:, None]
    j = np.arange(d_hid)
    table = pos / np.power(10000, 2 * (j // 2) / d_hid)[None, :]
    table[:, 0::2] = np.sin(table[:, 0::2])
    table[:, 1::2] = np.cos(table[:, 1::2])
    return table.astype(np.float32)[None]


def t2t_grids(img_size: int) -> tuple:
    """T2T: the token grid after each soft split (3x3, stride 2, pad 1): 32 px -> (16, 8), 64 px -> (32, 16, 8)."""
    if img_size not in C.IMG_SIZES:
        raise ValueError(f"T2T is built for img_size 32 or 64 (2 or 3 soft splits to 8x8 tokens), got {img_size}")
    n = 2 if img_size == 32 else 3
    return tuple(img_size // 2 ** (i + 1) for i in range(n))
