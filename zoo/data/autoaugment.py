"""AutoAugment with the CIFAR-10, SVHN and ImageNet policies as the GMM / SPT_LSA_ViT references run them.

Those repositories copy DeepVoltaire's AutoAugment (github.com/DeepVoltaire/AutoAugment, ``autoaugment.py`` +
``ops.py`` as of March 2021): 25 sub-policies per dataset, each two ``(probability, operation, magnitude
index)`` steps; a magnitude index ``i`` in 0..9 selects ``ranges[op][i]`` (``np.linspace`` over the op's range,
so index 9 is the range's end: rotate 30 degrees, translate 150/331 of the image side, shear 0.3, enhance
factor 1 +- 0.9, solarize threshold 256 -> 0, posterize 8 -> 4 bits). Operations are PIL's, with a grey fill
(128, 128, 128) for the geometric ones, a random sign for shear, translate and the enhancements, and bicubic
resampling for shear (nearest for translate and rotate). One difference from DeepVoltaire's current code is
kept on purpose: the references rotate by ``+magnitude`` only (counter-clockwise), their copy predating
DeepVoltaire's fix of July 2021 that added a random sign.

mindcv's ``auto_augment="autoaug"`` is timm's ImageNet policy, which differs: level / 10 instead of
index / 9 of the range, a different posterize mapping (level 8 keeps 7 bits, here index 8 keeps 4), colour
factor 0.1 at level 0 (here 1.0, the identity), random interpolation, random rotation sign; and it has no
CIFAR-10 or SVHN policy. Hence this module.

Randomness comes from a ``numpy.random.Generator`` the caller passes (the input pipeline derives it from
the seed, the epoch and the sample's position, so a resumed run draws the same augmentations).
"""
from __future__ import annotations

from typing import Dict, List, Tuple

import numpy as np

FILL = (128, 128, 128)

# magnitude ranges, as the reference defines them (index 0..9)
RANGES: Dict[str, np.ndarray] = {
    "shearX": np.linspace(0, 0.3, 10),
    "shearY": np.linspace(0, 0.3, 10),
    "translateX": np.linspace(0, 150 / 331, 10),
    "translateY": np.linspace(0, 150 / 331, 10),
    "rotate": np.linspace(0, 30, 10),
    "color": np.linspace(0.0, 0.9, 10),
    "posterize": np.round(np.linspace(8, 4, 10), 0).astype(np.int64),
    "solarize": np.linspace(256, 0, 10),
    "contrast": np.linspace(0.0, 0.9, 10),
    "sharpness": np.linspace(0.0, 0.9, 10),
    "brightness": np.linspace(0.0, 0.9, 10),
    "autocontrast": np.zeros(10),
    "equalize": np.zeros(10),
    "invert": np.zeros(10),
}

