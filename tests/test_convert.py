"""The converter: formats, layouts, strictness, and bad input (which must leave DST untouched)."""
import os
import pickle

import numpy as np
import pytest
import torch

import zoo
from zoo.convert import ConversionError, convert_file, load_state, read_checkpoint

MODEL = "triplet_resnet18_cifar"  # small and fast; same converter paths as every model


@pytest.fixture(scope="module")
def pt_model():
    torch.manual_seed(0)
    return zoo.create_model(MODEL, "pt")


def official_checkpoint(model, path, rename=lambda k: k):
    """What the reference training script saves: a DataParallel state_dict inside a wrapper."""
    sd = {"module." + rename(k): v for k, v in model.state_dict().items()}
    torch.save({"epoch": 3, "arch": "resnet", "state_dict": sd, "best_prec1": torch.tensor(71.0),
                "optimizer": {"state": {}, "param_groups": [{"lr": 0.1}]}}, path)


def assert_same_weights(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    for k in sa:
        if not k.endswith("num_batches_tracked"):
            assert torch.equal(sa[k], sb[k]), k


def test_pth_to_ckpt_to_pth_is_bit_identical(tmp_path, pt_model):
    src = tmp_path / "official.pth.tar"
    official_checkpoint(pt_model, src)
    loaded = convert_file(MODEL, str(src), str(tmp_path / "m.ckpt"))
    assert any("state_dict" in n for n in loaded.notes) and any("module." in n for n in loaded.notes)
    convert_file(MODEL, str(tmp_path / "m.ckpt"), str(tmp_path / "back.pth"))
    convert_file(MODEL, str(tmp_path / "m.ckpt"), str(tmp_path / "back.safetensors"), to="pt")
    for f in ("back.pth", "back.safetensors", "m.ckpt"):
        assert_same_weights(pt_model, zoo.create_model(MODEL, "pt", checkpoint=str(tmp_path / f)))


def test_mindspore_safetensors_and_layout_names(tmp_path, pt_model):
    convert_file(MODEL, _save_pt(pt_model, tmp_path / "a.pth"), str(tmp_path / "ms.safetensors"), to="ms")
    from safetensors.numpy import load_file
    names = set(load_file(str(tmp_path / "ms.safetensors")))
    assert "bn1.gamma" in names and "bn1.moving_variance" in names and "bn1.weight" not in names
    assert not any(n.endswith("num_batches_tracked") for n in names)
    assert_same_weights(pt_model, zoo.create_model(MODEL, "pt", checkpoint=str(tmp_path / "ms.safetensors")))


def _save_pt(model, path):
    torch.save(model.state_dict(), path)
    return str(path)


@pytest.mark.parametrize("block_attr,gates,inner", [
    ("pcam", ("ChannelGateH", "ChannelGateW", "SpatialGate"), "spatial"),
    ("triplet", ("cw", "hc", "hw"), "conv"),
    ("triplet_attention", ("cw", "hc", "hw"), "spatial"),
])
def test_official_module_name_aliases(tmp_path, pt_model, block_attr, gates, inner):
    zoo_gates = ("ChannelGateH", "ChannelGateW", "SpatialGate")

    def rename(k):
        k = k.replace(".triplet_attention.", f".{block_attr}.")
        for z, g in zip(zoo_gates, gates):
            k = k.replace(f".{z}.spatial.", f".{g}.{inner}.")
        return k

    src = tmp_path / "alias.pth.tar"
    official_checkpoint(pt_model, src, rename)
    loaded = load_state(MODEL, str(src))
    assert loaded.layout == "official"
    assert_same_weights(pt_model, zoo.create_model(MODEL, "pt", checkpoint=str(src)))


def test_gate_kernel_is_read_from_the_weights(tmp_path):
    k3 = zoo.create_model("triplet_resnet18_cifar", "pt", gate_kernel=3)
    src = tmp_path / "k3.pth"
    official_checkpoint(k3, src)
    loaded = load_state(MODEL, str(src))
    assert loaded.kwargs["gate_kernel"] == 3
    assert any("gate_kernel=3" in n for n in loaded.notes)
    net = zoo.create_model(MODEL, "ms", checkpoint=str(src))
    assert tuple(net.layer1[0].triplet_attention.SpatialGate.spatial.conv.weight.shape) == (1, 2, 3, 3)


def test_num_classes_from_checkpoint_and_head_drop(tmp_path, pt_model):
    m100 = zoo.create_model(MODEL, "pt", num_classes=100)
    src = _save_pt(m100, tmp_path / "c100.pth")
    assert zoo.create_model(MODEL, "pt", checkpoint=src).fc.out_features == 100
    fine = zoo.create_model(MODEL, "pt", checkpoint=src, num_classes=7)
    assert fine.fc.out_features == 7
    assert torch.equal(fine.conv1.weight, m100.conv1.weight)
    loaded = load_state(MODEL, src, num_classes=7)
    assert loaded.keep_init == ("fc.weight", "fc.bias")
    assert any("classifier 'fc' dropped" in n for n in loaded.notes)
    net = zoo.create_model(MODEL, "ms", checkpoint=src, num_classes=7)
    assert tuple(net.fc.weight.shape) == (7, 512)


# --- bad input ----------------------------------------------------------------------------------

def test_truncated_file_is_reported_and_dst_untouched(tmp_path, pt_model):
    src = tmp_path / "full.pth"
    _save_pt(pt_model, src)
    data = src.read_bytes()
    bad = tmp_path / "truncated.pth"
    bad.write_bytes(data[: len(data) // 2])
    dst = tmp_path / "out.ckpt"
    with pytest.raises(ConversionError, match="truncated or corrupt"):
        convert_file(MODEL, str(bad), str(dst))
    assert not dst.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp file left


def test_truncated_ckpt_and_safetensors(tmp_path, pt_model):
    convert_file(MODEL, _save_pt(pt_model, tmp_path / "a.pth"), str(tmp_path / "a.ckpt"))
    convert_file(MODEL, str(tmp_path / "a.ckpt"), str(tmp_path / "a.safetensors"), to="pt")
    for name in ("a.ckpt", "a.safetensors"):
        data = (tmp_path / name).read_bytes()
        bad = tmp_path / f"bad_{name}"
        bad.write_bytes(data[: len(data) // 3])
        with pytest.raises(ConversionError, match="truncated or corrupt"):
            read_checkpoint(str(bad))


def test_other_architecture_names_the_mismatched_tensors(tmp_path):
    other = zoo.create_model("triplet_resnet50_cifar", "pt")
    src = _save_pt(other, tmp_path / "r50.pth")
    dst = tmp_path / "out.ckpt"
    with pytest.raises(ConversionError) as err:
        convert_file(MODEL, src, str(dst))
    msg = str(err.value)
    assert "does not fit triplet_resnet18_cifar" in msg
    assert "layer1.0.conv3.weight" in msg  # a tensor the file has and the model does not
    assert "the checkpoint's shapes fit: triplet_resnet50_cifar" in msg
    assert not dst.exists()


def test_shape_mismatch_is_listed(tmp_path, pt_model):
    sd = dict(pt_model.state_dict())
    sd["layer2.0.conv1.weight"] = torch.zeros(128, 64, 5, 5)
    src = tmp_path / "bad_shape.pth"
    torch.save(sd, src)
    with pytest.raises(ConversionError,
                       match=r"layer2\.0\.conv1\.weight \(128, 64, 5, 5\) in the file vs \(128, 64, 3, 3\)"):
        load_state(MODEL, str(src))


class _Payload:
    def __reduce__(self):
        return (os.system, ("touch /tmp/zoo_pickle_payload_ran",))


def test_pickle_carrying_code_is_refused(tmp_path):
    marker = "/tmp/zoo_pickle_payload_ran"
    if os.path.exists(marker):
        os.remove(marker)
    src = tmp_path / "evil.pth"
    torch.save({"state_dict": {"conv1.weight": torch.zeros(1)}, "hook": _Payload()}, src)
    with pytest.raises(ConversionError, match="refused to load"):
        read_checkpoint(str(src))
    assert not os.path.exists(marker)


def test_timm_checkpoint_saver_file_with_args_loads(tmp_path, pt_model):
    """timm's CheckpointSaver stores the run's argparse.Namespace next to the weights: allowed, as data."""
    import argparse

    src = tmp_path / "model_best.pth.tar"
    torch.save({"epoch": 3, "arch": "resnet18", "state_dict": pt_model.state_dict(),
                "optimizer": {"state": {}, "param_groups": [{"lr": 0.1}]}, "version": 2,
                "args": argparse.Namespace(model="resnet18", lr=0.1, drop_path=None, sched="cosine"),
                "metric": 71.0}, src)
    ckpt = read_checkpoint(str(src))
    assert any("'state_dict'" in n and "args" in n for n in ckpt.notes)
    assert_same_weights(pt_model, zoo.create_model(MODEL, "pt", checkpoint=str(src)))


def test_namespace_carrying_code_is_refused(tmp_path):
    import argparse

    marker = "/tmp/zoo_pickle_payload_ran"
    if os.path.exists(marker):
        os.remove(marker)
    src = tmp_path / "evil_args.pth"
    torch.save({"state_dict": {"conv1.weight": torch.zeros(1)}, "args": argparse.Namespace(x=_Payload())}, src)
    with pytest.raises(ConversionError, match="refused to load"):
        read_checkpoint(str(src))
    assert not os.path.exists(marker)


def test_plain_pickle_file_is_refused(tmp_path):
    src = tmp_path / "evil.pt"
    with open(src, "wb") as f:
        pickle.dump({"x": _Payload()}, f)
    with pytest.raises(ConversionError):
        read_checkpoint(str(src))
    assert not os.path.exists("/tmp/zoo_pickle_payload_ran")


def test_existing_dst_needs_force(tmp_path, pt_model):
    src = _save_pt(pt_model, tmp_path / "a.pth")
    dst = tmp_path / "out.ckpt"
    dst.write_bytes(b"keep me")
    with pytest.raises(ConversionError, match="already exists; pass --force"):
        convert_file(MODEL, src, str(dst))
    assert dst.read_bytes() == b"keep me"
    convert_file(MODEL, src, str(dst), force=True)
    assert_same_weights(pt_model, zoo.create_model(MODEL, "pt", checkpoint=str(dst)))


def test_unwritable_destination(tmp_path, pt_model):
    src = _save_pt(pt_model, tmp_path / "a.pth")
    with pytest.raises(ConversionError, match="does not exist"):
        convert_file(MODEL, src, str(tmp_path / "no_such_dir" / "out.ckpt"))
    # /proc refuses new files even to root
    with pytest.raises(ConversionError, match="nothing was written|not writable"):
        convert_file(MODEL, src, "/proc/zoo_out.ckpt")
    if os.geteuid() != 0:
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o500)
        with pytest.raises(ConversionError, match="not writable"):
            convert_file(MODEL, src, str(ro / "out.ckpt"))


def test_ms_checkpoint_with_optimizer_state_is_cleaned(tmp_path, pt_model):
    import mindspore as ms

    convert_file(MODEL, _save_pt(pt_model, tmp_path / "a.pth"), str(tmp_path / "w.ckpt"))
    params = read_checkpoint(str(tmp_path / "w.ckpt")).tensors
    # what mindcv / Model.train save next to the weights
    extra = {f"moments.{k}": np.zeros_like(v) for k, v in list(params.items())[:5]}
    extra.update({f"adam_m.{k}": np.zeros_like(v) for k, v in list(params.items())[:3]})
    extra.update({"global_step": np.array([100], np.int32), "learning_rate": np.array(0.1, np.float32)})
    ms.save_checkpoint([{"name": k, "data": ms.Tensor(v)} for k, v in {**params, **extra}.items()],
                       str(tmp_path / "train.ckpt"))
    ckpt = read_checkpoint(str(tmp_path / "train.ckpt"))
    assert set(ckpt.tensors) == set(params)
    assert any("dropped 10 optimizer/training-state entries" in n for n in ckpt.notes)
    assert_same_weights(pt_model, zoo.create_model(MODEL, "pt", checkpoint=str(tmp_path / "train.ckpt")))


def test_suffix_and_target_rules(tmp_path, pt_model):
    src = _save_pt(pt_model, tmp_path / "a.pth")
    with pytest.raises(ConversionError, match="pass --to ms or --to pt"):
        convert_file(MODEL, src, str(tmp_path / "x.safetensors"))
    with pytest.raises(ConversionError, match="suffix means MindSpore"):
        convert_file(MODEL, src, str(tmp_path / "x.ckpt"), to="pt")
    with pytest.raises(ConversionError, match="unsupported file type"):
        convert_file(MODEL, src, str(tmp_path / "x.h5"))
    with pytest.raises(ConversionError, match="same file"):
        convert_file(MODEL, src, src, force=True)
    with pytest.raises(ConversionError, match="no such file"):
        convert_file(MODEL, str(tmp_path / "missing.pth"), str(tmp_path / "x.ckpt"))
    (tmp_path / "empty.pth").write_bytes(b"")
    with pytest.raises(ConversionError, match="empty"):
        read_checkpoint(str(tmp_path / "empty.pth"))
    torch.save([1, 2, 3], tmp_path / "list.pth")
    with pytest.raises(ConversionError, match="expected a dict of tensors"):
        read_checkpoint(str(tmp_path / "list.pth"))
    with pytest.raises(ConversionError, match="layout 'timm' does not apply"):
        load_state(MODEL, src, layout="timm")


@pytest.mark.parametrize("opt", ["adamw", "momentum", "lion", "nadam", "adan", "rmsprop", "lamb", "sgd", "adagrad"])
def test_mindcv_trainer_state_is_dropped(tmp_path, opt):
    """What mindcv's trainer saves next to the weights (optimizer state, EMA copies, loss scale, counters)."""
    import mindspore as ms
    from mindspore import nn as msnn

    pytest.importorskip("mindcv")
    from mindcv.optim import create_optimizer
    from mindcv.utils.train_step import TrainStep

    net = msnn.SequentialCell([msnn.Dense(4, 3), msnn.BatchNorm1d(3)])
    step = TrainStep(msnn.WithLossCell(net, msnn.SoftmaxCrossEntropyWithLogits(sparse=True)),
                     create_optimizer(net.trainable_params(), opt=opt, lr=0.1), scale_sense=ms.Tensor(1024.0), ema=True)
    ms.save_checkpoint(step, str(tmp_path / "train.ckpt"))
    ckpt = read_checkpoint(str(tmp_path / "train.ckpt"))
    assert set(ckpt.tensors) == {p.name for p in net.get_parameters()}


# --- issue 10: non-finite and wrong-dtype tensors, full disk, races, modes, stale partials ------------------

def _umask():
    m = os.umask(0o022)
    os.umask(m)
    return m


def test_non_finite_tensors_are_refused_unless_allowed(tmp_path, pt_model):
    sd = {k: v.clone() for k, v in pt_model.state_dict().items()}
    sd["conv1.weight"][0, 0, 0, 0] = float("nan")
    sd["fc.bias"][1] = float("inf")
    src = tmp_path / "nan.pth"
    torch.save(sd, src)
    with pytest.raises(ConversionError, match=r"2 tensor\(s\) hold NaN or inf values: conv1\.weight \(1 of 1728 "
                                              r"values\), fc\.bias.*--allow-non-finite"):
        convert_file(MODEL, str(src), str(tmp_path / "nan.ckpt"))
    assert not (tmp_path / "nan.ckpt").exists()
    convert_file(MODEL, str(src), str(tmp_path / "nan.ckpt"), allow_non_finite=True)
    assert np.isnan(read_checkpoint(str(tmp_path / "nan.ckpt")).tensors["conv1.weight"]).any()


def test_wrong_dtypes_are_cast_to_the_models_with_a_note(tmp_path, pt_model):
    """An int64 or float16 tensor used to be written with its own dtype; MindSpore's own loader then refused the
    .ckpt the zoo wrote."""
    import mindspore as ms

    sd = dict(pt_model.state_dict())
    sd["conv1.weight"] = sd["conv1.weight"].half()
    sd["fc.bias"] = torch.arange(sd["fc.bias"].numel())  # int64
    src = tmp_path / "mixed.pth"
    torch.save(sd, src)
    loaded = convert_file(MODEL, str(src), str(tmp_path / "m.ckpt"))
    assert any("cast 1 tensor(s) float16 -> float32" in n and "conv1.weight" in n for n in loaded.notes)
    assert any("int64 -> float32" in n and "fc.bias" in n for n in loaded.notes)
    params = ms.load_checkpoint(str(tmp_path / "m.ckpt"))
    assert params["conv1.weight"].dtype == ms.float32 and params["fc.bias"].dtype == ms.float32
    net = zoo.create_model(MODEL, "ms")
    assert ms.load_param_into_net(net, params, strict_load=True) == ([], [])  # MindSpore's own loader accepts it
    convert_file(MODEL, str(src), str(tmp_path / "m.pth"))
    assert torch.load(tmp_path / "m.pth", weights_only=True)["fc.bias"].dtype == torch.float32


def test_random_bytes_are_corrupt_not_code(tmp_path):
    """main called any torch UnpicklingError 'could run code' (and relayed torch's weights_only advice)."""
    src = tmp_path / "noise.pth"
    for seed in range(20):  # random bytes sometimes start like an import opcode: only complete pickles count
        src.write_bytes(np.random.default_rng(seed).integers(0, 256, 3000, dtype=np.uint8).tobytes())
        with pytest.raises(ConversionError, match="truncated or corrupt") as err:
            read_checkpoint(str(src))
        assert "could run code" not in str(err.value) and "weights_only" not in str(err.value), seed


def test_suggestions_for_shape_only_and_cross_family_mismatches(tmp_path):
    r18 = zoo.create_model("triplet_resnet18", "pt", num_classes=10)  # same names as the CIFAR variant, other stem
    with pytest.raises(ConversionError, match=r"shapes fit: triplet_resnet18 \(num_classes=10\)"):
        load_state(MODEL, _save_pt(r18, tmp_path / "r18.pth"))
    van = zoo.create_model("van_b0", "pt")
    with pytest.raises(ConversionError, match="the checkpoint's shapes fit: van_b0"):
        load_state(MODEL, _save_pt(van, tmp_path / "van.pth"))


def test_class_list_travels_through_every_format(tmp_path, pt_model):
    from zoo.convert.io import write_checkpoint
    from zoo.convert.core import pt_state

    classes = [f"n0{i}" for i in range(10)]
    state = pt_state(pt_model)
    write_checkpoint(state, str(tmp_path / "a.pth"), "pt", classes=classes)
    assert read_checkpoint(str(tmp_path / "a.pth")).classes == classes
    pt_model.load_state_dict(torch.load(tmp_path / "a.pth", weights_only=True))  # still a plain state dict
    convert_file(MODEL, str(tmp_path / "a.pth"), str(tmp_path / "b.ckpt"))
    convert_file(MODEL, str(tmp_path / "b.ckpt"), str(tmp_path / "c.safetensors"), to="pt")
    convert_file(MODEL, str(tmp_path / "c.safetensors"), str(tmp_path / "d.pth"))
    for f in ("b.ckpt", "c.safetensors", "d.pth"):
        assert read_checkpoint(str(tmp_path / f)).classes == classes, f
        assert load_state(MODEL, str(tmp_path / f)).classes == classes, f
    assert load_state(MODEL, str(tmp_path / "d.pth"), num_classes=3).classes is None  # head dropped: names too


@pytest.mark.parametrize("umask", [0o022, 0o002])
def test_output_modes_follow_the_umask(tmp_path, pt_model, umask):
    """mkstemp used to make .pth and .safetensors 0600 (and --force turned a 0644 file into 0600)."""
    src = _save_pt(pt_model, tmp_path / "a.pth")
    old = os.umask(umask)
    try:
        for name, to in (("o.pth", None), ("o.safetensors", "pt"), ("o.ckpt", None)):
            convert_file(MODEL, src, str(tmp_path / name), to=to)
            assert os.stat(tmp_path / name).st_mode & 0o777 == 0o666 & ~umask, name
        os.chmod(tmp_path / "o.pth", 0o644)
        convert_file(MODEL, src, str(tmp_path / "o.pth"), force=True)
        assert os.stat(tmp_path / "o.pth").st_mode & 0o777 == 0o666 & ~umask
    finally:
        os.umask(old)


def test_destination_that_appears_meanwhile_is_not_overwritten(tmp_path, pt_model, monkeypatch):
    """Two conversions to one DST without --force: the existence check and the publish used to be apart, so
    both could exit 0. The publish is exclusive now: the second one fails and the first one's file stays."""
    src, dst = _save_pt(pt_model, tmp_path / "a.pth"), tmp_path / "out.pth"
    real = torch.save

    def racing(obj, f, *a, **k):  # another process publishes DST while this one writes its file
        real(obj, f, *a, **k)
        dst.write_bytes(b"the other conversion's result")

    monkeypatch.setattr(torch, "save", racing)
    with pytest.raises(ConversionError, match="appeared while this file was being written"):
        convert_file(MODEL, src, str(dst))
    assert dst.read_bytes() == b"the other conversion's result"
    assert [p.name for p in tmp_path.iterdir() if "partial" in p.name] == []


def test_disk_full_during_a_write_names_the_path_and_leaves_nothing(tmp_path, pt_model, monkeypatch):
    """Where no small tmpfs can be mounted: a writer that fails with ENOSPC, as MindSpore does (it leaves its own
    <name>.tmp beside the zoo's temporary file)."""
    import errno

    import mindspore as ms

    src = _save_pt(pt_model, tmp_path / "a.pth")

    def full(obj, name, *a, **k):
        stem = os.path.splitext(name)[0]
        open(stem + ".tmp", "wb").write(b"x" * 100)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ms, "save_checkpoint", full)
    with pytest.raises(ConversionError, match=r"cannot write .*out\.ckpt: the disk is full \(.* free in .*; the file "
                                              r"needs about 44\.7 MB\); nothing was written"):
        convert_file(MODEL, src, str(tmp_path / "out.ckpt"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.pth"]


def _tmpfs_available():
    import shutil
    import subprocess

    if not shutil.which("unshare"):
        return False
    r = subprocess.run(["unshare", "-rm", "sh", "-c", "mount -t tmpfs -o size=64k tmpfs /mnt"], capture_output=True)
    return r.returncode == 0


@pytest.mark.skipif(not _tmpfs_available(), reason="needs unshare and a tmpfs mount (user namespaces)")
def test_full_and_read_only_disks_with_a_real_tmpfs(tmp_path, pt_model):
    """A 1 MB tmpfs: `zoo convert` (refused before writing: not enough free space), and each format's writer
    running out of space mid-write (MindSpore, safetensors, torch: each library's own failure); a read-only
    tmpfs. Exit 2, a message naming the path and the space needed, nothing left behind. One process, in its
    own mount namespace."""
    import subprocess
    import sys

    src = _save_pt(pt_model, tmp_path / "a.pth")
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    script = f"""
import os, sys
from zoo.cli import main
from zoo.convert import core
from zoo.convert.io import ConversionError, read_checkpoint, write_checkpoint
full, ro = "{mnt}/full", "{mnt}/ro"
print("EXIT cli", main(["convert", "{MODEL}", "{src}", full + "/cli.ckpt"]), flush=True)
t = read_checkpoint("{src}").tensors
ms_t = core.to_ms(t, core.spec(core.registry.get("{MODEL}")))
for dst, fw, tensors in (("w.ckpt", "ms", ms_t), ("w.safetensors", "pt", t), ("w.pth", "pt", t)):
    try:
        write_checkpoint(tensors, os.path.join(full, dst), fw)
        print("WROTE", dst, flush=True)
    except ConversionError as err:
        print("ERROR", dst, err, flush=True)
print("LEFT", sorted(os.listdir(full)), flush=True)
print("EXIT ro", main(["convert", "{MODEL}", "{src}", ro + "/out.pth"]), flush=True)
print("LEFT ro", sorted(os.listdir(ro)), flush=True)
sys.stdout.flush(); os._exit(0)
"""
    sh = (f"mkdir -p {mnt}/full {mnt}/ro && mount -t tmpfs -o size=1m tmpfs {mnt}/full && "
          f"mount -t tmpfs -o ro,size=1m tmpfs {mnt}/ro && exec {sys.executable} -c '{script}'")
    r = subprocess.run(["unshare", "-rm", "sh", "-c", sh], capture_output=True, text=True, timeout=600,
                       env=dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    out = r.stdout + r.stderr
    assert "EXIT cli 2" in out and "cli.ckpt: the disk is full (1.0 MB free" in out, out[-3000:]
    for dst in ("w.ckpt", "w.safetensors", "w.pth"):
        assert f"ERROR {dst} cannot write {mnt}/full/{dst}: the disk is full (" in out, out[-3000:]
    assert out.count("the file needs about 44.7 MB); nothing was written") == 4, out[-3000:]
    assert "WROTE" not in out and "LEFT []" in out, out[-3000:]
    assert "EXIT ro 2" in out and "is not writable" in out and "LEFT ro []" in out, out[-3000:]
    assert "Traceback" not in out and "inline_container" not in out and "SafetensorError" not in out, out[-3000:]


def test_stale_partials_of_dead_processes_are_cleaned(tmp_path, pt_model):
    import socket
    import subprocess
    import sys

    from zoo.files import _HOST

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()
    stale = tmp_path / f".out.ckpt.partial-{_HOST}-{dead}-abc123.ckpt"
    stale.write_bytes(b"x" * 1000)
    old_style = tmp_path / f".last.ckpt.partial-{dead}.ckpt"  # what the trainer wrote before
    old_style.write_bytes(b"x")
    mine = tmp_path / f".other.pth.partial-{_HOST}-{os.getpid()}-abc123.pth"
    mine.write_bytes(b"x")
    other_host = tmp_path / f".x.pth.partial-otherhost-{dead}-abc123.pth"
    other_host.write_bytes(b"x")
    convert_file(MODEL, _save_pt(pt_model, tmp_path / "a.pth"), str(tmp_path / "out.ckpt"))
    assert not stale.exists() and not old_style.exists()
    assert mine.exists() and other_host.exists()  # a live process's, another host's: kept
    assert socket.gethostname()


def test_atomic_write_fsyncs_the_file_and_its_folder(tmp_path, monkeypatch):
    from zoo import files

    synced = []
    real = os.fsync

    def spy(fd):
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        return real(fd)

    monkeypatch.setattr(os, "fsync", spy)
    files.write_text(str(tmp_path / "x.json"), "{}")
    assert len(synced) == 2 and ".x.json.partial-" in synced[0] and synced[1] == str(tmp_path)
    assert (tmp_path / "x.json").read_text() == "{}"
