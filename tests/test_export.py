"""`zoo export`: MindIR from the MindSpore twin and ONNX from the PyTorch twin, each loaded back and checked against
both twins before the file appears; one small model per family, at its small test input."""
import os

import numpy as np
import pytest

import zoo
from zoo import registry
from zoo.errors import ExportError


# HaloNets have no small test input (every variant runs at 256 px): halonet26t, whose halo attention starts at
# stage 3, exports and checks in 10 s where halonet_h1 (attention from the first stage) takes 35 s
CHEAPEST = {"halonet": "halonet26t"}


def _small_model(family: str) -> str:
    """The family's model with the smallest test input that needs no extra constructor arguments there."""
    if family in CHEAPEST:
        return CHEAPEST[family]
    names = zoo.list_models(family)

    def key(n):
        e = registry.get(n)
        size = e.test_input_size or e.input_size
        return (bool(e.test_kwargs) and e.test_input_size is not None, size[1] * size[2], names.index(n))
    return min(names, key=key)


def _size(name):
    e = registry.get(name)
    return e.test_input_size if e.test_input_size and not e.test_kwargs else e.input_size


def _checkpoint(tmp_path, name) -> str:
    import torch

    torch.manual_seed(0)
    model = zoo.create_model(name, "pt")
    path = str(tmp_path / f"{name}.pth")
    torch.save(model.state_dict(), path)
    return path


def _onnx_available() -> bool:
    import importlib.util
    return all(importlib.util.find_spec(m) is not None for m in ("onnx", "onnxscript", "onnxruntime"))


@pytest.mark.parametrize("family", zoo.families())
def test_export_writes_and_verifies_mindir_and_onnx(family, tmp_path):
    from zoo import export

    name = _small_model(family)
    ckpt = _checkpoint(tmp_path, name)
    size = _size(name)
    formats = ["mindir"] + (["onnx"] if _onnx_available() else [])
    for fmt in formats:
        out = str(tmp_path / f"{name}.{fmt}")
        res = export.export(name, ckpt, out, fmt=fmt, input_size=size)
        print(export.format_table([res]))
        assert res.verified and res.passed, res
        assert set(res.errors) == {"ms", "pt"} and max(res.errors.values()) <= 1e-4
        assert os.path.isfile(out) and os.path.getsize(out) == res.size_bytes > 0
        assert os.stat(out).st_mode & 0o200, "the export is writable by its owner, like any other file"
        assert sorted(os.listdir(tmp_path)) == sorted([os.path.basename(ckpt)] + [f"{name}.{f}" for f in
                                                                                   formats[:formats.index(fmt) + 1]])
    if "onnx" not in formats:
        pytest.skip("onnx, onnxscript or onnxruntime is not installed: MindIR only (pip install 'zoo[onnx]')")


def test_export_cli_writes_onnx_and_refuses_to_overwrite(tmp_path, capsys):
    """`zoo export` as docs/porting.md shows it (the CLI's main, in this process: no second framework start-up)."""
    from zoo.cli import main

    if not _onnx_available():
        pytest.skip("the onnx extra is not installed")
    ckpt = _checkpoint(tmp_path, "triplet_resnet18_cifar")
    out = tmp_path / "r18.onnx"
    assert main(["export", "triplet_resnet18_cifar", "--checkpoint", ckpt, "--batch", "2", str(out)]) == 0
    stdout = capsys.readouterr().out
    line = next(ln for ln in stdout.splitlines() if ln.startswith("triplet_resnet18_cifar"))
    assert line.split()[1:4] == ["onnx", "32x32", "2"] and line.split()[-1] == "ok", stdout
    import onnxruntime as ort
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    assert session.run(None, {"input": np.zeros((2, 3, 32, 32), np.float32)})[0].shape == (2, 10)
    before = out.read_bytes()
    assert main(["export", "triplet_resnet18_cifar", "--checkpoint", ckpt, str(out)]) == 2
    assert "already exists; pass --force" in capsys.readouterr().err
    assert out.read_bytes() == before


def test_export_errors_are_clear_and_write_nothing(tmp_path, monkeypatch):
    from zoo import export

    ckpt = _checkpoint(tmp_path, "triplet_resnet18_cifar")
    with pytest.raises(ExportError, match="AIR needs Ascend"):
        export.export("triplet_resnet18_cifar", ckpt, str(tmp_path / "m.air"))
    with pytest.raises(ExportError, match="must end in .mindir"):
        export.export("triplet_resnet18_cifar", ckpt, str(tmp_path / "m.onnx"), fmt="mindir")
    with pytest.raises(ExportError, match="no such checkpoint"):
        export.export("triplet_resnet18_cifar", str(tmp_path / "none.pth"), str(tmp_path / "m.mindir"))

    def wrong(net, x, tmp):  # an export whose file gives other logits than the twins
        open(tmp, "wb").write(b"not a model")
        return np.zeros((x.shape[0], 10), np.float32) + 1.0

    monkeypatch.setattr(export, "_export_mindir", wrong)
    with pytest.raises(ExportError, match="differ from the .. twin's .* nothing was written"):
        export.export("triplet_resnet18_cifar", ckpt, str(tmp_path / "m.mindir"))
    assert sorted(os.listdir(tmp_path)) == ["triplet_resnet18_cifar.pth"]


def test_force_replaces_an_existing_export(tmp_path, monkeypatch):
    """As for `zoo convert`: an existing OUT is refused without --force and replaced whole with it."""
    import mindspore as ms

    from zoo import export

    ckpt = _checkpoint(tmp_path, "triplet_resnet18_cifar")
    out = tmp_path / "m.mindir"
    out.write_bytes(b"old")

    def exporter(net, x, tmp):  # a stand-in writer whose file gives the twin's logits (no graph compile)
        open(tmp, "wb").write(b"new")
        ms.set_context(mode=ms.PYNATIVE_MODE)
        return net(ms.Tensor(x)).asnumpy()

    monkeypatch.setattr(export, "_export_mindir", exporter)
    with pytest.raises(ExportError, match="already exists; pass --force"):
        export.export("triplet_resnet18_cifar", ckpt, str(out))
    assert out.read_bytes() == b"old"
    assert export.export("triplet_resnet18_cifar", ckpt, str(out), force=True).passed
    assert out.read_bytes() == b"new" and sorted(os.listdir(tmp_path)) == ["m.mindir", "triplet_resnet18_cifar.pth"]
