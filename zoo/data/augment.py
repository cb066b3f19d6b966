"""The small-image training pipeline (CIFAR-10/100, SVHN, Tiny-ImageNet): numpy and PIL, every draw seeded.

Used for training on the array datasets (cifar10, cifar100, svhn, digits) and on any dataset when
``crop_padding`` is set (e.g. Tiny-ImageNet's 64 px image folders); mindcv's ``create_transforms``
(RandomResizedCrop, ...) serves the other image-folder recipes. Per sample, in the order of the GMM /
SPT_LSA_ViT references' ``main.py``:

1. resize to ``image_resize`` if the image has another size (PIL, ``interpolation``);
2. horizontal flip with probability ``hflip`` (and vertical with ``vflip``);
3. random crop of ``image_resize`` from the image zero-padded by ``crop_padding`` pixels (4 by default on
   array datasets), torchvision's ``RandomCrop(size, padding)``;
4. AutoAugment, if ``auto_augment`` is ``cifar10_policy``, ``svhn_policy`` or ``imagenet_policy``
   (``zoo.data.autoaugment``: DeepVoltaire's policies, as the references use them);
5. scaling to [0, 1] and normalisation by ``mean`` / ``std`` (given on the 0-255 scale);
6. random erasing with probability ``re_prob``, by the references' rule (``random_erasing``): area
   fraction uniform in ``re_scale``, aspect ratio uniform (not log-uniform) in ``re_ratio``, sides rounded,
   up to ``re_max_attempts`` tries for a box strictly inside the image; the box is filled with ``re_value``
   (a number or one per channel, in the normalised tensor; ``random``: standard normal noise per pixel).
   ``re_value: 0`` fills with the dataset's mean colour. The references fill with the raw 0-1 dataset means
   (e.g. 0.4914, 0.4822, 0.4465 for CIFAR-10) written into the already-normalised tensor, i.e. a colour
   about two standard deviations above the mean: pass those numbers as ``re_value`` to reproduce that.

Per batch (``BatchMixer``), when ``mixup`` or ``cutmix`` (the Beta distributions' alpha) is above 0: with
probability ``cutmix_prob`` the batch is mixed with a random permutation of itself, by CutMix or Mixup
with equal chance when both are on (the references' ``--mix_prob 0.5``, ``--cm``, ``--mu``). CutMix uses
the references' box: side ``int(size * sqrt(1 - lam))`` per axis, a uniform centre, ``size // 2`` either
side, clipped, and ``lam`` recomputed from the clipped box's area. Labels become float one-hot targets
(``lam * y + (1 - lam) * y[perm]``; unmixed batches too, so the train step sees one label type), which a
cross-entropy with label smoothing turns into exactly the references' ``lam * L(y_a) + (1 - lam) * L(y_b)``.

Randomness: a sample's draws come from ``numpy.random.default_rng([seed, epoch, 1, position])``, a
batch's from ``[seed, epoch, 2, rank, step]``, where ``position`` is the sample's place in the epoch's
global order. The data-loading threads may run in any order, a resumed run draws exactly the
augmentations the interrupted one would have, and the output is numpy, so both frameworks train on
identical batches.
"""
from __future__ import annotations

from typing import Optional, Sequence, Tuple

import numpy as np

from zoo.data.autoaugment import POLICY_NAMES, AutoAugment
from zoo.errors import ConfigError

ARRAY_DATASETS = ("cifar10", "cifar100", "svhn", "digits")  # decoded arrays (zoo.data.sources)
DEFAULT_PADDING = 4
_SAMPLE, _BATCH = 1, 2  # stream tags of the seeds


def uses_small_pipeline(cfg) -> bool:
    """Whether training runs this module's pipeline (array datasets, or crop_padding set)."""
    return cfg.dataset.lower() in ARRAY_DATASETS or cfg.crop_padding is not None


