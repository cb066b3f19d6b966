"""The MindSpore trainer end to end, in subprocesses as users run it: smoke recipe, resume after SIGKILL,
NaN stop, msrun data parallel (2 workers), bad config and data."""
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from zoo.data.synthetic import make_image_folder

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAIN = os.path.join(ROOT, "tools", "train.py")
SMOKE = os.path.join(ROOT, "configs", "triplet", "triplet_resnet18_cifar_smoke.yaml")
ENV = dict(os.environ, GLOG_v="3", PYTHONPATH=ROOT)


def train(*args, timeout=600):
    return subprocess.run([sys.executable, TRAIN, "-c", SMOKE, *args], capture_output=True, text=True,
                          timeout=timeout, env=ENV, cwd=ROOT)


def weights(path):
    import mindspore as ms

    return {k: v.asnumpy() for k, v in ms.load_checkpoint(path).items()}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_image_folder(str(tmp_path_factory.mktemp("data")), classes=4, per_class=16, size=32)


@pytest.fixture(scope="module")
def reference_run(data, tmp_path_factory):
    """The smoke recipe, uninterrupted, 2 epochs of 8 steps."""
    out = str(tmp_path_factory.mktemp("ref"))
    r = train("--data_dir", data, "--ckpt_save_dir", out, "--log_interval", "1")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return out, r


def test_smoke_recipe_outputs(reference_run):
    out, r = reference_run
    assert "global batch 8" in r.stdout and "ranks 1" in r.stdout
    assert "epoch [2/2] step [8/8] loss" in r.stdout and "img/s" in r.stdout and "validation: top-1" in r.stdout
    rows = open(os.path.join(out, "result.log")).read().strip().splitlines()
    assert rows[0].startswith("epoch\ttrain_loss") and [x.split("\t")[0] for x in rows[1:]] == ["1", "2"]
    for f in ("last.ckpt", "triplet_resnet18_cifar-1_8.ckpt", "triplet_resnet18_cifar-2_8.ckpt",
              "triplet_resnet18_cifar_best.ckpt", "args.yaml", "rank0.log"):
        assert os.path.isfile(os.path.join(out, f)), f
    assert not [f for f in os.listdir(out) if "partial" in f]
    # a training checkpoint is an ordinary zoo checkpoint for the converter (optimizer state dropped)
    import zoo
    net = zoo.create_model("triplet_resnet18_cifar", "pt", checkpoint=os.path.join(out, "last.ckpt"))
    w = weights(os.path.join(out, "last.ckpt"))
    np.testing.assert_array_equal(net.conv1.weight.detach().numpy(), w["conv1.weight"])


def _wait_for(path, text, proc, timeout=300):
    t0 = time.time()
    while time.time() - t0 < timeout:
        if proc.poll() is not None:
            return False
        if os.path.exists(path) and text in open(path).read():
            return True
        time.sleep(0.2)
    return False


@pytest.mark.parametrize("save_steps", [0, 2])
def test_resume_after_sigkill_matches_uninterrupted(reference_run, data, tmp_path, save_steps):
    """Killed mid-epoch 2 with SIGKILL, then --resume auto: the same final weights and optimizer state.

    save_steps=0 resumes from the epoch-1 checkpoint; save_steps=2 from a step inside epoch 2 (that run
    uses a deterministic crop and no flip, since a resumed epoch's augmentation draws differ from step 0's)."""
    ref_out = reference_run[0]
    extra = ["--log_interval", "1", "--ckpt_save_steps", str(save_steps)]
    if save_steps:
        extra += ["--scale", "[1.0, 1.0]", "--ratio", "[1.0, 1.0]", "--hflip", "0.0"]
        ref_out = str(tmp_path / "ref_det")
        r = train("--data_dir", data, "--ckpt_save_dir", ref_out, *extra)
        assert r.returncode == 0, r.stderr[-3000:]
    out = str(tmp_path / "killed")
    proc = subprocess.Popen([sys.executable, TRAIN, "-c", SMOKE, "--data_dir", data, "--ckpt_save_dir", out, *extra],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=ENV, cwd=ROOT)
    try:
        assert _wait_for(os.path.join(out, "rank0.log"), "epoch [2/2] step [5/8]", proc), "run ended before the kill"
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert not [f for f in os.listdir(out) if "partial" in f]
    r = train("--data_dir", data, "--ckpt_save_dir", out, *extra, "--resume", "auto")
    assert r.returncode == 0, r.stderr[-3000:]
    import re
    m = re.search(r"resumed from .*: epoch (\d+), step (\d+)", r.stdout)
    assert m and m.group(1) == "2" and (m.group(2) in ("4", "6") if save_steps else m.group(2) == "0"), r.stdout[-2000:]
    a, b = weights(os.path.join(ref_out, "last.ckpt")), weights(os.path.join(out, "last.ckpt"))
    assert set(a) == set(b)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


