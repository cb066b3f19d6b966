"""The trainer's pieces without training: the output folder (refusal, lock, stale files, unwritable places),
the checkpoint policy (best, pruning across runs, a full disk), the weight-decay sets of both frameworks for
every family and filter, the non-finite message, and a resume of another model (in-process, no graph)."""
import os
import subprocess
import sys

import numpy as np
import pytest

import zoo
from zoo.errors import ConfigError, TrainingError
from zoo.train.config import load_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMOKE = os.path.join(ROOT, "configs", "triplet", "triplet_resnet18_cifar_smoke.yaml")


class FakeBackend:
    """What the loop needs of a backend to take a folder and save (saves write a small file)."""

    framework, suffix = "ms", ".ckpt"

    def __init__(self, rank=0, world=1, fail=None):
        self.rank, self.world, self.fail, self.saved = rank, world, fail, []

    def allreduce(self, values):
        return np.asarray(values, np.float64)

    def save(self, path, state):
        from zoo.files import write_text

        if self.fail:
            raise self.fail
        write_text(path, repr(state))
        self.saved.append(os.path.basename(path))


def cfg_for(folder, **over):
    return load_config(SMOKE, {"ckpt_save_dir": str(folder), **{k: str(v) for k, v in over.items()}})


# --- the output folder ----------------------------------------------------------------------------------------

def test_folder_holding_a_run_is_refused_unless_resumed(tmp_path):
    from zoo.train import rundir

    run = tmp_path / "run"
    run.mkdir()
    (run / "unrelated.txt").write_text("a folder the user made is fine")
    lock = rundir.take(cfg_for(run), FakeBackend())
    lock.release()
    (run / "args.yaml").write_text("model: x\n")
    (run / "last.ckpt").write_bytes(b"x")
    with pytest.raises(TrainingError, match=r"already holds a run \(args\.yaml, last\.ckpt; last written .*add "
                                            rf"--resume auto.*--ckpt_save_dir {run}-2"):
        rundir.take(cfg_for(run), FakeBackend())
    rundir.take(cfg_for(run, resume="auto"), FakeBackend()).release()
    # every rank of a multi-rank run learns rank 0's verdict (here: the other ranks' side of the all-reduce)
    refused = FakeBackend(rank=1, world=2)
    refused.allreduce = lambda v: np.array([1.0])
    with pytest.raises(TrainingError, match="rank 0 refused ckpt_save_dir"):
        rundir.take(cfg_for(run), refused)


def test_unwritable_or_impossible_output_folders(tmp_path):
    from zoo.train import rundir

    (tmp_path / "file").write_text("x")
    with pytest.raises(TrainingError, match="is a file, not a folder"):
        rundir.take(cfg_for(tmp_path / "file"), FakeBackend())
    with pytest.raises(TrainingError, match="cannot create it"):
        rundir.take(cfg_for(tmp_path / "file" / "below"), FakeBackend())  # a parent that is a file
    with pytest.raises(TrainingError, match="cannot create it"):
        rundir.take(cfg_for("/proc/zoo_no/run"), FakeBackend())
    with pytest.raises(ConfigError, match="ckpt_save_dir: empty"):
        cfg_for("")


def test_the_lock_keeps_a_second_run_out_and_a_dead_holder_does_not(tmp_path):
    """A second run in the same folder (started at once or later) fails at start naming the holder; a holder
    killed with SIGKILL releases it (the kernel drops the flock) and the next run takes it over."""
    from zoo.train.rundir import FolderLock

    holder = subprocess.Popen(
        [sys.executable, "-c", f"import time; from zoo.train.rundir import FolderLock; FolderLock({str(tmp_path)!r})"
         ".acquire(); print('held', flush=True); time.sleep(120)"],
        stdout=subprocess.PIPE, text=True, env=dict(os.environ, PYTHONPATH=ROOT))
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(TrainingError, match=rf"is in use by another run \(pid {holder.pid} on .* since "):
            FolderLock(str(tmp_path)).acquire()
    finally:
        holder.kill()
        holder.wait()
    lock = FolderLock(str(tmp_path)).acquire()
    assert lock.stale.startswith(f"pid {holder.pid} ")
    lock.release()
    assert open(tmp_path / ".zoo-train.lock").read() == ""
    again = FolderLock(str(tmp_path)).acquire()
    assert again.stale == ""  # a clean release leaves nothing to report
    again.release()