def check_config(cfg) -> None:
    """Settings the small-image pipeline cannot honour, refused before anything is built."""
    if cfg.crop_padding is not None and cfg.crop_padding < 0:
        raise ConfigError(f"crop_padding: must be 0 or more pixels, got {cfg.crop_padding}")
    if cfg.epoch_passes < 1:
        raise ConfigError(f"epoch_passes: must be at least 1, got {cfg.epoch_passes}")
    small = uses_small_pipeline(cfg)
    if cfg.auto_augment in POLICY_NAMES and not small:
        raise ConfigError(f"auto_augment: {cfg.auto_augment} runs in the small-image pipeline (array datasets, or "
                          f"an image folder with crop_padding set); for {cfg.dataset} add crop_padding: 4, or use "
                          "one of mindcv's policies (autoaug, randaug-..., trivialaugwide)")
    if not small:
        return
    if cfg.auto_augment and cfg.auto_augment not in POLICY_NAMES:
        raise ConfigError(f"auto_augment: {cfg.auto_augment!r} is a mindcv policy, which the small-image pipeline "
                          f"({cfg.dataset}{', crop_padding' if cfg.crop_padding is not None else ''}) does not run; "
                          f"use {', '.join(POLICY_NAMES)}, or none")
    if cfg.color_jitter:
        raise ConfigError("color_jitter: the small-image pipeline has no colour jitter; remove the key (or train "
                          "an image folder without crop_padding, through mindcv's transforms)")
    v = cfg.re_value
    if isinstance(v, str) and v != "random":  # from the command line (the key takes any type, so it stays text)
        import yaml

        try:
            v = cfg.re_value = yaml.safe_load(v)
        except yaml.YAMLError:
            pass
    ok = (isinstance(v, (int, float)) and not isinstance(v, bool)) or v == "random" or (
        isinstance(v, (list, tuple)) and len(v) == 3 and all(isinstance(x, (int, float)) for x in v))
    if not ok:
        raise ConfigError(f"re_value: expected a number, three numbers (one per channel, in the normalised "
                          f"image) or 'random', got {v!r}")
    if cfg.re_prob > 0:
        sc, ra = cfg.re_scale, cfg.re_ratio
        if len(sc) != 2 or not 0 < sc[0] <= sc[1] < 1:
            raise ConfigError(f"re_scale: expected [min, max] with 0 < min <= max < 1 (fractions of the image area), "
                              f"got {sc}")
        if len(ra) != 2 or not 0 < ra[0] <= ra[1]:
            raise ConfigError(f"re_ratio: expected [min, max] with 0 < min <= max, got {ra}")


def sample_rng(seed: int, epoch: int, position: int) -> np.random.Generator:
    return np.random.default_rng([seed, epoch, _SAMPLE, position])


def batch_rng(seed: int, epoch: int, rank: int, step: int) -> np.random.Generator:
    return np.random.default_rng([seed, epoch, _BATCH, rank, step])


def _pil_filter(name: str):
    from PIL import Image

    r = Image.Resampling
    table = {"bilinear": r.BILINEAR, "linear": r.BILINEAR, "bicubic": r.BICUBIC, "pilcubic": r.BICUBIC,
             "nearest": r.NEAREST, "area": r.BOX, "antialias": r.LANCZOS}
    if name.lower() not in table:
        raise ConfigError(f"interpolation: {name!r} is not one of {', '.join(table)}")
    return table[name.lower()]


def pad_crop(img: np.ndarray, size: int, padding: int, rng: np.random.Generator) -> np.ndarray:
    """torchvision's RandomCrop(size, padding): zero padding, a uniform offset (both ends included)."""
    if padding:  # (np.pad is several times slower on small images)
        canvas = np.zeros((img.shape[0] + 2 * padding, img.shape[1] + 2 * padding) + img.shape[2:], img.dtype)
        canvas[padding:padding + img.shape[0], padding:padding + img.shape[1]] = img
        img = canvas
    h, w = img.shape[:2]
    if h < size or w < size:
        raise ValueError(f"image of {h}x{w} (padded) is smaller than the crop of {size}")
    i, j = int(rng.integers(h - size + 1)), int(rng.integers(w - size + 1))
    return img[i:i + size, j:j + size]


def random_erasing(x: np.ndarray, prob: float, scale: Sequence[float], ratio: Sequence[float], attempts: int,
                   value, rng: np.random.Generator) -> np.ndarray:
    """The references' RandomErasing on a normalised CHW image (in place; returns it)."""
    if prob <= 0 or rng.random() >= prob:  # reference: `if uniform(0, 1) > p: return`
        return x
    c, h, w = x.shape
    for _ in range(attempts):
        target = rng.uniform(scale[0], scale[1]) * h * w
        aspect = rng.uniform(ratio[0], ratio[1])
        eh, ew = int(round(np.sqrt(target * aspect))), int(round(np.sqrt(target / aspect)))
        if ew < w and eh < h:
            top, left = int(rng.integers(h - eh + 1)), int(rng.integers(w - ew + 1))
            if isinstance(value, str):  # 'random'
                x[:, top:top + eh, left:left + ew] = rng.standard_normal((c, eh, ew)).astype(x.dtype)
            else:  # one number, or one per channel
                x[:, top:top + eh, left:left + ew] = np.broadcast_to(np.asarray(value, x.dtype).reshape(-1), (c,))[
                    :, None, None]
            return x
    return x


