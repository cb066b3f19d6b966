"""The PyTorch trainer and the cross-framework proof: same recipe and batches, torchrun, training parity,
validation with identical inputs."""
import os
import shutil
import socket
import subprocess
import sys

import numpy as np
import pytest
import torch

from zoo.data.synthetic import make_image_folder

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAIN = os.path.join(ROOT, "tools", "train.py")
SMOKE = os.path.join(ROOT, "configs", "triplet", "triplet_resnet18_cifar_smoke.yaml")
# one thread per training process: the suite runs two test workers on two cores, and oversubscribed OpenMP
# threads make a step up to 10x slower (measured: 1.5 s vs 13-23 s for a PyTorch step under load)
ENV = dict(os.environ, PYTHONPATH=ROOT, OMP_NUM_THREADS="1")
MODEL = "triplet_resnet18_cifar"


def train(*args, timeout=900):
    return subprocess.run([sys.executable, TRAIN, "-c", SMOKE, *args], capture_output=True, text=True,
                          timeout=timeout, env=ENV, cwd=ROOT)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_image_folder(str(tmp_path_factory.mktemp("data")), classes=4, per_class=16, size=32)


def test_pytorch_training_same_batches_as_mindspore(data, tmp_path):
    """The same recipe on both frameworks: PyTorch writes .pth checkpoints (convertible), and both read
    exactly the same samples in the same order."""
    outs = {}
    for fw in ("pt", "ms"):
        outs[fw] = str(tmp_path / fw)
        extra = ["--framework", fw, "--record_samples", "true", "--epoch_size", "1"]
        if fw == "ms":  # the MindSpore run is here for its samples: no validation (its eval graph compiles in ~5 s)
            extra += ["--val_while_train", "false"]
        r = train("--data_dir", data, "--ckpt_save_dir", outs[fw], *extra)
        assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert "PyTorch" in open(os.path.join(outs["pt"], "rank0.log")).read()
    for f in ("last.pth", f"{MODEL}-1_8.pth", f"{MODEL}_best.pth", "history.json", "result.log"):
        assert os.path.isfile(os.path.join(outs["pt"], f)), f
    pt_samples = open(os.path.join(outs["pt"], "samples_rank0.txt")).read().splitlines()
    ms_samples = open(os.path.join(outs["ms"], "samples_rank0.txt")).read().splitlines()
    assert pt_samples == ms_samples and len(pt_samples[0].split(":")[1].split()) == 64
    import zoo
    net = zoo.create_model(MODEL, "ms", checkpoint=os.path.join(outs["pt"], "last.pth"))
    sd = torch.load(os.path.join(outs["pt"], "last.pth"), weights_only=True)["state_dict"]
    np.testing.assert_array_equal(net.fc.weight.asnumpy(), sd["fc.weight"].numpy())


@pytest.fixture
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_pytorch_resume_matches_uninterrupted(tmp_path, one_thread):
    """Resumed at an epoch boundary (random crops and flips on), the same weights as an uninterrupted run. In-process
    through the trainer's ``train`` (no process launches: the PyTorch backend compiles nothing)."""
    from zoo.train.loop import train as run

    data = make_image_folder(str(tmp_path / "d"), classes=4, per_class=4, size=32, splits=(("train", 1.0),))
    a, b = str(tmp_path / "a"), str(tmp_path / "b")  # 2 steps per epoch
    over = {"framework": "pt", "data_dir": data, "val_while_train": "false"}
    from zoo.train.config import load_config
    run(load_config(SMOKE, {**over, "ckpt_save_dir": a, "epoch_size": "2"}))
    run(load_config(SMOKE, {**over, "ckpt_save_dir": b, "epoch_size": "1"}))
    summary = run(load_config(SMOKE, {**over, "ckpt_save_dir": b, "epoch_size": "2", "resume": "auto"}))
    assert summary["epoch"] == 2
    assert "resumed from" in open(os.path.join(b, "rank0.log")).read()
    sa = torch.load(os.path.join(a, "last.pth"), weights_only=True)
    sb = torch.load(os.path.join(b, "last.pth"), weights_only=True)
    for k, v in sa["state_dict"].items():
        assert torch.equal(v, sb["state_dict"][k]), k
    assert sb["classes"] == [f"class_{i}" for i in range(4)]


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_torchrun_two_processes(data, tmp_path):
    out = str(tmp_path / "ddp")
    torchrun = shutil.which("torchrun") or os.path.join(os.path.dirname(sys.executable), "torchrun")
    r = subprocess.run([torchrun, "--nproc_per_node=2", f"--master_port={_free_port()}", TRAIN, "-c", SMOKE,
                        "--framework", "pt", "--data_dir", data, "--ckpt_save_dir", out, "--record_samples", "true",
                        "--ckpt_save_all_ranks", "true", "--epoch_size", "1"],
                       capture_output=True, text=True, timeout=900, env=dict(ENV, OMP_NUM_THREADS="1"), cwd=ROOT)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    log0 = open(os.path.join(out, "rank0.log")).read()
    assert "ranks 2, batch 8 per rank, global batch 16, 4 steps per epoch" in log0 and "DDP" in log0
    a = torch.load(os.path.join(out, "last.pth"), weights_only=True)["state_dict"]
    b = torch.load(os.path.join(out, "rank1", "last.pth"), weights_only=True)["state_dict"]
    for k in a:  # weights by DDP, BatchNorm statistics by the epoch-end average
        assert torch.equal(a[k], b[k]), k
    s0 = open(os.path.join(out, "samples_rank0.txt")).read().splitlines()
    s1 = open(os.path.join(out, "samples_rank1.txt")).read().splitlines()
    for l0, l1 in zip(s0, s1):
        i0, i1 = set(l0.split(":")[1].split()), set(l1.split(":")[1].split())
        assert len(i0) == len(i1) == 32 and not i0 & i1