# (p1, op1, magnitude index 1, p2, op2, magnitude index 2) for each of the 25 sub-policies
_T = Tuple[float, str, int, float, str, int]
POLICIES: Dict[str, List[_T]] = {
    "imagenet": [
        (0.4, "posterize", 8, 0.6, "rotate", 9), (0.6, "solarize", 5, 0.6, "autocontrast", 5),
        (0.8, "equalize", 8, 0.6, "equalize", 3), (0.6, "posterize", 7, 0.6, "posterize", 6),
        (0.4, "equalize", 7, 0.2, "solarize", 4), (0.4, "equalize", 4, 0.8, "rotate", 8),
        (0.6, "solarize", 3, 0.6, "equalize", 7), (0.8, "posterize", 5, 1.0, "equalize", 2),
        (0.2, "rotate", 3, 0.6, "solarize", 8), (0.6, "equalize", 8, 0.4, "posterize", 6),
        (0.8, "rotate", 8, 0.4, "color", 0), (0.4, "rotate", 9, 0.6, "equalize", 2),
        (0.0, "equalize", 7, 0.8, "equalize", 8), (0.6, "invert", 4, 1.0, "equalize", 8),
        (0.6, "color", 4, 1.0, "contrast", 8), (0.8, "rotate", 8, 1.0, "color", 2),
        (0.8, "color", 8, 0.8, "solarize", 7), (0.4, "sharpness", 7, 0.6, "invert", 8),
        (0.6, "shearX", 5, 1.0, "equalize", 9), (0.4, "color", 0, 0.6, "equalize", 3),
        (0.4, "equalize", 7, 0.2, "solarize", 4), (0.6, "solarize", 5, 0.6, "autocontrast", 5),
        (0.6, "invert", 4, 1.0, "equalize", 8), (0.6, "color", 4, 1.0, "contrast", 8),
        (0.8, "equalize", 8, 0.6, "equalize", 3),
    ],
    "cifar10": [
        (0.1, "invert", 7, 0.2, "contrast", 6), (0.7, "rotate", 2, 0.3, "translateX", 9),
        (0.8, "sharpness", 1, 0.9, "sharpness", 3), (0.5, "shearY", 8, 0.7, "translateY", 9),
        (0.5, "autocontrast", 8, 0.9, "equalize", 2), (0.2, "shearY", 7, 0.3, "posterize", 7),
        (0.4, "color", 3, 0.6, "brightness", 7), (0.3, "sharpness", 9, 0.7, "brightness", 9),
        (0.6, "equalize", 5, 0.5, "equalize", 1), (0.6, "contrast", 7, 0.6, "sharpness", 5),
        (0.7, "color", 7, 0.5, "translateX", 8), (0.3, "equalize", 7, 0.4, "autocontrast", 8),
        (0.4, "translateY", 3, 0.2, "sharpness", 6), (0.9, "brightness", 6, 0.2, "color", 8),
        (0.5, "solarize", 2, 0.0, "invert", 3), (0.2, "equalize", 0, 0.6, "autocontrast", 0),
        (0.2, "equalize", 8, 0.6, "equalize", 4), (0.9, "color", 9, 0.6, "equalize", 6),
        (0.8, "autocontrast", 4, 0.2, "solarize", 8), (0.1, "brightness", 3, 0.7, "color", 0),
        (0.4, "solarize", 5, 0.9, "autocontrast", 3), (0.9, "translateY", 9, 0.7, "translateY", 9),
        (0.9, "autocontrast", 2, 0.8, "solarize", 3), (0.8, "equalize", 8, 0.1, "invert", 3),
        (0.7, "translateY", 9, 0.9, "autocontrast", 1),
    ],
    "svhn": [
        (0.9, "shearX", 4, 0.2, "invert", 3), (0.9, "shearY", 8, 0.7, "invert", 5),
        (0.6, "equalize", 5, 0.6, "solarize", 6), (0.9, "invert", 3, 0.6, "equalize", 3),
        (0.6, "equalize", 1, 0.9, "rotate", 3), (0.9, "shearX", 4, 0.8, "autocontrast", 3),
        (0.9, "shearY", 8, 0.4, "invert", 5), (0.9, "shearY", 5, 0.2, "solarize", 6),
        (0.9, "invert", 6, 0.8, "autocontrast", 1), (0.6, "equalize", 3, 0.9, "rotate", 3),
        (0.9, "shearX", 4, 0.3, "solarize", 3), (0.8, "shearY", 8, 0.7, "invert", 4),
        (0.9, "equalize", 5, 0.6, "translateY", 6), (0.9, "invert", 4, 0.6, "equalize", 7),
        (0.3, "contrast", 3, 0.8, "rotate", 4), (0.8, "invert", 5, 0.0, "translateY", 2),
        (0.7, "shearY", 6, 0.4, "solarize", 8), (0.6, "invert", 4, 0.8, "rotate", 4),
        (0.3, "shearY", 7, 0.9, "translateX", 3), (0.1, "shearX", 6, 0.6, "invert", 5),
        (0.7, "solarize", 2, 0.6, "translateY", 7), (0.8, "shearY", 4, 0.8, "invert", 8),
        (0.7, "shearX", 9, 0.8, "translateY", 3), (0.8, "shearY", 5, 0.7, "autocontrast", 3),
        (0.7, "shearX", 2, 0.1, "invert", 5),
    ],
}

