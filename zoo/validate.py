"""Validation with a model's own preprocessing, identical inputs on both frameworks.

    zoo validate MODEL --checkpoint FILE --data DIR [--framework ms|pt] [--split val] [--num-classes K]

The evaluation transform is the reference's, done with PIL exactly as torchvision/timm do it: resize
the shorter side to ``floor(size / crop_pct)`` with the registry's filter (bilinear or bicubic, PIL's
antialiased resampling), centre crop to ``size``, scale to [0, 1], normalise with the registry's mean
and std. It is framework-free: the same numpy batches go to either twin, so the same weights give the
same top-1/top-5 on both (MindSpore's own Resize differs from PIL's by several grey levels).
"""
from __future__ import annotations

import math
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Iterator, Optional, Tuple

import numpy as np

from zoo import registry
from zoo.data.sources import Source, decode


class EvalTransform:
    """PIL resize (shorter side) + centre crop + normalise -> float32 CHW, as the reference evaluated."""

    def __init__(self, entry: registry.ModelEntry, input_size: Optional[int] = None):
        from PIL import Image

        p = entry.preprocess
        self.size = input_size or entry.input_size[1]
        self.scale = int(math.floor(self.size / p.crop_pct))
        filters = {"bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC, "nearest": Image.NEAREST}
        if p.interpolation not in filters:
            raise ValueError(f"{entry.name}: unsupported interpolation {p.interpolation!r}")
        self.filter = filters[p.interpolation]
        self.mean = np.asarray(p.mean, np.float32).reshape(3, 1, 1)
        self.std = np.asarray(p.std, np.float32).reshape(3, 1, 1)

    def __call__(self, image: np.ndarray) -> np.ndarray:
        from PIL import Image

        im = Image.fromarray(image)
        w, h = im.size
        if (w <= h and w != self.scale) or (h < w and h != self.scale):  # torchvision Resize(int): shorter side
            ow, oh = (self.scale, int(self.scale * h / w)) if w <= h else (int(self.scale * w / h), self.scale)
            im = im.resize((ow, oh), self.filter)
        w, h = im.size
        top, left = int(round((h - self.size) / 2.0)), int(round((w - self.size) / 2.0))
        im = im.crop((left, top, left + self.size, top + self.size))
        x = np.asarray(im, np.float32).transpose(2, 0, 1) / 255.0
        return (x - self.mean) / self.std


def eval_batches(source: Source, transform: EvalTransform, batch_size: int = 32, workers: int = 4,
                 limit: Optional[int] = None) -> Iterator[Tuple[np.ndarray, np.ndarray]]:
    """(images, labels) batches of a split in order, preprocessed in a thread pool."""
    n = len(source) if limit is None else min(limit, len(source))

    def load(i):
        if source.files is not None:
            try:
                img = decode(source.files[i])
            except Exception:
                img, _ = source[i]  # reports the file and substitutes the next readable one
        else:
            img = source.images[i]
        return transform(img), int(source.labels[i])

    with ThreadPoolExecutor(max(1, workers)) as pool:
        for start in range(0, n, batch_size):
            items = list(pool.map(load, range(start, min(start + batch_size, n))))
            yield np.stack([x for x, _ in items]), np.asarray([y for _, y in items], np.int64)


def validate(model: str, checkpoint: str, data_dir: str, framework: str = "ms", dataset: str = "imagenet",
             split: str = "val", num_classes: Optional[int] = None, batch_size: int = 32, workers: int = 4,
             limit: Optional[int] = None, keep_logits: bool = False) -> dict:
    """Top-1/top-5 (%) and mean cross-entropy of ``checkpoint`` on ``split``, with the model's preprocessing."""
    import zoo
    from zoo.data.sources import open_dataset
    from zoo.metrics import score

    entry = registry.get(model)
    source = open_dataset(dataset, data_dir, split)
    net = zoo.create_model(model, framework, num_classes=num_classes, checkpoint=checkpoint)
    if framework == "pt":
        import torch

        net.eval()

        def run(x):
            with torch.no_grad():
                return net(torch.from_numpy(x)).numpy()
    else:
        import mindspore as ms

        net.set_train(False)

        def run(x):
            return net(ms.Tensor(x)).asnumpy()
    transform = EvalTransform(entry)
    totals, logits = np.zeros(4), []
    t0 = time.perf_counter()
    for x, y in eval_batches(source, transform, batch_size, workers, limit):
        out = run(x)
        totals += score(out, y)
        if keep_logits:
            logits.append(out)
    n = max(totals[3], 1)
    result = {"model": model, "framework": framework, "top1": 100 * totals[0] / n, "top5": 100 * totals[1] / n,
              "loss": totals[2] / n, "count": int(totals[3]), "seconds": time.perf_counter() - t0,
              "preprocess": f"resize {transform.scale} {entry.preprocess.interpolation}, crop {transform.size}, "
                            f"mean {tuple(entry.preprocess.mean)}, std {tuple(entry.preprocess.std)}"}
    if keep_logits:
        result["logits"] = np.concatenate(logits) if logits else np.zeros((0, 0))
    return result


def main(argv=None) -> int:
    import argparse
    import sys

    from zoo.convert import ConversionError
    from zoo.data.sources import DatasetError

    p = argparse.ArgumentParser(prog="zoo validate", description="Top-1/top-5 and loss of a checkpoint on a dataset "
                                "split, with the model's own preprocessing (the same inputs on either framework).")
    p.add_argument("model", help="registered model name")
    p.add_argument("--checkpoint", required=True, help="any checkpoint `zoo convert` reads")
    p.add_argument("--data", required=True, help="dataset root (see --dataset)")
    p.add_argument("--framework", choices=("ms", "pt"), default="ms")
    p.add_argument("--dataset", default="imagenet", help="imagenet (class folders), cifar10, cifar100, svhn, tiny_imagenet")
    p.add_argument("--split", default="val")
    p.add_argument("--num-classes", type=int, help="default: the checkpoint's")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--workers", type=int, default=4, help="preprocessing threads")
    p.add_argument("--limit", type=int, help="only the first N samples")
    args = p.parse_args(argv)
    try:
        r = validate(args.model, args.checkpoint, args.data, args.framework, args.dataset, args.split,
                     args.num_classes, args.batch_size, args.workers, args.limit)
    except (ConversionError, DatasetError, KeyError, ValueError) as err:
        print(f"zoo validate: error: {err.args[0] if err.args else err}", file=sys.stderr)
        return 2
    print(f"{r['model']} ({'MindSpore' if r['framework'] == 'ms' else 'PyTorch'}) on {args.data} [{args.split}], "
          f"{r['count']} images: top-1 {r['top1']:.3f}%  top-5 {r['top5']:.3f}%  loss {r['loss']:.4f}  "
          f"({r['seconds']:.1f}s; {r['preprocess']})")
    return 0
