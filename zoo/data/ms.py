"""The input pipeline (MindSpore's dataset engine; its output feeds either framework).

Each epoch's sample order is a permutation drawn from (seed, epoch) alone, split into equal disjoint
shards, one per rank (``epoch_indices``), so a resumed run sees exactly the order the interrupted
one would have, and data-parallel ranks never share a sample. Augmentation and batching reuse
mindcv's factories (``create_transforms``, ``create_loader``: RandomResizedCrop, flips,
RandAugment/AutoAugment, colour jitter, random erasing, mixup/cutmix); images arrive decoded from
``Source`` (which reports unreadable files instead of failing), so mindcv's decode step is replaced
by the equivalent op on decoded images.

Training on the array datasets (CIFAR-10/100, SVHN, digits), and on image folders with ``crop_padding``
set (Tiny-ImageNet), runs the small-image pipeline of ``zoo.data.augment`` instead: pad-and-crop, flip,
the references' AutoAugment policies, random erasing and CutMix/Mixup in numpy and PIL, with the
configured mean and std (mindcv's CIFAR transforms hard-code theirs), every draw seeded by the sample's
position in the epoch, so even a resumed epoch is augmented exactly as the interrupted one would have
been. ``epoch_passes`` > 1 lengthens each epoch to that many permutations of the training set.
"""
from __future__ import annotations

from typing import Optional, Tuple

import numpy as np

from zoo.data.augment import BatchMixer, SmallImageTransform, batch_rng, sample_rng, uses_small_pipeline
from zoo.data.sources import Source


