"""The MindSpore trainer end to end, in subprocesses as users run it: the smoke recipe, resume after SIGKILL
(mid-epoch and from an epoch checkpoint), the NaN stop, msrun data parallel (2 workers), the output folder
(refusal of a folder holding a run, the lock, stale partial files), bad config and data.

Process launches are the cost here (MindSpore's start and GRAPH compile take most of a run), so one
deterministic reference run and one killed run serve several checks, and errors raised before the framework
starts are checked in-process through the same ``main``."""
import os
import re
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
# one thread per training process: the suite runs two test workers on two cores, and oversubscribed OpenMP
# threads make a step up to 10x slower (measured: 1.5 s vs 13-23 s for a PyTorch step under load)
ENV = dict(os.environ, PYTHONPATH=ROOT, OMP_NUM_THREADS="1")
MODEL = "triplet_resnet18_cifar"
UMASK = os.umask(0o022)
os.umask(UMASK)
# the smoke recipe with a deterministic crop and no flip, so that a run resumed inside an epoch (whose remaining
# augmentations are drawn afresh) must end with exactly the weights of the uninterrupted run; epoch-boundary
# resume with random augmentation is tested on PyTorch (tests/test_train_pt.py), through the same pipeline
DETERMINISTIC = ["--scale", "[1.0, 1.0]", "--ratio", "[1.0, 1.0]", "--hflip", "0.0", "--log_interval", "1"]


def train(*args, timeout=600):
    return subprocess.run([sys.executable, TRAIN, "-c", SMOKE, *args], capture_output=True, text=True,
                          timeout=timeout, env=ENV, cwd=ROOT)


def weights(path):
    import mindspore as ms

    return {k: v.asnumpy() for k, v in ms.load_checkpoint(path).items() if not isinstance(v, str)}


def assert_same_weights(a, b):
    wa, wb = weights(a), weights(b)
    assert set(wa) == set(wb)
    for k in wa:
        if not k.startswith("train_state."):
            np.testing.assert_array_equal(wa[k], wb[k], err_msg=k)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """4 classes x 16 train images of 32 px (8 steps of 8), 4 x 8 val; one train image is not an image.

    The runs of this module share one compile cache (ZOO_COMPILE_CACHE): the killed run, the resumes and the
    second NaN run load the graph an earlier run compiled (the cache's key tells the recipes apart), as a user's
    reruns do, instead of compiling it again (15 of the 20 s to a first step). Its files are tested in
    tests/test_bench.py; the cache stays out of the run folders here."""
    ENV["ZOO_COMPILE_CACHE"] = str(tmp_path_factory.mktemp("compile_cache"))
    root = make_image_folder(str(tmp_path_factory.mktemp("data")), classes=4, per_class=16, size=32)
    with open(os.path.join(root, "train", "class_1", "0003.png"), "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n not really a png")
    return root


@pytest.fixture(scope="module")
def reference_run(data, tmp_path_factory):
    """The smoke recipe (deterministic augmentation, last.ckpt every 2 steps), uninterrupted: 2 epochs of 8 steps."""
    out = str(tmp_path_factory.mktemp("ref"))
    r = train("--data_dir", data, "--ckpt_save_dir", out, "--ckpt_save_steps", "2", *DETERMINISTIC)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return out, r


