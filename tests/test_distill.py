"""Distillation in the trainer (zoo.train.distill): both frameworks compute the same terms and updates, the teacher
stays frozen inside the MindSpore GRAPH step and out of the student's checkpoints, the keys are checked, maps of
different sizes are pooled, and data-parallel runs (msrun, torchrun) end with identical students on both ranks."""
import os
import shutil
import socket
import subprocess
import sys

import numpy as np
import pytest
import torch

import zoo
from zoo.data.synthetic import make_image_folder
from zoo.errors import ConfigError
from zoo.train import distill
from zoo.train.config import load_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAIN = os.path.join(ROOT, "tools", "train.py")
SMOKE = os.path.join(ROOT, "configs", "at", "wrn_16_1_at_smoke.yaml")
ENV = dict(os.environ, GLOG_v="3", PYTHONPATH=ROOT, OMP_NUM_THREADS="1")  # two workers share two cores


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    """A wrn_16_2 teacher with 4 classes, saved as a PyTorch state dict (what the smoke recipe distils from)."""
    path = str(tmp_path_factory.mktemp("teacher") / "wrn_16_2.pth")
    torch.manual_seed(0)
    torch.save(zoo.create_model("wrn_16_2", "pt", num_classes=4).state_dict(), path)
    return path


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_image_folder(str(tmp_path_factory.mktemp("data")), classes=4, per_class=8, size=32)


def test_training_parity_with_a_teacher(capsys):
    """The command of docs/distillation.md (through the CLI's own entry point, in this process): each loss term
    per step and the weight updates of both frameworks."""
    import re

    from zoo.cli import main

    code = main(["parity", "wrn_16_1", "--train-steps", "3", "--teacher", "wrn_16_2", "--opt", "momentum"])
    out = capsys.readouterr().out
    print(out)
    assert code == 0, out
    row = next(line for line in out.splitlines() if line.startswith("wrn_16_1  momentum"))
    loss_rel, update_rel, update_median = (float(v) for v in row.split()[3:6])
    rel = {m.group(1): float(m.group(2)) for m in re.finditer(r"^    (\w+) .* rel (\S+)$", out, re.M)}
    assert set(rel) == {"loss", "ce", "kd", "at0", "at1", "at2"}, rel
    assert all(rel[k] < 1e-5 for k in ("ce", "at0", "at1", "at2")), rel
    # the KL of two nearly equal distributions amplifies the twins' ~1e-6 logit differences
    assert rel["kd"] < 1e-3 and loss_rel < 1e-5
    assert update_rel < 1e-3 and update_median < 1e-4


def _cfg(teacher, tmp_path, **over):
    values = dict(teacher_ckpt_path=teacher, ckpt_save_dir=str(tmp_path), seed="3")
    values.update({k: str(v) for k, v in over.items()})
    return load_config(SMOKE, values)