def test_stale_partials_are_removed_at_start(tmp_path):
    from zoo.files import _HOST
    from zoo.train import rundir

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()
    (tmp_path / "rank1").mkdir()
    a = tmp_path / f".last.ckpt.partial-{_HOST}-{dead}-abcdef.ckpt"
    b = tmp_path / "rank1" / f".last.ckpt.partial-{_HOST}-{dead}-abcdef.tmp"  # MindSpore's own leftover
    for p in (a, b):
        p.write_bytes(b"\0" * 2000)
    lock = rundir.take(cfg_for(tmp_path), FakeBackend())
    lock.release()
    assert not a.exists() and not b.exists()
    assert lock.notes == ["removed 2 temporary file(s) that killed saves left (4.0 KB): "
                          f"{a.name}, {b.name}"] or lock.notes[0].startswith("removed 2 temporary file(s)")


# --- the checkpoint policy ------------------------------------------------------------------------------------

def test_saver_last_epoch_best_and_pruning_only_its_own_files(tmp_path):
    from zoo.train.checkpoints import CheckpointSaver

    (tmp_path / "triplet_resnet18_cifar-9_8_old.ckpt").write_text("not this run's pattern")
    (tmp_path / "triplet_resnet18_cifar-extra-1_8.ckpt").write_text("another model's name prefix")
    b = FakeBackend()
    s = CheckpointSaver(b, cfg_for(tmp_path, keep_checkpoint_max=2, epoch_size=4), 8)
    for epoch, top1 in ((1, 10.0), (2, 30.0), (3, 20.0), (4, 25.0)):
        s.end_epoch(epoch, {"top1": top1})
    left = sorted(f for f in os.listdir(tmp_path) if not f.startswith("."))
    assert left == ["last.ckpt", "triplet_resnet18_cifar-3_8.ckpt", "triplet_resnet18_cifar-4_8.ckpt",
                    "triplet_resnet18_cifar-9_8_old.ckpt", "triplet_resnet18_cifar-extra-1_8.ckpt",
                    "triplet_resnet18_cifar_best.ckpt"]
    assert s.best == {"top1": 30.0, "epoch": 2}
    assert "'epoch': 2" in (tmp_path / "triplet_resnet18_cifar_best.ckpt").read_text()
    assert "'model': 'triplet_resnet18_cifar'" in (tmp_path / "last.ckpt").read_text()


def test_full_disk_at_a_save_stops_with_the_space_and_how_to_resume(tmp_path):
    from zoo.files import disk_full
    from zoo.train.checkpoints import CheckpointSaver

    s = CheckpointSaver(FakeBackend(), cfg_for(tmp_path), 8)
    s.save_last(1, 0)
    s.backend.fail = disk_full(str(tmp_path / "last.ckpt"), 90_000_000, str(tmp_path))
    with pytest.raises(TrainingError) as err:
        s.end_epoch(2, {})
    msg = str(err.value)
    assert "the disk is full" in msg and "the file needs about 90.0 MB" in msg
    assert "The run stopped at the end of epoch 2" in msg
    last = tmp_path / "last.ckpt"
    assert f"the last good checkpoint is {last}: free space, then continue it with --resume auto" in msg


def test_non_finite_message_names_the_right_position():
    """main said 'after epoch 3 step 0' for the save at the end of epoch 2."""
    from zoo.errors import Diverged
    from zoo.train.common import refuse_non_finite

    with pytest.raises(Diverged, match=r"\(fc\.weight\) by the end of epoch 2: stopping without saving last\.ckpt"):
        refuse_non_finite(["fc.weight"], {"epoch": 2, "step": 0}, "/x/last.ckpt")
    with pytest.raises(Diverged, match=r"by epoch 3, step 5:"):
        refuse_non_finite(["fc.weight"], {"epoch": 2, "step": 5}, "/x/last.ckpt")


# --- weight decay: the same parameters on both frameworks, for every family and filter -------------------------

def _smallest(family):
    """The family's smallest model (unpublished ones are the CIFAR variants, smaller still)."""
    return min(zoo.list_models(family), key=lambda n: zoo.get_entry(n).published.params or 0)