@pytest.mark.parametrize("opt", ["momentum", "adamw"])
def test_training_parity(opt):
    """The trainers' own optimizer steps agree: after one step (same weights, same batch) to rounding; over
    three steps within what the architecture's discontinuous channel-pool maxes let float32 keep."""
    from zoo.train.parity import format_table, train_parity

    three = train_parity(MODEL, 3, opt, also_after=(1,))  # one run, measured after its first step too
    print("\n" + format_table([three]), three.after)
    assert three.error is None, three.error
    one = three.after[1]
    assert one["steps"] == 1 and one["loss_rel"] < 1e-6 and one["update_median"] < 1e-4, one
    assert three.loss_rel < 1e-3 and three.update_median < 5e-2, three


def test_validate_equal_on_both_frameworks(data, tmp_path, cli):
    import zoo
    from zoo.convert import convert_file
    from zoo.validate import validate

    torch.manual_seed(0)
    m = zoo.create_model(MODEL, "pt", num_classes=4)
    src = tmp_path / "w.pth"
    torch.save(m.state_dict(), src)
    convert_file(MODEL, str(src), str(tmp_path / "w.ckpt"))
    r_pt = validate(MODEL, str(src), data, "pt", keep_logits=True)
    r_ms = validate(MODEL, str(tmp_path / "w.ckpt"), data, "ms", keep_logits=True)
    assert r_pt["count"] == r_ms["count"] == 32
    assert (r_pt["top1"], r_pt["top5"]) == (r_ms["top1"], r_ms["top5"])
    assert np.abs(r_pt["logits"] - r_ms["logits"]).max() <= 1e-4 * max(1, np.abs(r_pt["logits"]).max())
    r = cli("validate", MODEL, "--checkpoint", str(tmp_path / "w.ckpt"), "--data", data, "--framework", "pt")
    assert r.returncode == 0 and f"top-1 {r_pt['top1']:.3f}%" in r.stdout, r.stdout + r.stderr
    r = cli("validate", MODEL, "--checkpoint", str(tmp_path / "w.ckpt"), "--data", str(tmp_path / "nope"))
    assert r.returncode == 2 and "does not exist" in r.stderr


def test_eval_transform_matches_torchvision_semantics():
    """Resize(shorter side to floor(size / crop_pct)) + CenterCrop, as torchvision does it on PIL images."""
    from PIL import Image

    from zoo import registry
    from zoo.validate import EvalTransform

    t = EvalTransform(registry.get("triplet_resnet50"))  # bilinear, crop_pct 0.875 -> 256 then 224
    img = (np.arange(300 * 400 * 3) % 251).astype(np.uint8).reshape(300, 400, 3)
    x = t(img)
    ref = Image.fromarray(img).resize((341, 256), Image.BILINEAR)  # 400 * 256 / 300 = 341.3 -> 341
    # rows from round((256-224)/2), columns from round((341-224)/2)
    ref = np.asarray(ref, np.float32)[16:240, 58:282].transpose(2, 0, 1) / 255.0
    mean = np.array([0.485, 0.456, 0.406], np.float32)[:, None, None]
    std = np.array([0.229, 0.224, 0.225], np.float32)[:, None, None]
    np.testing.assert_allclose(x, (ref - mean) / std, atol=1e-6)
    assert x.shape == (3, 224, 224)


def test_training_curve_plot(tmp_path):
    import json

    from zoo.demo import plot_history

    h = {"steps": [[i, 2.0 / (i + 1)] for i in range(30)],
         "epochs": [{"epoch": e, "top1": 50.0 + 10 * e, "top5": 90.0, "train_loss": 1.0} for e in (1, 2, 3)]}
    (tmp_path / "h.json").write_text(json.dumps(h))
    plot_history(str(tmp_path / "h.json"), str(tmp_path / "c.png"), "test")
    assert (tmp_path / "c.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