def test_mindspore_teacher_is_frozen_in_the_graph_step_and_not_saved(teacher, tmp_path):
    """Two GRAPH steps: the student moves, the teacher's weights and BatchNorm statistics do not; the checkpoint
    holds the student only (and loads as a plain wrn_16_1); the momentum reset of the reference's quirk."""
    import mindspore as ms

    from zoo.train.loop import build_schedule
    from zoo.train.ms import MindSporeBackend

    cfg = _cfg(teacher, tmp_path)
    b = MindSporeBackend(cfg)
    b.build(build_schedule(cfg, 2))
    assert not any(p.name.startswith("teacher.") for p in b.opt.parameters)
    teacher_before = {p.name: p.asnumpy().copy() for p in b.step.get_parameters() if p.name.startswith("teacher.")}
    assert any(k.endswith("moving_mean") for k in teacher_before)
    student_before = {p.name: p.asnumpy().copy() for p in b.net.trainable_params()}
    b.set_train(True)
    rng = np.random.default_rng(0)
    for _ in range(2):
        x = rng.standard_normal((8, 3, 32, 32)).astype(np.float32)
        b.train_step(x, rng.integers(0, 4, 8).astype(np.int32))
    terms = b.loss_terms()
    assert set(terms) == {"loss", "ce", "kd", "at0", "at1", "at2"} and all(np.isfinite(list(terms.values())))
    assert abs(terms["loss"] - (0.1 * terms["ce"] + 0.9 * terms["kd"] + 1000 * (terms["at0"] + terms["at1"]
                                                                             + terms["at2"]))) < 1e-4 * terms["loss"]
    for p in b.step.get_parameters():
        if p.name in teacher_before:
            assert np.array_equal(p.asnumpy(), teacher_before[p.name]), p.name
    assert any(not np.array_equal(p.asnumpy(), student_before[p.name]) for p in b.net.trainable_params())
    path = str(tmp_path / "s.ckpt")
    b.save(path, {"epoch": 1, "step": 0})
    saved = ms.load_checkpoint(path)
    assert not any(k.startswith("teacher.") or k == distill.TERMS_PARAM for k in saved)
    assert any(k.startswith("moments.") for k in saved)
    zoo.create_model("wrn_16_1", "ms", checkpoint=path)  # a plain student checkpoint
    assert b.load(path)["epoch"] == 1  # and it resumes this distillation step
    b.reset_optimizer_state()
    assert all(not p.asnumpy().any() for p in b.opt.get_parameters() if p.name.startswith("moments."))


def test_pytorch_teacher_is_frozen_and_not_saved(teacher, tmp_path):
    from zoo.train.loop import build_schedule
    from zoo.train.pt import PyTorchBackend

    cfg = _cfg(teacher, tmp_path, framework="pt")
    b = PyTorchBackend(cfg)
    b.build(build_schedule(cfg, 2))
    t = b.distiller.teacher
    before = {k: v.clone() for k, v in t.state_dict().items()}
    b.set_train(True)
    rng = np.random.default_rng(0)
    for _ in range(2):
        b.train_step(rng.standard_normal((8, 3, 32, 32)).astype(np.float32), rng.integers(0, 4, 8), 0.05)
    assert not t.training and all(not p.requires_grad for p in t.parameters())
    assert all(torch.equal(v, t.state_dict()[k]) for k, v in before.items())
    opt_ids = {id(p) for g in b.opt.param_groups for p in g["params"]}
    assert not any(id(p) in opt_ids for p in t.parameters())
    b.save(str(tmp_path / "s.pth"), {"epoch": 1, "step": 0})
    sd = torch.load(tmp_path / "s.pth", weights_only=True)["state_dict"]
    assert set(sd) == set(zoo.create_model("wrn_16_1", "pt", num_classes=4).state_dict())
    assert b.opt.state and (b.reset_optimizer_state() or not b.opt.state)


def test_distillation_settings_are_checked(teacher, tmp_path):
    with pytest.raises(ConfigError, match="teacher_ckpt_path: teacher_model wrn_16_2 needs"):
        distill.check(load_config(SMOKE))
    with pytest.raises(ConfigError, match="without a teacher"):
        distill.check(load_config(SMOKE, {"teacher_model": "", "at_beta": "1000"}))
    with pytest.raises(ConfigError, match="kd_alpha: must be in"):
        distill.check(_cfg(teacher, tmp_path, kd_alpha=1.5))
    with pytest.raises(ConfigError, match="no effect"):
        distill.check(_cfg(teacher, tmp_path, kd_alpha=0, at_beta=0))
    with pytest.raises(KeyError, match="Did you mean"):
        distill.check(_cfg(teacher, tmp_path, teacher_model="wrn_16_3"))
    with pytest.raises(ConfigError, match="the student has 3 stage outputs and the teacher 4"):
        distill.make_plan(_cfg(teacher, tmp_path, teacher_model="at_resnet18_folded", kd_alpha=0,
                               teacher_ckpt_path=_folded_teacher(tmp_path), teacher_kwargs="{global_pool: avg}"))
    with pytest.raises(ConfigError, match="the teacher at_resnet18_folded has 1000 classes and the student 4"):
        distill.make_plan(_cfg(teacher, tmp_path, teacher_model="at_resnet18_folded",
                               teacher_ckpt_path=_folded_teacher(tmp_path)))
    with pytest.raises(ConfigError, match="out of range"):
        distill.make_plan(_cfg(teacher, tmp_path, at_groups="[[0, 3]]"))