def test_smoke_recipe_outputs(reference_run, data):
    out, r = reference_run
    assert "global batch 8" in r.stdout and "ranks 1" in r.stdout
    assert "epoch [2/2] step [8/8] loss" in r.stdout and "img/s" in r.stdout and "validation: top-1" in r.stdout
    rows = open(os.path.join(out, "result.log")).read().strip().splitlines()
    assert rows[0].startswith("epoch\ttrain_loss") and [x.split("\t")[0] for x in rows[1:]] == ["1", "2"]
    for f in ("last.ckpt", f"{MODEL}-1_8.ckpt", f"{MODEL}-2_8.ckpt", f"{MODEL}_best.ckpt", "args.yaml", "rank0.log"):
        assert os.path.isfile(os.path.join(out, f)), f
        if not f.endswith(".log"):
            assert os.stat(os.path.join(out, f)).st_mode & 0o777 == 0o666 & ~UMASK, f  # not MindSpore's 0400
    assert not [f for f in os.listdir(out) if "partial" in f or f.endswith(".tmp")]
    assert open(os.path.join(out, ".zoo-train.lock")).read() == ""  # released at the end
    # an unreadable training image is reported by name, and the run goes on
    bad = os.path.join(data, "train", "class_1", "0003.png")
    assert f"unreadable image skipped: {bad}" in open(os.path.join(out, "rank0.log")).read()
    # a training checkpoint is an ordinary zoo checkpoint for the converter (optimizer state dropped), and it
    # carries the class list
    import zoo
    from zoo.convert import load_state
    net = zoo.create_model(MODEL, "pt", checkpoint=os.path.join(out, "last.ckpt"))
    np.testing.assert_array_equal(net.conv1.weight.detach().numpy(),
                                  weights(os.path.join(out, "last.ckpt"))["conv1.weight"])
    assert load_state(MODEL, os.path.join(out, f"{MODEL}_best.ckpt")).classes == [f"class_{i}" for i in range(4)]


def _wait_for(path, text, proc, timeout=300):
    t0 = time.time()
    while time.time() - t0 < timeout:
        if proc.poll() is not None:
            return False
        if os.path.exists(path) and text in open(path).read():
            return True
        time.sleep(0.2)
    return False


@pytest.fixture(scope="module")
def killed_run(data, tmp_path_factory):
    """The reference's settings, killed with SIGKILL in the middle of epoch 2 (last.ckpt: epoch 2, step 4)."""
    out = str(tmp_path_factory.mktemp("killed"))
    proc = subprocess.Popen([sys.executable, TRAIN, "-c", SMOKE, "--data_dir", data, "--ckpt_save_dir", out,
                             "--ckpt_save_steps", "2", "--val_while_train", "false", *DETERMINISTIC],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=ENV, cwd=ROOT)
    try:
        assert _wait_for(os.path.join(out, "rank0.log"), "epoch [2/2] step [5/8]", proc), "run ended before the kill"
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert not [f for f in os.listdir(out) if "partial" in f]  # kill -9 during a save never leaves one visible
    return out, proc.pid


def test_resume_inside_an_epoch_after_sigkill_matches_uninterrupted(reference_run, killed_run, data):
    """--resume auto continues the killed run from its mid-epoch last.ckpt; same final weights and optimizer
    state as the uninterrupted run. The kill left a lock and (planted here) a killed save's temporary file:
    the stale lock is taken over and the file removed."""
    from zoo.files import _HOST

    out, pid = killed_run
    stale = os.path.join(out, f".last.ckpt.partial-{_HOST}-{pid}-0a1b2c.ckpt")
    open(stale, "wb").write(b"\0" * 4096)
    assert open(os.path.join(out, ".zoo-train.lock")).read().startswith(f"pid {pid} ")
    r = train("--data_dir", data, "--ckpt_save_dir", out,
              "--ckpt_save_steps", "2", "--val_while_train", "false", *DETERMINISTIC, "--resume", "auto")
    assert r.returncode == 0, r.stderr[-3000:]
    m = re.search(r"resumed from .*: epoch (\d+), step (\d+)", r.stdout)
    assert m and m.group(1) == "2" and m.group(2) in ("4", "6"), r.stdout[-2000:]
    assert f"the previous run (pid {pid} " in r.stdout and "taken over" in r.stdout
    assert "removed 1 temporary file(s) that killed saves left (4.1 KB)" in r.stdout and not os.path.exists(stale)
    assert_same_weights(os.path.join(reference_run[0], "last.ckpt"), os.path.join(out, "last.ckpt"))
    rows = open(os.path.join(out, "result.log")).read().strip().splitlines()
    assert [x.split("\t")[0] for x in rows[1:]] == ["1", "2"]  # the record continues, no row twice


def test_resume_from_an_epoch_checkpoint_of_a_killed_run(reference_run, killed_run, data, tmp_path):
    """--resume PATH (the killed run's epoch-1 checkpoint) into a new folder: the run goes on from the epoch
    boundary and ends with the uninterrupted run's weights."""
    out = str(tmp_path / "from_epoch1")
    r = train("--data_dir", data, "--ckpt_save_dir", out, "--val_while_train", "false",
              *DETERMINISTIC, "--resume", os.path.join(killed_run[0], f"{MODEL}-1_8.ckpt"))
    assert r.returncode == 0, r.stderr[-3000:]
    assert re.search(r"resumed from .*: epoch 2, step 0", r.stdout), r.stdout[-2000:]
    assert_same_weights(os.path.join(reference_run[0], "last.ckpt"), os.path.join(out, "last.ckpt"))


