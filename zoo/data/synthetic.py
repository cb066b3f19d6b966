"""Small synthetic datasets in the real on-disk layouts (for tests and smoke runs; nothing is downloaded).

Images are random noise around a per-class colour, so a model can learn them within a few steps.
"""
from __future__ import annotations

import os

import numpy as np


def _image(rng, cls: int, n_classes: int, size: int) -> np.ndarray:
    base = np.array([(cls * 97) % 256, (cls * 57 + 80) % 256, (cls * 23 + 160) % 256], np.float32)
    img = base + rng.normal(0, 40, (size, size, 3))
    return np.clip(img, 0, 255).astype(np.uint8)


def make_image_folder(root: str, classes: int = 4, per_class: int = 8, size: int = 32,
                      splits=(("train", 1.0), ("val", 0.5)), seed: int = 0, ext: str = ".png") -> str:
    """``root/<split>/class_<k>/<i>.png`` (ImageNet-style); returns root."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for split, frac in splits:
        for c in range(classes):
            d = os.path.join(root, split, f"class_{c}")
            os.makedirs(d, exist_ok=True)
            for i in range(max(1, int(per_class * frac))):
                Image.fromarray(_image(rng, c, classes, size)).save(os.path.join(d, f"{i:04d}{ext}"))
    return root


def make_cifar10_bin(root: str, per_file: int = 20, seed: int = 0) -> str:
    """A miniature CIFAR-10 binary release under ``root/cifar-10-batches-bin``; returns root."""
    rng = np.random.default_rng(seed)
    d = os.path.join(root, "cifar-10-batches-bin")
    os.makedirs(d, exist_ok=True)
    for name in [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]:
        labels = rng.integers(0, 10, per_file)
        recs = [np.concatenate([[lab], _image(rng, int(lab), 10, 32).transpose(2, 0, 1).reshape(-1)]).astype(np.uint8)
                for lab in labels]
        np.stack(recs).tofile(os.path.join(d, name))
    return root
