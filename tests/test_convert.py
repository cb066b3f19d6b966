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
    with pytest.raises(ConversionError, match=r"layer2\.0\.conv1\.weight \(128, 64, 5, 5\) in the file vs \(128, 64, 3, 3\)"):
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