def test_a_new_run_never_overwrites_a_run(reference_run, data):
    """Without --resume, a folder that holds a run is refused (main replaced its checkpoints and history, and
    pruned across both runs); nothing in it changes. One process, as users run it; the error is printed once."""
    out = reference_run[0]

    def state():  # every file of the run (the lock file is the lock: taken and released by the refused start)
        return {f: os.stat(os.path.join(out, f)).st_mtime_ns for f in os.listdir(out) if f != ".zoo-train.lock"}

    before = state()
    r = train("--data_dir", data, "--ckpt_save_dir", out, "--lr", "0.01")
    assert r.returncode == 2, r.stdout[-2000:] + r.stderr[-2000:]
    assert f"ckpt_save_dir {out} already holds a run (args.yaml" in r.stderr
    assert "add --resume auto" in r.stderr and f"--ckpt_save_dir {out}-2" in r.stderr
    assert (r.stdout + r.stderr).count("already holds a run") == 1 and "Traceback" not in r.stderr
    assert state() == before and len(before) >= 8


@pytest.mark.parametrize("save_steps", [1, 0])
def test_nan_stops_and_keeps_last_good_checkpoint(data, tmp_path, save_steps):
    """lr 1e12 blows up in the first steps. With a checkpoint every step, the non-finite weights are caught
    at the save after the step that made them; without, the next step's loss is caught. Either way: exit 3,
    a clear message naming where it happened, and the checkpoint on disk (if any) is the last finite one."""
    out = str(tmp_path / "nan")
    r = train("--data_dir", data, "--ckpt_save_dir", out, "--lr", "1e12", "--ckpt_save_steps", str(save_steps),
              "--log_interval", "1", "--val_while_train", "false")
    assert r.returncode == 3, r.stdout[-2000:] + r.stderr[-2000:]
    assert "stopping" in r.stderr and "Lower the learning rate" in r.stderr
    assert (r.stdout + r.stderr).count("Lower the learning rate") == 1  # printed once
    if save_steps:
        m = re.search(r"non-finite \(.*\) by epoch 1, step (\d+): stopping without saving last\.ckpt", r.stderr)
        assert m, r.stderr[-2000:]
        assert "The last good checkpoint is" in r.stderr
        last = weights(os.path.join(out, "last.ckpt"))
        assert all(np.isfinite(v).all() for v in last.values())
    else:
        assert re.search(r"the loss became \S+ at epoch 1, step \d+", r.stderr)
        assert "No checkpoint was saved yet" in r.stderr
        assert not os.path.exists(os.path.join(out, "last.ckpt"))
    assert not [f for f in os.listdir(out) if "partial" in f or f.endswith(".tmp")]


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


MSRUN = shutil.which("msrun") or os.path.join(os.path.dirname(sys.executable), "msrun")


@pytest.mark.skipif(not os.path.exists(MSRUN), reason="msrun is installed with mindspore")
def test_msrun_two_workers_identical_weights_disjoint_samples(data, tmp_path):
    """Two workers share the output folder: rank 0's lock does not block its own ranks; identical weights,
    disjoint shards."""
    out, logs = str(tmp_path / "dp"), str(tmp_path / "msrun_logs")
    cmd = [MSRUN, "--worker_num=2", "--local_worker_num=2", f"--master_port={_free_port()}", "--join=True",
           f"--log_dir={logs}", TRAIN, "-c", SMOKE, "--data_dir", data, "--ckpt_save_dir", out, "--epoch_size", "1",
           "--record_samples", "true", "--ckpt_save_all_ranks", "true", "--val_while_train", "false"]
    env = dict(ENV, PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""))
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=900, env=env, cwd=ROOT)
    log0 = os.path.join(logs, "worker_0.log")
    worker0 = open(log0).read() if os.path.exists(log0) else ""
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:] + worker0[-3000:]
    assert "ranks 2, batch 8 per rank, global batch 16, 4 steps per epoch" in worker0
    a, b = weights(os.path.join(out, "last.ckpt")), weights(os.path.join(out, "rank1", "last.ckpt"))
    for k in a:
        if not k.startswith("train_state."):
            np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    s0, s1 = (set(map(int, open(os.path.join(out, f"samples_rank{rank}.txt")).read().split(":")[1].split()))
              for rank in (0, 1))
    assert len(s0) == len(s1) == 32 and not (s0 & s1)
    assert open(os.path.join(out, ".zoo-train.lock")).read() == ""