def _folded_teacher(tmp_path):
    path = tmp_path / "folded.pth"
    if not path.exists():
        with torch.device("meta"):
            shapes = {k: v.shape for k, v in zoo.create_model("at_resnet18_folded", "pt").state_dict().items()}
        torch.save({k: torch.zeros(s) for k, s in shapes.items()}, path)
    return str(path)


def test_maps_of_different_sizes_are_pooled(teacher, tmp_path, caplog):
    """Any stage pairing: the larger map is pooled (adaptive average) to the smaller one's size, and it is
    logged; an ImageNet teacher (4 stages, global pooling at 32 px) teaches a CIFAR student's 3 stages."""
    plan = distill.make_plan(_cfg(teacher, tmp_path, at_groups="[[0, 1], [1, 2], 2]"))
    assert [(p.student, p.teacher, p.pool_student, p.pool_teacher) for p in plan.pairs] == [
        (0, 1, (16, 16), None), (1, 2, (8, 8), None), (2, 2, None, None)]
    plan = distill.make_plan(_cfg(teacher, tmp_path, teacher_model="at_resnet18_folded", kd_alpha=0,
                                  teacher_ckpt_path=_folded_teacher(tmp_path), teacher_kwargs="{global_pool: avg}",
                                  at_groups="[[0, 0], [1, 1], [2, 2]]"))
    assert [p.pool_student for p in plan.pairs] == [(8, 8), (4, 4), (2, 2)]
    import logging

    with caplog.at_level(logging.INFO, logger="zoo.train"):
        distill.announce(plan, _cfg(teacher, tmp_path), rank=1)
    assert "the student's map pooled to 8x8 (adaptive average)" in caplog.text


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _student(path):
    if path.endswith(".ckpt"):
        import mindspore as ms

        return {k: v.asnumpy() for k, v in ms.load_checkpoint(path).items()
                if not k.startswith("train_state.") and not isinstance(v, str)}  # str: the class list
    return {k: v.numpy() for k, v in torch.load(path, weights_only=True)["state_dict"].items()}


MSRUN = shutil.which("msrun") or os.path.join(os.path.dirname(sys.executable), "msrun")