# the auto_augment key's values that select these policies
POLICY_NAMES = {"cifar10_policy": "cifar10", "svhn_policy": "svhn", "imagenet_policy": "imagenet"}


def _sign(rng: np.random.Generator) -> int:
    return -1 if rng.random() < 0.5 else 1


def apply_op(img, op: str, magnitude, rng: np.random.Generator, fill=FILL):
    """One operation on a PIL image (RGB), as the reference's ``ops.py`` computes it."""
    from PIL import Image, ImageEnhance, ImageOps

    affine, bicubic = Image.Transform.AFFINE, Image.Resampling.BICUBIC
    if op == "shearX":
        return img.transform(img.size, affine, (1, magnitude * _sign(rng), 0, 0, 1, 0), bicubic, fillcolor=fill)
    if op == "shearY":
        return img.transform(img.size, affine, (1, 0, 0, magnitude * _sign(rng), 1, 0), bicubic, fillcolor=fill)
    if op == "translateX":
        return img.transform(img.size, affine, (1, 0, magnitude * img.size[0] * _sign(rng), 0, 1, 0), fillcolor=fill)
    if op == "translateY":
        return img.transform(img.size, affine, (1, 0, 0, 0, 1, magnitude * img.size[1] * _sign(rng)), fillcolor=fill)
    if op == "rotate":  # +magnitude only, and always the grey (128,) fill, as the references do
        rot = img.convert("RGBA").rotate(float(magnitude))
        return Image.composite(rot, Image.new("RGBA", rot.size, (128,) * 4), rot).convert(img.mode)
    if op in ("color", "contrast", "sharpness", "brightness"):
        enhancer = {"color": ImageEnhance.Color, "contrast": ImageEnhance.Contrast,
                    "sharpness": ImageEnhance.Sharpness, "brightness": ImageEnhance.Brightness}[op]
        return enhancer(img).enhance(1 + magnitude * _sign(rng))
    if op == "posterize":
        return ImageOps.posterize(img, int(magnitude))
    if op == "solarize":
        return ImageOps.solarize(img, magnitude)
    if op == "autocontrast":
        return ImageOps.autocontrast(img)
    if op == "equalize":
        return ImageOps.equalize(img)
    if op == "invert":
        return ImageOps.invert(img)
    raise ValueError(f"unknown AutoAugment operation {op!r}")


class AutoAugment:
    """One of the 25 sub-policies of ``policy`` (cifar10, svhn, imagenet), chosen uniformly, per image."""

    def __init__(self, policy: str, fill=FILL):
        policy = POLICY_NAMES.get(policy, policy)
        if policy not in POLICIES:
            raise ValueError(f"unknown AutoAugment policy {policy!r}; use {', '.join(POLICY_NAMES)}")
        self.policy, self.fill = policy, tuple(fill)
        # resolved sub-policies: ((p1, op1, magnitude1), (p2, op2, magnitude2))
        self.sub_policies = [((p1, o1, RANGES[o1][m1]), (p2, o2, RANGES[o2][m2]))
                             for p1, o1, m1, p2, o2, m2 in POLICIES[policy]]

    def __call__(self, img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """HWC uint8 RGB -> HWC uint8 RGB."""
        from PIL import Image

        pil = Image.fromarray(np.ascontiguousarray(img))
        for p, op, magnitude in self.sub_policies[int(rng.integers(len(self.sub_policies)))]:
            if rng.random() < p:
                pil = apply_op(pil, op, magnitude, rng, self.fill)
        return np.asarray(pil)

    def __repr__(self) -> str:
        return f"AutoAugment({self.policy} policy, 25 sub-policies, fill {self.fill})"