def test_bad_config_and_dataset_errors(data, tmp_path, capsys):
    """Errors found before the framework starts, through tools/train.py's own main (in-process): a message that
    names the key or the path, exit status 2, printed once, and no output folder created."""
    from zoo.train.loop import main

    out = str(tmp_path / "never")

    def run(*args, recipe=SMOKE):
        code = main(["-c", recipe, "--ckpt_save_dir", out, *args])
        cap = capsys.readouterr()
        assert cap.err.count("zoo train: error:") == 1 and "Traceback" not in cap.err and not cap.out.strip(), cap
        assert not os.path.exists(out)  # main created the folder and its log before checking the data
        return code, cap.err

    bad = tmp_path / "bad.yaml"
    bad.write_text(open(SMOKE).read() + "\nwarmup_epoch: 3\n")
    corrupt = make_image_folder(str(tmp_path / "corrupt"), classes=4, per_class=2, size=32)
    for dirpath, _, files in os.walk(os.path.join(corrupt, "train")):
        for f in files:
            open(os.path.join(dirpath, f), "wb").write(b"broken")
    cases = [
        (["--data_dir", data, "--lerning_rate", "0.1"], "unknown config key 'lerning_rate'"),
        (["--data_dir", str(tmp_path / "missing")], "missing: the dataset directory does not exist"),
        (["--data_dir", data, "--num_classes", "10"], "has 4 classes"),
        (["--data_dir", data, "--model", "triplet_resnet18_cfar"], "Did you mean"),
        (["--data_dir", data, "--resume", str(tmp_path / "nope.ckpt")], "no such checkpoint"),
        (["--data_dir", corrupt], "none of the 8 images of imagenet split 'train' can be read"),  # main: a traceback
        (["--data_dir", data, "--image_resize", "7"], "image_resize: 7 does not fit triplet_resnet18_cifar"),
        (["--data_dir", data, "--batch_size", "100"], "make no batch of 100"),
        (["--data_dir", data, "--ckpt_save_dir", ""], "ckpt_save_dir: empty"),
    ]
    for args, says in cases:
        code, err = run(*args)
        assert code == 2 and says in err, (args, err)
    code, err = run("--data_dir", data, recipe=str(bad))
    assert code == 2 and "unknown config key 'warmup_epoch'" in err and "warmup_epochs" in err
    assert not os.path.exists(os.path.join(ROOT, "analyze_fail.ir"))


@pytest.mark.parametrize("key, value, says", [
    ("image_resize", "0", ">= 1"), ("crop_pct", "0", "> 0 and <= 1"), ("seed", "-1", ">= 0"),
    ("lr", "-1", "> 0"), ("lr", "nan", "not a finite number"), ("lr", ".inf", "not a finite number"),
    ("hflip", "5", ">= 0 and <= 1"), ("label_smoothing", "2", ">= 0 and < 1"), ("weight_decay", "-1", ">= 0"),
    ("scale", "[1.0, 0.5]", "the first <= the second"), ("ratio", "[0.0, 1.0]", "each > 0"),
    ("momentum", "1.5", "< 1"), ("mean", "[1, 2]", "one value per input channel"), ("batch_size", "0", ">= 1"),
])
def test_every_key_has_a_range(key, value, says):
    """Values main accepted (--lr -1: gradient ascent) or let fail deep inside MindSpore or mindcv."""
    from zoo.errors import ConfigError
    from zoo.train.config import load_config

    with pytest.raises(ConfigError, match=re.escape(says)) as err:
        load_config(SMOKE, {key: value})
    assert str(err.value).startswith(key)


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