@pytest.mark.parametrize("save_steps", [1, 0])
def test_nan_stops_and_keeps_last_good_checkpoint(data, tmp_path, save_steps):
    """lr 1e12 blows up in the first steps. With a checkpoint every step, the non-finite weights are caught
    at the save after the step that made them; without, the next step's loss is caught. Either way: exit 3,
    a clear message, and the checkpoint on disk (if any) is the last finite one."""
    out = str(tmp_path / "nan")
    r = train("--data_dir", data, "--ckpt_save_dir", out, "--lr", "1e12", "--ckpt_save_steps", str(save_steps),
              "--log_interval", "1")
    assert r.returncode == 3, r.stdout[-2000:] + r.stderr[-2000:]
    assert "stopping" in r.stderr and "Lower the learning rate" in r.stderr
    if save_steps:
        assert "The last good checkpoint is" in r.stderr
        last = weights(os.path.join(out, "last.ckpt"))
        assert all(np.isfinite(v).all() for v in last.values())
    else:
        assert "the loss became" in r.stderr and "No checkpoint was saved yet" in r.stderr
        assert not os.path.exists(os.path.join(out, "last.ckpt"))
    assert not [f for f in os.listdir(out) if "partial" in f]


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.skipif(shutil.which("msrun") is None and not os.path.exists(os.path.join(os.path.dirname(sys.executable), "msrun")),
                    reason="msrun is installed with mindspore")
def test_msrun_two_workers_identical_weights_disjoint_samples(data, tmp_path):
    out, logs = str(tmp_path / "dp"), str(tmp_path / "msrun_logs")
    msrun = shutil.which("msrun") or os.path.join(os.path.dirname(sys.executable), "msrun")
    cmd = [msrun, "--worker_num=2", "--local_worker_num=2", f"--master_port={_free_port()}", "--join=True",
           f"--log_dir={logs}", TRAIN, "-c", SMOKE, "--data_dir", data, "--ckpt_save_dir", out,
           "--record_samples", "true", "--ckpt_save_all_ranks", "true", "--val_while_train", "false"]
    env = dict(ENV, PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""))
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=900, env=env, cwd=ROOT)
    worker0 = open(os.path.join(logs, "worker_0.log")).read() if os.path.exists(os.path.join(logs, "worker_0.log")) else ""
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:] + worker0[-3000:]
    assert "ranks 2, batch 8 per rank, global batch 16, 4 steps per epoch" in worker0
    a, b = weights(os.path.join(out, "last.ckpt")), weights(os.path.join(out, "rank1", "last.ckpt"))
    for k in a:
        if not k.startswith("train_state."):
            np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    seen = {}
    for rank in (0, 1):
        for line in open(os.path.join(out, f"samples_rank{rank}.txt")):
            epoch, ids = line.split(":")
            seen.setdefault(epoch, []).append(set(map(int, ids.split())))
    assert len(seen) == 2
    for epoch, (s0, s1) in seen.items():
        assert len(s0) == len(s1) == 32 and not (s0 & s1), epoch


def test_bad_config_and_dataset_errors(data, tmp_path):
    r = train("--data_dir", data, "--lerning_rate", "0.1")
    assert r.returncode == 2 and "unknown config key 'lerning_rate'" in r.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text(open(SMOKE).read() + "\nwarmup_epoch: 3\n")
    r = subprocess.run([sys.executable, TRAIN, "-c", str(bad)], capture_output=True, text=True, env=ENV, cwd=ROOT)
    assert r.returncode == 2 and "unknown config key 'warmup_epoch'" in r.stderr and "warmup_epochs" in r.stderr
    r = train("--data_dir", str(tmp_path / "missing"))
    assert r.returncode == 2 and "missing: the dataset directory does not exist" in r.stderr and "Expected layout" in r.stderr
    r = train("--data_dir", data, "--num_classes", "10")
    assert r.returncode == 2 and "has 4 classes" in r.stderr
    r = train("--data_dir", data, "--model", "triplet_resnet18_cfar")
    assert r.returncode == 2 and "Did you mean" in r.stderr
    r = train("--data_dir", data, "--resume", str(tmp_path / "nope.ckpt"))
    assert r.returncode == 2 and "no such checkpoint" in r.stderr


@pytest.mark.parametrize("override, says", [
    ({"loss_scale_type": "dynamic", "drop_overflow_update": True}, "supports neither on CPU"),
    ({"opt": "lamb"}, "Lamb has no CPU kernel"),
    ({"distribute": True}, "msrun"),
])
def test_settings_mindspore_rejects_are_named_before_building(override, says, monkeypatch):
    """Ascend recipes moved to CPU (or run without msrun) fail with a sentence, not a traceback from compile."""
    from zoo.train.config import ConfigError, load_config
    from zoo.train.ms import check_device

    monkeypatch.delenv("MS_ROLE", raising=False)
    check_device(load_config(SMOKE))  # the smoke recipe itself is fine
    with pytest.raises(ConfigError, match=says):
        check_device(load_config(SMOKE, {k: str(v) for k, v in override.items()}))


def test_unreadable_image_is_reported_not_fatal(tmp_path):
    root = make_image_folder(str(tmp_path / "d"), classes=4, per_class=8, size=32)
    bad = os.path.join(root, "train", "class_1", "0003.png")
    with open(bad, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n not really a png")
    out = str(tmp_path / "out")
    r = train("--data_dir", root, "--ckpt_save_dir", out, "--epoch_size", "1", "--val_while_train", "false")
    assert r.returncode == 0, r.stderr[-3000:]
    log = open(os.path.join(out, "rank0.log")).read()
    assert f"unreadable image skipped: {bad}" in log