def epoch_indices(n: int, seed: int, epoch: int, shuffle: bool = True, rank: int = 0, world: int = 1,
                  equal_shards: bool = True, passes: int = 1) -> np.ndarray:
    """The sample indices rank ``rank`` of ``world`` reads in ``epoch``: disjoint across ranks.

    ``equal_shards`` drops the last ``n * passes % world`` samples of the epoch's order so every rank runs
    the same number of steps (training); evaluation keeps them all. ``passes`` > 1 (the ``epoch_passes``
    key: the GMM / SPT_LSA_ViT references' repeated augmentation, ``RASampler(len_factor=passes)``) makes
    the epoch's order ``passes`` permutations one after the other, each drawn afresh, so every sample is
    seen ``passes`` times per epoch; batches run across the joins, as the reference's do.
    """
    if shuffle:
        rng = np.random.default_rng([seed, epoch])  # the first permutation is the one-pass order
        order = np.concatenate([rng.permutation(n) for _ in range(passes)]) if passes > 1 else rng.permutation(n)
    else:
        order = np.tile(np.arange(n), passes)
    shard = order[rank::world]
    return shard[: n * passes // world] if equal_shards else shard


def train_steps(n: int, cfg, world: int = 1) -> int:
    """Optimizer steps per epoch for ``n`` training samples on ``world`` ranks (``epoch_passes`` included)."""
    per_rank = n * cfg.epoch_passes // world
    return per_rank // cfg.batch_size if cfg.drop_remainder else -(-per_rank // cfg.batch_size)


def _interp(name: str):
    from mindspore.dataset.vision import Inter

    key = name.upper()
    if not hasattr(Inter, key):
        raise ValueError(f"unknown interpolation {name!r}; use one of bilinear, bicubic, pilcubic, nearest, area")
    return getattr(Inter, key)


def build_transforms(cfg, source: Source, training: bool) -> list:
    """MindSpore vision ops turning a decoded HWC uint8 image into a normalised CHW float image."""
    from mindspore.dataset import vision

    if source.images is not None and not training:  # small array datasets (CIFAR, SVHN); training: zoo.data.augment
        ops = []
        h = source.images.shape[1]
        if cfg.image_resize != h:
            ops += [vision.Resize(cfg.image_resize, interpolation=_interp(cfg.interpolation))]
        return ops + [vision.Normalize(mean=list(cfg.mean), std=list(cfg.std)), vision.HWC2CHW()]

    from mindcv.data import create_transforms

    common = dict(image_resize=cfg.image_resize, interpolation=cfg.interpolation, mean=list(cfg.mean),
                  std=list(cfg.std))
    if training:
        ops = create_transforms("imagenet", is_training=True, auto_augment=cfg.auto_augment, scale=tuple(cfg.scale),
                                ratio=tuple(cfg.ratio), hflip=cfg.hflip, vflip=cfg.vflip, color_jitter=cfg.color_jitter,
                                re_prob=cfg.re_prob, re_scale=tuple(cfg.re_scale), re_ratio=tuple(cfg.re_ratio),
                                re_value=cfg.re_value, re_max_attempts=cfg.re_max_attempts, **common)
        if not isinstance(ops[0], vision.RandomCropDecodeResize):
            raise RuntimeError("mindcv's train transforms no longer start with RandomCropDecodeResize; "
                               "update zoo.data.ms")
        ops[0] = vision.RandomResizedCrop(cfg.image_resize, scale=tuple(cfg.scale), ratio=tuple(cfg.ratio),
                                          interpolation=_interp(cfg.interpolation))
    else:
        ops = create_transforms("imagenet", is_training=False, crop_pct=cfg.crop_pct, **common)
        if not isinstance(ops[0], vision.Decode):
            raise RuntimeError("mindcv's eval transforms no longer start with Decode; update zoo.data.ms")
        ops = ops[1:]
    return ops


class _Access:
    """Random access to a Source for GeneratorDataset (returns numpy arrays)."""

    def __init__(self, source: Source):
        self.source = source

    def __len__(self):
        return len(self.source)

    def __getitem__(self, index):
        return self.source[index]


def create_loader(source: Source, cfg, training: bool, epoch: int = 0, rank: int = 0, world: int = 1,
                  start_step: int = 0, indices: Optional[np.ndarray] = None) -> Tuple[object, int, np.ndarray]:
    """A batched MindSpore dataset for one epoch of ``source``: (dataset, number of batches, indices read).

    Training: shuffled (``cfg.shuffle``), equal shards, ``drop_remainder`` as configured, skipping the
    first ``start_step`` batches (a resumed epoch). Evaluation: in order, every sample once across ranks.
    """
    import mindspore.dataset as ds
    from mindcv.data import create_loader as mindcv_loader

    if indices is None:
        indices = epoch_indices(len(source), cfg.seed, epoch, shuffle=training and cfg.shuffle, rank=rank,
                                world=world, equal_shards=training, passes=cfg.epoch_passes if training else 1)
    indices = np.asarray(indices)[start_step * cfg.batch_size:]
    drop = cfg.drop_remainder if training else False
    steps = len(indices) // cfg.batch_size if drop else -(-len(indices) // cfg.batch_size)
    if training and uses_small_pipeline(cfg):
        return _small_loader(source, cfg, epoch, rank, world, start_step, indices, drop), steps, indices
    # augmentation randomness: a function of (seed, epoch, rank), like the order
    ds.config.set_seed(int(np.random.default_rng([cfg.seed, epoch, rank, 7]).integers(2 ** 31)))
    workers = max(1, int(cfg.num_parallel_workers))
    dataset = ds.GeneratorDataset(_Access(source), column_names=["image", "label"], sampler=indices.tolist(),
                                  num_parallel_workers=workers, python_multiprocessing=False)
    loader = mindcv_loader(dataset, batch_size=cfg.batch_size, drop_remainder=drop, is_training=training,
                           mixup=cfg.mixup if training else 0.0, cutmix=cfg.cutmix if training else 0.0,
                           cutmix_prob=cfg.cutmix_prob, num_classes=source.num_classes,
                           transform=build_transforms(cfg, source, training), num_parallel_workers=workers)
    return loader, steps, indices


def batches(loader) -> "iter":
    """(images, labels) numpy batches of a loader."""
    if isinstance(loader, SmallImageLoader):
        yield from loader
        return
    for image, label in loader.create_tuple_iterator(output_numpy=True, num_epochs=1):
        yield image, label


# --- the small-image pipeline (zoo.data.augment): per-sample draws keyed by position, batch mixing in numpy ---

class _Augmented:
    """Random access to one epoch's samples, augmented, for GeneratorDataset (item k = the k-th sample read)."""

    def __init__(self, source: Source, indices: np.ndarray, positions: np.ndarray, transform, seed: int, epoch: int):
        self.source, self.indices, self.positions, self.transform = source, indices, positions, transform
        self.seed, self.epoch = seed, epoch

    def __len__(self):
        return len(self.indices)

    def __getitem__(self, k):
        image, label = self.source[self.indices[k]]
        return self.transform(image, sample_rng(self.seed, self.epoch, int(self.positions[k]))), label


class SmallImageLoader:
    """Batches of the small-image pipeline: a MindSpore GeneratorDataset, then CutMix/Mixup per batch."""

    def __init__(self, dataset, mixer, seed: int, epoch: int, rank: int, start_step: int):
        self.dataset, self.mixer = dataset, mixer
        self.seed, self.epoch, self.rank, self.start_step = seed, epoch, rank, start_step

    def __iter__(self):
        for step, (x, y) in enumerate(self.dataset.create_tuple_iterator(output_numpy=True, num_epochs=1),
                                      start=self.start_step):
            if self.mixer is not None:
                x, y = self.mixer(x, y, batch_rng(self.seed, self.epoch, self.rank, step))
            yield x, y


def _small_loader(source, cfg, epoch, rank, world, start_step, indices, drop) -> SmallImageLoader:
    import mindspore.dataset as ds

    # a sample's place in the epoch's global order (rank r reads places r, r + world, ...): its seed
    positions = (np.arange(len(indices)) + start_step * cfg.batch_size) * world + rank
    access = _Augmented(source, indices, positions, SmallImageTransform(cfg), cfg.seed, epoch)
    workers = max(1, int(cfg.num_parallel_workers))
    dataset = ds.GeneratorDataset(access, column_names=["image", "label"], shuffle=False,
                                  num_parallel_workers=workers, python_multiprocessing=False)
    dataset = dataset.batch(cfg.batch_size, drop_remainder=drop)
    return SmallImageLoader(dataset, BatchMixer.from_config(cfg, source.num_classes), cfg.seed, epoch, rank,
                            start_step)

