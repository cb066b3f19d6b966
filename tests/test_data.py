"""Datasets: every supported layout, clear errors for missing or malformed ones, sharding and the pipeline."""
import os

import numpy as np
import pytest

from zoo.data.ms import epoch_indices
from zoo.data.sources import DatasetError, open_dataset
from zoo.data.synthetic import make_cifar10_bin, make_image_folder


def test_image_folder_and_its_errors(tmp_path):
    root = make_image_folder(str(tmp_path / "d"), classes=3, per_class=4, size=16)
    tr = open_dataset("imagenet", root, "train")
    va = open_dataset("imagenet", root, "val", tr.classes)
    assert tr.classes == ["class_0", "class_1", "class_2"] and len(tr) == 12 and len(va) == 6
    img, label = tr[5]
    assert img.shape == (16, 16, 3) and img.dtype == np.uint8 and label == 1
    with pytest.raises(DatasetError, match=r"does not exist\.\nExpected layout for dataset 'imagenet'"):
        open_dataset("imagenet", str(tmp_path / "nope"), "train")
    with pytest.raises(DatasetError, match="the split folder 'test' does not exist"):
        open_dataset("imagenet", root, "test")
    flat = tmp_path / "flat" / "train"
    flat.mkdir(parents=True)
    for f in ("a.jpg", "b.jpg"):
        (flat / f).write_bytes(b"x")
    with pytest.raises(DatasetError, match=r"no class folders \(found 2 images directly in it\)"):
        open_dataset("imagenet", str(tmp_path / "flat"), "train")
    os.makedirs(os.path.join(root, "val", "class_9"))
    with pytest.raises(DatasetError, match="class folders not in the training split: class_9"):
        open_dataset("imagenet", root, "val", tr.classes)
    with pytest.raises(DatasetError, match="unknown dataset 'mnist'"):
        open_dataset("mnist", root, "train")


def test_unreadable_image_is_skipped_and_reported(tmp_path, caplog):
    root = make_image_folder(str(tmp_path / "d"), classes=2, per_class=3, size=8, splits=(("train", 1.0),))
    bad = os.path.join(root, "train", "class_0", "0001.png")
    open(bad, "wb").write(b"broken")
    src = open_dataset("imagenet", root, "train")
    with caplog.at_level("WARNING", logger="zoo.data"):
        img, label = src[1]
    assert img.shape == (8, 8, 3) and src.bad_files == [bad]
    assert f"unreadable image skipped: {bad}" in caplog.text


def test_cifar_binary(tmp_path):
    root = make_cifar10_bin(str(tmp_path), per_file=10)
    tr, te = open_dataset("cifar10", root, "train"), open_dataset("cifar10", root, "val")
    assert len(tr) == 50 and len(te) == 10 and tr.num_classes == 10
    assert tr.images.shape == (50, 32, 32, 3) and tr[3][0].dtype == np.uint8
    # the record layout: byte 0 is the label, then 1024 R, 1024 G, 1024 B bytes (row-major)
    raw = np.fromfile(os.path.join(root, "cifar-10-batches-bin", "data_batch_1.bin"), np.uint8).reshape(10, 3073)
    assert tr.labels[0] == raw[0, 0] and tr.images[0, 0, 1, 2] == raw[0, 1 + 2 * 1024 + 1]
    os.remove(os.path.join(root, "cifar-10-batches-bin", "data_batch_3.bin"))
    with pytest.raises(DatasetError, match="missing data_batch_3.bin"):
        open_dataset("cifar10", root, "train")
    with open(os.path.join(root, "cifar-10-batches-bin", "test_batch.bin"), "ab") as f:
        f.write(b"\x00" * 5)
    with pytest.raises(DatasetError, match="not a whole number of 3073-byte records"):
        open_dataset("cifar10", root, "test")
    with pytest.raises(DatasetError, match="cifar-100-binary"):
        open_dataset("cifar100", root, "train")


