"""Dataset readers: the samples of a split, with their layout checked before any work starts.

Framework-free (numpy and PIL): the same source feeds the MindSpore pipeline and, through it, the
PyTorch trainer, so both frameworks see identical inputs. Supported layouts:

- ``imagenet`` (any ImageNet-style folder tree): ``DATA_DIR/<split>/<class>/<image>``;
- ``cifar10`` / ``cifar100``: the binary releases (``cifar-10-batches-bin``, ``cifar-100-binary``);
- ``svhn``: ``train_32x32.mat`` / ``test_32x32.mat`` (the cropped-digits format);
- ``tiny_imagenet``: ``wnids.txt``, ``train/<wnid>/images/*.JPEG``, ``val/images/*.JPEG`` with
  ``val/val_annotations.txt``;
- ``digits``: scikit-learn's bundled handwritten digits (1,797 real 8x8 images, 10 classes; no files,
  nothing downloaded), upsampled to 32 px RGB, with a fixed stratified 80/20 train/val split.

A missing or malformed dataset raises ``DatasetError`` naming the path and the expected layout; an
empty class folder is a warning. Images become 8-bit RGB: 16-bit greyscale is scaled (65535 -> 255),
float greyscale in [0, 1] too, anything without a known scale (32-bit integers, floats outside [0, 1])
is refused by name. In training, an image that cannot be decoded is reported by file name and replaced
by the next readable one, so one bad file does not stop a long run; validation (``Source.read``)
excludes it instead. ``Source.probe`` finds a split where no image can be read before any work starts.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from typing import List, Optional, Sequence, Tuple

import numpy as np

log = logging.getLogger("zoo.data")

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".pgm", ".tif", ".tiff", ".webp")

LAYOUTS = {
    "imagenet": "DATA_DIR/<split>/<class name>/<image>.jpg|png|...  (e.g. DATA_DIR/train/n01440764/x.JPEG); "
                "one folder per class, the same class folders in every split",
    "cifar10": "DATA_DIR/cifar-10-batches-bin/{data_batch_1..5,test_batch}.bin (or those files in DATA_DIR): the "
               "binary release, 10000 records of 1 label byte + 3072 pixel bytes per file",
    "cifar100": "DATA_DIR/cifar-100-binary/{train,test}.bin (or in DATA_DIR): the binary release, records of 2 label "
                "bytes (coarse, fine) + 3072 pixel bytes",
    "svhn": "DATA_DIR/{train,test}_32x32.mat: the cropped-digits release (X: 32x32x3xN uint8, y: Nx1, 10 = digit 0)",
    "digits": "no files: scikit-learn's bundled 8x8 digits (data_dir is ignored); splits train and val",
    "tiny_imagenet": "DATA_DIR/wnids.txt, DATA_DIR/train/<wnid>/images/*.JPEG, DATA_DIR/val/images/*.JPEG and "
                     "DATA_DIR/val/val_annotations.txt (<file>\\t<wnid>\\t...)",
}
SPLIT_ALIASES = {"val": "test", "validation": "test", "eval": "test"}  # for datasets that ship train/test only


from zoo.errors import DatasetError  # noqa: E402,F401  (re-exported)


def _error(name: str, path: str, problem: str) -> DatasetError:
    return DatasetError(f"{path}: {problem}.\nExpected layout for dataset '{name}': {LAYOUTS[name]}")


@dataclass
class Source:
    """The samples of one split: encoded image files or decoded uint8 arrays, and integer labels."""

    name: str
    split: str
    classes: List[str]
    labels: np.ndarray
    files: Optional[List[str]] = None  # image files (decoded on access)
    images: Optional[np.ndarray] = None  # (N, H, W, 3) uint8
    bad_files: List[str] = field(default_factory=list)
    error: Optional[DatasetError] = None  # set when no image of the split could be read

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def __getitem__(self, index: int) -> Tuple[np.ndarray, np.int32]:
        """(HWC uint8 RGB image, label); an undecodable file is reported and the next readable one used."""
        index = int(index)
        if self.images is not None:
            return self.images[index], np.int32(self.labels[index])
        for k in range(len(self)):
            i = (index + k) % len(self)
            try:
                return decode(self.files[i]), np.int32(self.labels[i])
            except Exception as err:  # PIL raises many types for broken files
                self._report(i, err, "using the next sample instead")
        self.error = DatasetError(f"no image of {self.name} split '{self.split}' can be read "
                                  f"({len(self.bad_files)} unreadable, e.g. {', '.join(self.bad_files[:3])})")
        raise self.error

    def read(self, index: int) -> Optional[np.ndarray]:
        """The image of sample ``index``, or None (reported by file name) if it cannot be read."""
        if self.images is not None:
            return self.images[index]
        try:
            return decode(self.files[index])
        except Exception as err:
            self._report(index, err, "excluded")
            return None

    def _report(self, i: int, err: Exception, action: str) -> None:
        if self.files[i] not in self.bad_files:
            self.bad_files.append(self.files[i])
            reason = err.args[0] if isinstance(err, DatasetError) else f"{type(err).__name__}: {err}"
            log.warning("unreadable image skipped: %s (%s); %s", self.files[i], reason, action)

    def probe(self, samples: int = 50, seed: int = 0) -> None:
        """Decode images of a random sample until one works; ``DatasetError`` if none of ``samples`` does."""
        if self.files is None or not len(self):
            return
        order = np.random.default_rng(seed).permutation(len(self))[:samples]
        errors = []
        for i in order:
            try:
                decode(self.files[i])
                return
            except Exception as err:
                why = err.args[0] if isinstance(err, DatasetError) else type(err).__name__
                errors.append(f"{self.files[i]} ({why})")
        self.error = DatasetError(
            f"{'none' if len(order) == len(self) else f'none of {len(order)} sampled'} of the {len(self)} images of "
            f"{self.name} split '{self.split}' can be read: {'; '.join(errors[:3])}"
            + (f"; ... ({len(errors) - 3} more)" if len(errors) > 3 else "") + ". Check the files (are they images?)")
        raise self.error


def remap(source: Source, classes: Sequence[str], whose: str = "the checkpoint") -> Source:
    """``source`` with its labels renumbered to the order of ``classes`` (matched by name): a split that
    lacks some classes keeps the right labels; one with a class ``classes`` lacks is a ``DatasetError``."""
    classes = list(classes)
    index = {c: i for i, c in enumerate(classes)}
    extra = [c for c in source.classes if c not in index]
    if extra:
        raise DatasetError(f"{source.name} split '{source.split}' has {len(source.classes)} classes, {len(extra)} of "
                           f"them unknown to {whose} ({len(classes)} classes): {', '.join(extra[:5])}"
                           + (", ..." if len(extra) > 5 else ""))
    table = np.asarray([index[c] for c in source.classes], np.int64)
    labels = table[source.labels] if len(source.labels) else source.labels
    return Source(source.name, source.split, classes, labels, files=source.files, images=source.images,
                  bad_files=source.bad_files)


class UnsupportedImage(DatasetError):
    """An image whose pixel values have no known scale to 8 bits."""


def decode(path: str) -> np.ndarray:
    """An image file as an (H, W, 3) uint8 RGB array (high bit depths scaled, unknown scales refused)."""
    from PIL import Image

    with Image.open(path) as im:
        return to_rgb8(im, path)


def to_rgb8(im, path: str = "image") -> np.ndarray:
    mode = im.mode
    if mode == "RGB":
        return np.asarray(im)
    if mode.startswith("I"):  # 16-bit (I;16*) or 32-bit integer greyscale
        a = np.asarray(im).astype(np.int64)
        if mode == "I" and a.size and (a.min() < 0 or a.max() > 65535):
            raise UnsupportedImage(f"{path}: 32-bit integer pixels ({a.min()} to {a.max()}) have no known scale; "
                                   "save it as an 8- or 16-bit image")
        return _grey(np.round(a / 257.0))
    if mode == "F":
        a = np.asarray(im, np.float64)
        if a.size and (not np.isfinite(a).all() or a.min() < 0 or a.max() > 1):
            raise UnsupportedImage(f"{path}: floating-point pixels outside [0, 1] (from {np.nanmin(a):g} to "
                                   f"{np.nanmax(a):g}) have no known scale; save it as an 8- or 16-bit image")
        return _grey(np.round(a * 255.0))
    return np.asarray(im.convert("RGB"))


def _grey(a: np.ndarray) -> np.ndarray:
    return np.repeat(np.clip(a, 0, 255).astype(np.uint8)[..., None], 3, axis=2)


def open_dataset(name: str, root: str, split: str, classes: Optional[Sequence[str]] = None) -> Source:
    """Open ``split`` of dataset ``name`` under ``root``; ``classes`` (the train split's) fixes the label order."""
    name = name.lower()
    if name not in LAYOUTS:
        raise DatasetError(f"unknown dataset {name!r}; supported: {', '.join(LAYOUTS)}")
    if name != "digits" and (not root or not os.path.isdir(root)):
        raise _error(name, root or "''", "the dataset directory does not exist")
    return {"imagenet": _image_folder, "cifar10": _cifar, "cifar100": _cifar, "svhn": _svhn,
            "tiny_imagenet": _tiny_imagenet, "digits": _digits}[name](name, root, split, classes)


def _list_images(folder: str) -> List[str]:
    return sorted(os.path.join(folder, f) for f in os.listdir(folder)
                  if f.lower().endswith(IMAGE_EXTENSIONS) and not f.startswith("."))


def _image_folder(name, root, split, classes):
    path = os.path.join(root, split)
    if not os.path.isdir(path):
        raise _error(name, path, f"the split folder '{split}' does not exist")
    found = sorted(d for d in os.listdir(path) if os.path.isdir(os.path.join(path, d)) and not d.startswith("."))
    if not found:
        loose = _list_images(path)
        raise _error(name, path, "no class folders" + (f" (found {len(loose)} images directly in it)" if loose else ""))
    classes = list(classes) if classes is not None else found
    unknown = sorted(set(found) - set(classes))
    if unknown:
        raise _error(name, path, f"class folders not in the training split: {', '.join(unknown[:5])}")
    index = {c: i for i, c in enumerate(classes)}
    files, labels, empty = [], [], []
    for c in found:
        imgs = _list_images(os.path.join(path, c))
        if not imgs:
            empty.append(c)
        files += imgs
        labels += [index[c]] * len(imgs)
    if empty and files:
        log.warning("%s: %d class folder(s) hold no images: %s; %s", path, len(empty), ", ".join(empty[:10]),
                    "those classes are never trained on" if classes is found else "those classes are not evaluated")
    if not files:
        raise _error(name, path, "the class folders hold no images")
    return Source(name, split, classes, np.asarray(labels, np.int64), files=files)


def _read_records(files, label_bytes: int, label_index: int):
    images, labels = [], []
    rec = label_bytes + 3072
    for f in files:
        raw = np.fromfile(f, np.uint8)
        if raw.size == 0 or raw.size % rec:
            raise ValueError(f"{f}: {raw.size} bytes is not a whole number of {rec}-byte records")
        raw = raw.reshape(-1, rec)
        labels.append(raw[:, label_index].astype(np.int64))
        images.append(raw[:, label_bytes:].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
    return np.concatenate(images), np.concatenate(labels)


def _cifar(name, root, split, classes):
    split = SPLIT_ALIASES.get(split, split)
    if split not in ("train", "test"):
        raise _error(name, root, f"split '{split}' does not exist (use train or test)")
    if name == "cifar10":
        sub, files = "cifar-10-batches-bin", ([f"data_batch_{i}.bin" for i in range(1, 6)] if split == "train"
                                             else ["test_batch.bin"])
        label_bytes, label_index, n_classes = 1, 0, 10
    else:
        sub, files = "cifar-100-binary", [f"{split}.bin"]
        label_bytes, label_index, n_classes = 2, 1, 100  # fine labels
    base = os.path.join(root, sub) if os.path.isdir(os.path.join(root, sub)) else root
    missing = [f for f in files if not os.path.isfile(os.path.join(base, f))]
    if missing:
        raise _error(name, base, f"missing {', '.join(missing)}")
    try:
        images, labels = _read_records([os.path.join(base, f) for f in files], label_bytes, label_index)
    except ValueError as err:
        raise _error(name, base, str(err)) from None
    if labels.max() >= n_classes:
        raise _error(name, base, f"labels up to {labels.max()} for a {n_classes}-class dataset")
    return Source(name, split, [str(i) for i in range(n_classes)], labels, images=images)


def _svhn(name, root, split, classes):
    split = SPLIT_ALIASES.get(split, split)
    path = os.path.join(root, f"{split}_32x32.mat")
    if split not in ("train", "test", "extra"):
        raise _error(name, root, f"split '{split}' does not exist (use train, test or extra)")
    if not os.path.isfile(path):
        raise _error(name, path, "file not found")
    from scipy.io import loadmat

    try:
        mat = loadmat(path)
        x, y = mat["X"], mat["y"].reshape(-1).astype(np.int64)
    except Exception as err:
        raise _error(name, path, f"cannot read it ({type(err).__name__}: {err})") from None
    if x.ndim != 4 or x.shape[:3] != (32, 32, 3) or x.shape[3] != y.size:
        raise _error(name, path, f"X has shape {x.shape} and y {y.size} labels")
    y[y == 10] = 0
    return Source(name, split, [str(i) for i in range(10)], y, images=np.ascontiguousarray(x.transpose(3, 0, 1, 2)))


def _tiny_imagenet(name, root, split, classes):
    wnids_path = os.path.join(root, "wnids.txt")
    if not os.path.isfile(wnids_path):
        raise _error(name, wnids_path, "file not found")
    wnids = [w.strip() for w in open(wnids_path) if w.strip()]
    index = {w: i for i, w in enumerate(wnids)}
    files, labels = [], []
    if split == "train":
        for w in wnids:
            folder = os.path.join(root, "train", w, "images")
            if not os.path.isdir(folder):
                raise _error(name, folder, f"missing the image folder of class {w}")
            imgs = _list_images(folder)
            files += imgs
            labels += [index[w]] * len(imgs)
    elif split in ("val", "validation"):
        ann = os.path.join(root, "val", "val_annotations.txt")
        if not os.path.isfile(ann):
            raise _error(name, ann, "file not found")
        for n, line in enumerate(open(ann), 1):
            parts = line.rstrip("\n").split("\t")
            if len(parts) < 2 or parts[1] not in index:
                raise _error(name, ann, f"line {n}: expected '<file>\\t<wnid>\\t...' with a wnid from wnids.txt")
            f = os.path.join(root, "val", "images", parts[0])
            if not os.path.isfile(f):
                raise _error(name, f, "listed in val_annotations.txt but missing")
            files.append(f)
            labels.append(index[parts[1]])
    else:
        raise _error(name, root, f"split '{split}' has no labels in Tiny-ImageNet (use train or val)")
    if not files:
        raise _error(name, root, f"no images in split '{split}'")
    return Source(name, split, wnids, np.asarray(labels, np.int64), files=files)


def _digits(name, root, split, classes):
    split = {"validation": "val", "test": "val"}.get(split, split)
    if split not in ("train", "val"):
        raise _error(name, "digits", f"split '{split}' does not exist (use train or val)")
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise DatasetError("the digits dataset comes with scikit-learn: pip install scikit-learn") from None
    from PIL import Image

    d = load_digits()
    rng = np.random.default_rng(0)
    val = np.zeros(len(d.target), bool)
    for c in range(10):  # stratified: 20% of each class
        idx = rng.permutation(np.flatnonzero(d.target == c))
        val[idx[: len(idx) // 5]] = True
    keep = val if split == "val" else ~val
    images = [np.asarray(Image.fromarray(np.uint8(im * 255.0 / 16.0)).resize((32, 32), Image.BILINEAR))
              for im in d.images[keep]]
    images = np.repeat(np.stack(images)[..., None], 3, axis=3)
    return Source(name, split, [str(i) for i in range(10)], d.target[keep].astype(np.int64), images=images)