@pytest.fixture(scope="module")
def twins():
    """One small model per family, both frameworks (built, not compiled; no training graph)."""
    out = {}
    for fam in zoo.families():
        name = _smallest(fam)
        out[fam] = (name, zoo.create_model(name, "pt", num_classes=4), zoo.create_model(name, "ms", num_classes=4))
    return out


@pytest.mark.parametrize("wd_filter", ["disable", "auto", "norm_and_bias", "1d_and_bias"])
def test_weight_decay_sets_agree_across_frameworks_for_every_family(twins, wd_filter):
    """MindSpore's optimizer (what mindcv builds from our groups, read from its own decay flags) and PyTorch's
    param groups decay exactly the same parameters. Each set is also checked against the rule's own source:
    MindSpore's nn.Optimizer for 'auto' (main: PyTorch decayed everything), mindcv's init_group_params for
    'norm_and_bias', timm's rule for '1d_and_bias' (on PyTorch names)."""
    import mindspore as ms
    import torch
    from mindcv.optim.optim_factory import init_group_params

    from zoo.convert.names import name_map
    from zoo.train import ms as ms_backend
    from zoo.train import pt as pt_backend

    for fam, (name, pt_model, ms_net) in twins.items():
        cfg = load_config(SMOKE, {"model": name, "num_classes": "4", "weight_decay_filter": wd_filter,
                                  "weight_decay": "0.05", "opt": "adamw"})
        ms_opt = ms_backend.build_optimizer(ms_net, cfg, [0.1])
        ms_set = ms_backend.decayed_names(ms_opt)
        torch_opt = torch.optim.AdamW(pt_backend.param_groups(pt_model, cfg), lr=0.1)
        to_ms = name_map(pt_model)
        pt_set = {to_ms.get(n, n) for n in pt_backend.decayed_names(pt_model, torch_opt)}
        assert ms_set == pt_set, (fam, wd_filter, sorted(ms_set ^ pt_set)[:5])
        params = ms_net.trainable_params()
        if wd_filter == "disable":
            expect = {p.name for p in params}
        elif wd_filter == "auto":  # MindSpore's own default, no groups
            plain = ms.nn.Momentum(params, learning_rate=0.1, momentum=0.9, weight_decay=0.05)
            expect = {p.name for p, f in zip(plain.parameters, plain.decay_flags) if f}
        elif wd_filter == "norm_and_bias":
            expect = {p.name for p in init_group_params(params, 0.05, "norm_and_bias", [])[0]["params"]}
        else:
            expect = {to_ms.get(n, n) for n, p in pt_model.named_parameters()
                      if p.requires_grad and not (p.ndim <= 1 or n.endswith(".bias"))}
        assert ms_set == expect, (fam, wd_filter, sorted(ms_set ^ expect)[:5])
        assert 0 < len(ms_set) <= len(params)


# --- resume of another model / an unreadable file: short messages, the zoo's own words ---------------------------

def test_pytorch_resume_of_another_model_or_a_corrupt_file(tmp_path):
    """main relayed torch's full load_state_dict error (every key, printed twice) and torch's advice to load
    with weights_only=False."""
    import torch

    from zoo.train.pt import PyTorchBackend

    other = zoo.create_model("triplet_resnet50_cifar", "pt", num_classes=4)
    opt = torch.optim.SGD(other.parameters(), lr=0.1)
    torch.save({"state_dict": other.state_dict(), "optimizer": opt.state_dict(),
                "train_state": {"epoch": 1, "step": 0, "model": "triplet_resnet50_cifar"}}, tmp_path / "other.pth")
    (tmp_path / "noise.pth").write_bytes(np.random.default_rng(1).integers(0, 256, 3000, dtype=np.uint8).tobytes())
    b = PyTorchBackend(cfg_for(tmp_path / "run", framework="pt"))
    b.build([0.05])
    with pytest.raises(TrainingError) as err:
        b.load(str(tmp_path / "other.pth"))
    msg = str(err.value)
    assert "saved by a run of triplet_resnet50_cifar, this run trains triplet_resnet18_cifar" in msg
    assert len(msg) < 700 and msg.count("layer1.0.conv3.weight") <= 1, msg
    with pytest.raises(TrainingError, match="truncated or corrupt") as err:
        b.load(str(tmp_path / "noise.pth"))
    assert "weights_only" not in str(err.value)