def test_cifar100_fine_labels(tmp_path):
    d = tmp_path / "cifar-100-binary"
    d.mkdir()
    rec = np.zeros((4, 3074), np.uint8)
    rec[:, 0], rec[:, 1] = [1, 2, 3, 4], [10, 20, 99, 0]  # coarse, fine
    rec.tofile(d / "train.bin")
    src = open_dataset("cifar100", str(tmp_path), "train")
    assert src.labels.tolist() == [10, 20, 99, 0] and src.num_classes == 100


def test_svhn_mat(tmp_path):
    from scipy.io import savemat

    x = np.random.default_rng(0).integers(0, 255, (32, 32, 3, 5), dtype=np.uint8)
    savemat(tmp_path / "train_32x32.mat", {"X": x, "y": np.array([[1], [10], [3], [10], [9]])})
    src = open_dataset("svhn", str(tmp_path), "train")
    assert src.labels.tolist() == [1, 0, 3, 0, 9] and np.array_equal(src[2][0], x[..., 2])
    with pytest.raises(DatasetError, match="test_32x32.mat: file not found"):
        open_dataset("svhn", str(tmp_path), "test")


def test_tiny_imagenet_layout(tmp_path):
    from PIL import Image

    root = tmp_path / "tiny"
    wnids = ["n01", "n02"]
    (root).mkdir()
    (root / "wnids.txt").write_text("\n".join(wnids) + "\n")
    for w in wnids:
        (root / "train" / w / "images").mkdir(parents=True)
        for i in range(2):
            Image.new("RGB", (64, 64), (10, 20, 30)).save(root / "train" / w / "images" / f"{w}_{i}.JPEG")
    (root / "val" / "images").mkdir(parents=True)
    lines = []
    for i, w in enumerate(["n02", "n01", "n02"]):
        Image.new("RGB", (64, 64)).save(root / "val" / "images" / f"val_{i}.JPEG")
        lines.append(f"val_{i}.JPEG\t{w}\t0\t0\t10\t10")
    (root / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")
    tr, va = open_dataset("tiny_imagenet", str(root), "train"), open_dataset("tiny_imagenet", str(root), "val")
    assert len(tr) == 4 and va.labels.tolist() == [1, 0, 1] and va[0][0].shape == (64, 64, 3)
    (root / "val" / "val_annotations.txt").write_text("val_0.JPEG\tn99\t0\n")
    with pytest.raises(DatasetError, match="line 1: expected"):
        open_dataset("tiny_imagenet", str(root), "val")
    with pytest.raises(DatasetError, match="has no labels"):
        open_dataset("tiny_imagenet", str(root), "test")


def test_epoch_indices_shards_are_disjoint_equal_and_reproducible():
    a = [epoch_indices(103, 7, 2, rank=r, world=4) for r in range(4)]
    assert all(len(x) == 25 for x in a)
    assert len(set(np.concatenate(a))) == 100
    assert np.array_equal(a[1], epoch_indices(103, 7, 2, rank=1, world=4))
    assert not np.array_equal(epoch_indices(103, 7, 2), epoch_indices(103, 7, 3))
    ev = [epoch_indices(103, 7, 0, shuffle=False, rank=r, world=4, equal_shards=False) for r in range(4)]
    assert sorted(np.concatenate(ev).tolist()) == list(range(103))


def test_pipeline_batches(tmp_path):
    from zoo.data.ms import batches, create_loader
    from zoo.train.config import load_config

    root = make_image_folder(str(tmp_path / "d"), classes=2, per_class=6, size=40)
    cfg = load_config(None, {"model": "triplet_resnet18_cifar", "image_resize": "32", "batch_size": "4",
                             "num_parallel_workers": "1"})
    src = open_dataset("imagenet", root, "train")
    loader, steps, idx = create_loader(src, cfg, training=True, epoch=0, start_step=1)
    out = list(batches(loader))
    assert steps == 2 and len(out) == 2 and len(idx) == 8
    x, y = out[0]
    assert x.shape == (4, 3, 32, 32) and x.dtype == np.float32 and y.dtype == np.int32
    val = open_dataset("imagenet", root, "val", src.classes)
    loader, steps, _ = create_loader(val, cfg, training=False)
    assert sum(len(b[1]) for b in batches(loader)) == len(val) == 6 and steps == 2


# --- image depth, empty classes, unreadable splits, class matching (issue 10: 3, 7, 8) ----------------------

def test_high_bit_depth_images_are_scaled_or_refused_by_name(tmp_path):
    """A 16-bit PNG used to become all white and a float TIFF all black (convert('RGB') clips)."""
    from PIL import Image

    from zoo.data.sources import UnsupportedImage, decode

    ramp = np.linspace(0, 1, 64 * 64).reshape(64, 64)
    Image.fromarray(np.round(ramp * 65535).astype(np.uint16)).save(tmp_path / "g16.png")
    Image.fromarray(ramp.astype(np.float32)).save(tmp_path / "f.tif")
    expect = np.round(ramp * 255)
    for name in ("g16.png", "f.tif"):
        img = decode(str(tmp_path / name))
        assert img.shape == (64, 64, 3) and img.dtype == np.uint8, name
        assert np.abs(img[..., 0].astype(float) - expect).max() <= 1, name  # the ramp survives, scaled
        assert (img[..., 0] == img[..., 2]).all()
    Image.fromarray((ramp * 7).astype(np.float32)).save(tmp_path / "hdr.tif")
    Image.fromarray((ramp * 1e6).astype(np.int32)).save(tmp_path / "i32.tif")
    for name, says in (("hdr.tif", r"outside \[0, 1\]"), ("i32.tif", "32-bit integer pixels")):
        with pytest.raises(UnsupportedImage, match=says) as err:
            decode(str(tmp_path / name))
        assert name in str(err.value)


def test_empty_class_folder_is_warned(tmp_path, caplog):
    root = make_image_folder(str(tmp_path / "d"), classes=2, per_class=2, size=8, splits=(("train", 1.0),))
    os.makedirs(os.path.join(root, "train", "class_9"))
    with caplog.at_level("WARNING", logger="zoo.data"):
        src = open_dataset("imagenet", root, "train")
    assert src.classes == ["class_0", "class_1", "class_9"]
    assert "1 class folder(s) hold no images: class_9" in caplog.text and "never trained on" in caplog.text


def test_split_without_a_readable_image_is_named_before_any_work(tmp_path):
    root = make_image_folder(str(tmp_path / "d"), classes=2, per_class=2, size=8, splits=(("train", 1.0),))
    for dirpath, _, files in os.walk(os.path.join(root, "train")):
        for f in files:
            open(os.path.join(dirpath, f), "wb").write(b"not an image")
    src = open_dataset("imagenet", root, "train")
    with pytest.raises(DatasetError, match=r"none of the 4 images of imagenet split 'train' can be read: .*0000\.png"):
        src.probe()
    with pytest.raises(DatasetError, match="no image of imagenet split 'train' can be read"):
        src[0]  # what the pipeline would hit: the same error, kept for the trainer to report
    assert src.error is not None


def test_remap_matches_labels_by_class_name(tmp_path):
    from zoo.data.sources import remap

    root = make_image_folder(str(tmp_path / "d"), classes=3, per_class=2, size=8, splits=(("val", 1.0),))
    import shutil
    shutil.rmtree(os.path.join(root, "val", "class_1"))
    va = open_dataset("imagenet", root, "val")  # its own folders: class_0 -> 0, class_2 -> 1
    assert va.labels.tolist() == [0, 0, 1, 1]
    fixed = remap(va, ["class_0", "class_1", "class_2"])
    assert fixed.labels.tolist() == [0, 0, 2, 2] and fixed.num_classes == 3
    with pytest.raises(DatasetError, match="1 of them unknown to the checkpoint .2 classes.: class_2"):
        remap(va, ["class_0", "class_1"])