@pytest.mark.skipif(not os.path.exists(MSRUN), reason="msrun is installed with mindspore")
def test_msrun_two_workers_with_a_teacher(data, teacher, tmp_path):
    """The smoke recipe under msrun (2 workers): both ranks end with the same student; beta is the same setting
    as on one device (each rank's loss is its batch mean, gradients averaged)."""
    out, logs = str(tmp_path / "dp"), str(tmp_path / "logs")
    cmd = [MSRUN, "--worker_num=2", "--local_worker_num=2", f"--master_port={_free_port()}", "--join=True",
           f"--log_dir={logs}", TRAIN, "-c", SMOKE, "--teacher_ckpt_path", teacher, "--data_dir", data,
           "--ckpt_save_dir", out, "--epoch_size", "1", "--ckpt_save_all_ranks", "true", "--val_while_train", "false"]
    env = dict(ENV, PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""))
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=900, env=env, cwd=ROOT)
    log0 = os.path.join(logs, "worker_0.log")
    worker0 = open(log0).read() if os.path.exists(log0) else ""
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:] + worker0[-3000:]
    assert "ranks 2, batch 8 per rank, global batch 16" in worker0 and "distillation: teacher wrn_16_2" in worker0
    a, b = _student(os.path.join(out, "last.ckpt")), _student(os.path.join(out, "rank1", "last.ckpt"))
    assert not any(k.startswith("teacher.") for k in a)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def test_torchrun_two_processes_with_a_teacher(data, teacher, tmp_path):
    out = str(tmp_path / "ddp")
    torchrun = shutil.which("torchrun") or os.path.join(os.path.dirname(sys.executable), "torchrun")
    r = subprocess.run([torchrun, "--nproc_per_node=2", f"--master_port={_free_port()}", TRAIN, "-c", SMOKE,
                        "--framework", "pt", "--teacher_ckpt_path", teacher, "--data_dir", data, "--ckpt_save_dir", out,
                        "--epoch_size", "1", "--ckpt_save_all_ranks", "true", "--val_while_train", "false"],
                       capture_output=True, text=True, timeout=900, env=dict(ENV, OMP_NUM_THREADS="1"), cwd=ROOT)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    log0 = open(os.path.join(out, "rank0.log")).read()
    assert "ranks 2, batch 8 per rank, global batch 16" in log0 and "DDP" in log0 and "(ce " in log0
    a, b = _student(os.path.join(out, "last.pth")), _student(os.path.join(out, "rank1", "last.pth"))
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def test_smoke_recipe_on_pytorch(data, teacher, tmp_path):
    """The PyTorch command of docs/distillation.md (tests/test_recipes.py runs the MindSpore one)."""
    out = str(tmp_path / "at_pt")
    r = subprocess.run([sys.executable, TRAIN, "-c", SMOKE, "--framework", "pt", "--data_dir", data, "--ckpt_save_dir",
                        out, "--epoch_size", "1", "--teacher_ckpt_path", teacher],
                       capture_output=True, text=True, timeout=900, env=dict(ENV, OMP_NUM_THREADS="1"), cwd=ROOT)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "distillation: teacher wrn_16_2" in r.stdout and "(ce " in r.stdout and "finished:" in r.stdout
    header = open(os.path.join(out, "result.log")).readline().split()
    assert header[:7] == ["epoch", "train_loss", "train_ce", "train_kd", "train_at0", "train_at1", "train_at2"]
    record = __import__("json").load(open(os.path.join(out, distill.TEACHER_RECORD)))
    assert record["teacher_sha256"] == distill.sha256(teacher) and record["teacher_model"] == "wrn_16_2"


def test_mindcv_runner_refuses_a_distillation_recipe(capsys):
    """mindcv's scripts have no distillation: leaving the teacher keys out would train the student alone."""
    from zoo.mindcv import run

    assert run(["train.py", "-c", SMOKE]) == 2
    assert "distils from a teacher" in capsys.readouterr().err


@pytest.mark.parametrize("teacher_model,at", [("triplet_resnet18_cifar", None), ("vit_32", "[[1, 0], [2, 8]]")])
def test_a_teacher_of_another_family(teacher_model, at, tmp_path):
    """Any family distils into the AT family's WRN on both frameworks: KD from a Triplet Attention ResNet (logits
    alone), AT + KD from a small-data ViT (its token maps, 8x8, matched to the student's 16x16 and 8x8 groups by
    pooling the student's larger map)."""
    from zoo.train.loop import build_schedule
    from zoo.train.ms import MindSporeBackend
    from zoo.train.pt import PyTorchBackend

    path = str(tmp_path / "teacher.pth")
    torch.manual_seed(0)
    torch.save(zoo.create_model(teacher_model, "pt", num_classes=4).state_dict(), path)
    over = dict(teacher_model=teacher_model, at_beta=1000 if at else 0, **({"at_groups": at} if at else {}))
    terms = {}
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((8, 3, 32, 32)).astype(np.float32), rng.integers(0, 4, 8).astype(np.int32)
    for fw, backend in (("pt", PyTorchBackend), ("ms", MindSporeBackend)):
        cfg = _cfg(path, tmp_path, framework=fw, **over)
        b = backend(cfg)
        b.build(build_schedule(cfg, 1))
        b.set_train(True)
        b.train_step(x, y, 0.05)
        terms[fw] = b.loss_terms()
    want = {"loss", "ce", "kd"} | ({"at1", "at2"} if at else set())
    assert set(terms["ms"]) == set(terms["pt"]) == want
    assert all(np.isfinite(v) and v > 0 for t in terms.values() for v in t.values())
    if at:
        plan = distill.make_plan(_cfg(path, tmp_path, **over))
        assert [(p.pool_student, p.pool_teacher) for p in plan.pairs] == [((8, 8), None), (None, None)]