class SmallImageTransform:
    """Decoded HWC uint8 image + Generator -> normalised CHW float32 image (training augmentation)."""

    def __init__(self, cfg):
        self.size = int(cfg.image_resize)
        self.padding = DEFAULT_PADDING if cfg.crop_padding is None else int(cfg.crop_padding)
        self.hflip, self.vflip = float(cfg.hflip), float(cfg.vflip)
        self.filter = _pil_filter(cfg.interpolation)
        self.autoaugment = AutoAugment(cfg.auto_augment) if cfg.auto_augment in POLICY_NAMES else None
        self.mean = np.asarray(cfg.mean, np.float32).reshape(-1, 1, 1) / 255.0
        self.std = np.asarray(cfg.std, np.float32).reshape(-1, 1, 1) / 255.0
        self.erase = (float(cfg.re_prob), tuple(cfg.re_scale), tuple(cfg.re_ratio), int(cfg.re_max_attempts),
                      cfg.re_value)

    def __call__(self, img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        if img.shape[0] != self.size or img.shape[1] != self.size:
            from PIL import Image

            img = np.asarray(Image.fromarray(img).resize((self.size, self.size), self.filter))
        if self.hflip > 0 and rng.random() < self.hflip:
            img = img[:, ::-1]
        if self.vflip > 0 and rng.random() < self.vflip:
            img = img[::-1]
        img = pad_crop(img, self.size, self.padding, rng)
        if self.autoaugment is not None:
            img = self.autoaugment(img, rng)
        x = (np.asarray(img, np.float32).transpose(2, 0, 1) / np.float32(255.0) - self.mean) / self.std
        return random_erasing(np.ascontiguousarray(x, np.float32), *self.erase, rng=rng)


class BatchMixer:
    """CutMix / Mixup on whole batches, the references' way (see the module docstring)."""

    def __init__(self, mixup: float, cutmix: float, prob: float, num_classes: int):
        self.mixup, self.cutmix, self.prob, self.num_classes = float(mixup), float(cutmix), float(prob), num_classes

    @classmethod
    def from_config(cls, cfg, num_classes: int) -> Optional["BatchMixer"]:
        if cfg.mixup <= 0 and cfg.cutmix <= 0:
            return None
        return cls(cfg.mixup, cfg.cutmix, cfg.cutmix_prob, num_classes)

    def __call__(self, x: np.ndarray, y: np.ndarray, rng: np.random.Generator) -> Tuple[np.ndarray, np.ndarray]:
        """(NCHW float images, integer labels) -> (mixed images, float32 soft targets N x num_classes)."""
        n = len(y)
        eye = np.eye(self.num_classes, dtype=np.float64)
        target = eye[np.asarray(y, np.int64)]
        if rng.random() >= self.prob:
            return x, target.astype(np.float32)
        if self.cutmix > 0 and self.mixup > 0:
            kind = "cutmix" if rng.random() < 0.5 else "mixup"
        else:
            kind = "cutmix" if self.cutmix > 0 else "mixup"
        alpha = self.cutmix if kind == "cutmix" else self.mixup
        lam = float(rng.beta(alpha, alpha))
        perm = rng.permutation(n)
        if kind == "mixup":
            x = (lam * x + (1.0 - lam) * x[perm]).astype(x.dtype)
        else:
            r1, r2, c1, c2 = cutmix_box(x.shape[2], x.shape[3], lam, rng)
            x = x.copy()
            x[:, :, r1:r2, c1:c2] = x[perm, :, r1:r2, c1:c2]
            lam = 1.0 - (r2 - r1) * (c2 - c1) / (x.shape[2] * x.shape[3])
        return x, (lam * target + (1.0 - lam) * target[perm]).astype(np.float32)


def cutmix_box(h: int, w: int, lam: float, rng: np.random.Generator) -> Tuple[int, int, int, int]:
    """The references' ``rand_bbox`` on an (h, w) image: rows r1:r2, columns c1:c2."""
    cut = np.sqrt(1.0 - lam)
    ch, cw = int(h * cut), int(w * cut)
    cy, cx = int(rng.integers(h)), int(rng.integers(w))
    return (int(np.clip(cy - ch // 2, 0, h)), int(np.clip(cy + ch // 2, 0, h)),
            int(np.clip(cx - cw // 2, 0, w)), int(np.clip(cx + cw // 2, 0, w)))
