"""Validation with a model's own preprocessing, identical inputs on both frameworks.

    zoo validate MODEL --checkpoint FILE --data DIR [--framework ms|pt] [--split val] [--classes FILE]

The evaluation transform is the reference's, done with PIL exactly as torchvision/timm do it: resize
the shorter side to ``floor(size / crop_pct)`` with the registry's filter (bilinear or bicubic, PIL's
antialiased resampling), centre crop to ``size``, scale to [0, 1], normalise with the registry's mean
and std. It is framework-free: the same numpy batches go to either twin, so the same weights give the
same top-1/top-5 on both (MindSpore's own Resize differs from PIL's by several grey levels).

Labels are matched to the classifier's outputs by class name: the trainer and the converter store the
class list with the weights, so a split that lacks some of the checkpoint's classes is still scored
right, and one with classes the checkpoint does not know is an error. A checkpoint without a class list
(e.g. a reference's ImageNet file) needs exactly as many classes in the data as its classifier has
outputs (sorted folder names, as torchvision's ImageFolder orders them), or ``--classes FILE``. An
image that cannot be read is reported by file name and excluded from the count.
"""
from __future__ import annotations

import math
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Iterator, Optional, Tuple

import numpy as np

from zoo import registry
from zoo.data.sources import Source
from zoo.errors import ConfigError, DatasetError


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
    """(images, labels) batches of a split in order, preprocessed in a thread pool; unreadable images
    are reported (``source.bad_files``) and left out, never scored under another image's label."""
    n = len(source) if limit is None else min(limit, len(source))

    def load(i):
        img = source.read(i)
        return None if img is None else (transform(img), int(source.labels[i]))

    with ThreadPoolExecutor(max(1, workers)) as pool:
        for start in range(0, n, batch_size):
            items = [it for it in pool.map(load, range(start, min(start + batch_size, n))) if it is not None]
            if items:
                yield np.stack([x for x, _ in items]), np.asarray([y for _, y in items], np.int64)


def read_class_list(path: str) -> list:
    """One class name per line, in the classifier's output order."""
    try:
        with open(path) as f:
            names = [line.strip() for line in f if line.strip()]
    except OSError as err:
        raise ConfigError(f"--classes {path}: cannot read it ({err.strerror})") from None
    if len(set(names)) != len(names):
        raise ConfigError(f"--classes {path}: a class name appears twice")
    return names


def match_classes(source: Source, loaded, class_list: Optional[list] = None) -> Source:
    """The split with its labels in the classifier's order (by class name), or a DatasetError saying why not."""
    from zoo.data.sources import remap

    head = loaded.kwargs.get("num_classes")
    classes = class_list or loaded.classes
    whose = "--classes" if class_list else "the checkpoint"
    if classes is not None:
        if head is not None and len(classes) != head:
            raise DatasetError(f"{whose} names {len(classes)} classes but the classifier has {head} outputs")
        return remap(source, classes, whose)
    if source.num_classes != head:
        more = source.num_classes > head
        raise DatasetError(
            f"{source.name} split '{source.split}' has {source.num_classes} classes and the checkpoint's classifier "
            f"{head}: " + ("the data holds classes the model cannot predict" if more else
                           "the checkpoint carries no class list, so the labels cannot be matched to its outputs by "
                           "name") + "; pass --classes FILE (the classifier's class names, one per line, in order)")
    return source


def validate(model: str, checkpoint: str, data_dir: str, framework: str = "ms", dataset: str = "imagenet",
             split: str = "val", num_classes: Optional[int] = None, batch_size: int = 32, workers: int = 4,
             limit: Optional[int] = None, keep_logits: bool = False, class_list: Optional[list] = None) -> dict:
    """Top-1/top-5 (%) and mean cross-entropy of ``checkpoint`` on ``split``, with the model's preprocessing.

    ``num_classes``, if given, must equal the checkpoint's (validating another head would score a random
    classifier). ``class_list``: the classifier's class names, for a checkpoint that does not carry them.
    """
    from zoo.convert import core
    from zoo.data.sources import open_dataset
    from zoo.factory import build_kwargs
    from zoo.metrics import score, summarize

    if batch_size < 1 or workers < 1 or (limit is not None and limit < 1):
        raise ConfigError("batch_size, workers and limit must be at least 1")
    entry = registry.get(model)
    source = open_dataset(dataset, data_dir, split)
    loaded = core.load_state(model, checkpoint)
    head = loaded.kwargs.get("num_classes")
    if num_classes is not None and num_classes != head:
        raise ConfigError(f"--num-classes {num_classes}: the checkpoint's classifier has {head} classes; validating "
                          f"another number would score a randomly initialised classifier (leave --num-classes out)")
    source = match_classes(source, loaded, class_list)
    source.probe()
    net = entry.builder(framework)(**build_kwargs(entry, **loaded.kwargs))
    core.load_into(net, framework, loaded)
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
    if totals[3] == 0:
        raise DatasetError(f"no image of {dataset} split '{split}' at {data_dir} could be read "
                           f"({len(source.bad_files)} unreadable)")
    result = {"model": model, "framework": framework, **summarize(totals), "seconds": time.perf_counter() - t0,
              "skipped": list(source.bad_files),
              "preprocess": f"resize {transform.scale} {entry.preprocess.interpolation}, crop {transform.size}, "
                            f"mean {tuple(entry.preprocess.mean)}, std {tuple(entry.preprocess.std)}"}
    if keep_logits:
        result["logits"] = np.concatenate(logits) if logits else np.zeros((0, 0))
    return result


def build_parser():
    import argparse

    from zoo.cli_common import positive_int as _positive_int

    p = argparse.ArgumentParser(prog="zoo validate", description="Top-1/top-5 and loss of a checkpoint on a dataset "
                                "split, with the model's own preprocessing (the same inputs on either framework). "
                                "Labels are matched to the classifier by class name (the class list travels with "
                                "checkpoints the zoo wrote); unreadable images are reported and excluded.")
    p.add_argument("model", help="registered model name (see `zoo list`)")
    p.add_argument("--checkpoint", required=True, help="any checkpoint `zoo convert` reads")
    p.add_argument("--data", required=True, help="dataset root (see --dataset)")
    p.add_argument("--framework", choices=("ms", "pt"), default="ms")
    p.add_argument("--dataset", default="imagenet",
                   help="imagenet (class folders), cifar10, cifar100, svhn, tiny_imagenet, digits")
    p.add_argument("--split", default="val")
    p.add_argument("--num-classes", type=_positive_int, help="must equal the checkpoint's (a check)")
    p.add_argument("--classes", metavar="FILE", help="the classifier's class names, one per line, in output order "
                   "(for a checkpoint that does not carry them)")
    p.add_argument("--batch-size", type=_positive_int, default=32)
    p.add_argument("--workers", type=_positive_int, default=4, help="preprocessing threads")
    p.add_argument("--limit", type=_positive_int, help="only the first N samples")
    return p


def main(argv=None) -> int:
    import sys

    from zoo.cli_common import error
    from zoo.errors import ZooError

    args = build_parser().parse_args(argv)
    try:
        classes = read_class_list(args.classes) if args.classes else None
        r = validate(args.model, args.checkpoint, args.data, args.framework, args.dataset, args.split,
                     args.num_classes, args.batch_size, args.workers, args.limit, class_list=classes)
    except ZooError as err:
        return error("validate", err)
    skipped = r["skipped"]
    print(f"{r['model']} ({'MindSpore' if r['framework'] == 'ms' else 'PyTorch'}) on {args.data} [{args.split}], "
          f"{r['count']} images: top-1 {r['top1']:.3f}%  top-5 {r['top5']:.3f}%  loss {r['loss']:.4f}  "
          f"({r['seconds']:.1f}s; {r['preprocess']})" + (f"; {len(skipped)} unreadable image(s) excluded" if skipped
                                                         else ""))
    if skipped:
        print(f"zoo validate: warning: {len(skipped)} unreadable image(s) were excluded from the count: "
              + ", ".join(skipped[:10]) + (", ..." if len(skipped) > 10 else ""), file=sys.stderr)
    return 0
