"""Teacher-student distillation for both trainer backends: attention transfer (AT) and knowledge distillation (KD).

Recipe keys (``zoo.train.config``): ``teacher_model`` and ``teacher_ckpt_path`` (any file ``zoo convert`` reads,
either framework, any layout of the teacher's family: a PyTorch-trained teacher distils into a MindSpore
student), ``teacher_kwargs`` (constructor arguments, e.g. ``{use_dim_bias: true}``), ``at_beta``, ``at_mode``
(``code`` | ``paper``), ``at_groups`` (which stage outputs; default all), ``kd_alpha``, ``kd_temperature``; and
the reference's recipe quirk ``fresh_optimizer_at_milestones`` (momentum reset where the lr drops).

The loss of a step, on each rank's batch::

    L = (1 - kd_alpha) * CE(y_s, y) + kd_alpha * KL(y_s, y_t; T) * T^2  +  at_beta * sum_g AT(s_g, t_g)

with ``zoo.losses`` (CE alone when ``kd_alpha`` is 0). Every model gives its stage outputs through
``forward_intermediates`` and its logits through ``forward_head``, so one forward pass of each network gives
both; any registered model with stage outputs can be student or teacher. Maps of different spatial size are
matched by adaptive average pooling of the larger one (RepDistiller's and mdistiller's rule); the log says so.

The teacher is frozen: built from its checkpoint, eval mode (BatchNorm on running statistics, dropout off),
no gradients, no optimizer state. On MindSpore it runs inside the same compiled GRAPH step as the student
(``DistillLossCell``; a ``FrozenTeacher`` wrapper keeps its cells in inference mode whatever ``set_train`` the
train step receives); its parameters are named ``teacher.*`` and left out of the student's checkpoints. The
run records the teacher file and its sha256 (``teacher.json`` in the run folder, and the log).

``at_beta`` means the same on any number of devices: each rank's loss is the mean over its batch and the
gradients are averaged over ranks. (The reference sums the per-GPU AT losses its ``data_parallel`` gathers,
so its effective beta is ``beta x ngpu``; docs/distillation.md.)
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import asdict, dataclass, field
from typing import List, Optional, Tuple

from zoo.errors import ConfigError

log = logging.getLogger("zoo.train")
# the recipe keys (zoo.train.config); mindcv has no distillation, so they are zoo-only (python -m zoo.mindcv
# refuses a recipe with a teacher)
KEYS = ("teacher_model", "teacher_ckpt_path", "teacher_kwargs", "at_beta", "at_mode", "at_groups", "kd_alpha",
        "kd_temperature", "fresh_optimizer_at_milestones")
TEACHER_PREFIX = "teacher."
TERMS_PARAM = "distill_terms"  # MindSpore: the step's loss terms, written by the graph, read after each step
TEACHER_RECORD = "teacher.json"


def is_distilling(cfg) -> bool:
    return bool(getattr(cfg, "teacher_model", ""))


def check(cfg) -> None:
    """The distillation keys, checked before anything is built (a teacher without a checkpoint is an error)."""
    if not 0.0 <= cfg.kd_alpha <= 1.0:
        raise ConfigError(f"kd_alpha: must be in [0, 1] (the KD term's weight; CE gets 1 - kd_alpha), "
                          f"got {cfg.kd_alpha}")
    if cfg.kd_temperature <= 0:
        raise ConfigError(f"kd_temperature: must be positive, got {cfg.kd_temperature}")
    if cfg.at_beta < 0:
        raise ConfigError(f"at_beta: must be at least 0, got {cfg.at_beta}")
    if cfg.fresh_optimizer_at_milestones and cfg.opt.lower() not in ("sgd", "momentum", "nesterov"):
        raise ConfigError(f"fresh_optimizer_at_milestones: resets SGD momentum (the reference's quirk); "
                          f"opt is {cfg.opt}")
    for key in ("teacher_kwargs", "at_groups"):  # structured values given on the command line arrive as text
        value = getattr(cfg, key)
        if isinstance(value, str):
            import yaml

            try:
                setattr(cfg, key, yaml.safe_load(value) if value.strip() else None)
            except yaml.YAMLError:
                raise ConfigError(f"{key}: cannot read {value!r}") from None
    if not is_distilling(cfg):
        extra = [k for k in ("teacher_ckpt_path", "teacher_kwargs", "at_groups") if getattr(cfg, k)]
        extra += [k for k in ("at_beta", "kd_alpha") if getattr(cfg, k)]
        if extra:
            raise ConfigError(f"{', '.join(extra)}: distillation settings without a teacher; set teacher_model "
                              "(and teacher_ckpt_path) or remove them")
        return
    from zoo import registry

    registry.get(cfg.teacher_model)  # an unknown name fails here, with suggestions
    if not cfg.teacher_ckpt_path:
        raise ConfigError(f"teacher_ckpt_path: teacher_model {cfg.teacher_model} needs its trained weights; pass "
                          "--teacher_ckpt_path FILE (any checkpoint `zoo convert` reads, either framework)")
    if not os.path.isfile(cfg.teacher_ckpt_path):
        raise ConfigError(f"teacher_ckpt_path: {cfg.teacher_ckpt_path}: no such file")
    if cfg.at_beta == 0 and cfg.kd_alpha == 0:
        raise ConfigError("at_beta and kd_alpha are both 0: the teacher would have no effect; set at_beta (AT, e.g. "
                          "1000) and/or kd_alpha (KD, e.g. 0.9)")
    if cfg.teacher_kwargs is not None and not isinstance(cfg.teacher_kwargs, dict):
        raise ConfigError(f"teacher_kwargs: expected a mapping of constructor arguments, got {cfg.teacher_kwargs!r}")


def sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# --- the plan: what is computed, framework-free ---------------------------------------------------------

@dataclass
class Pair:
    student: int  # index into the student's stage outputs
    teacher: int
    student_hw: Tuple[int, int]
    teacher_hw: Tuple[int, int]
    pool_student: Optional[Tuple[int, int]] = None  # pool the student's map to this size (it is larger)
    pool_teacher: Optional[Tuple[int, int]] = None

    def describe(self) -> str:
        s, t = "x".join(map(str, self.student_hw)), "x".join(map(str, self.teacher_hw))
        how = ("same size" if not (self.pool_student or self.pool_teacher) else
               f"the student's map pooled to {t} (adaptive average)" if self.pool_student else
               f"the teacher's map pooled to {s} (adaptive average)")
        return f"student stage {self.student} ({s}) ~ teacher stage {self.teacher} ({t}): {how}"


@dataclass
class Plan:
    teacher_model: str
    teacher_path: str
    teacher_sha256: str
    teacher_kwargs: dict
    at_beta: float
    at_mode: str
    kd_alpha: float
    kd_temperature: float
    label_smoothing: float
    pairs: List[Pair] = field(default_factory=list)
    variant: str = ""  # what the teacher network is, where the class says (the folded teachers)

    @property
    def term_names(self) -> List[str]:
        """The logged terms: the total, CE, KD's KL term, and one AT term per pair (unweighted)."""
        return ["loss", "ce", "kd"] + [f"at{p.student}" for p in self.pairs]

    def record(self) -> dict:
        d = asdict(self)
        d["pairs"] = [p.describe() for p in self.pairs]
        return d


def _stage_sizes(model, in_chans: int, size: int):
    import torch

    with torch.no_grad():
        _, feats = model.eval().forward_intermediates(torch.empty(1, in_chans, size, size, device="meta"))
    return [tuple(int(v) for v in f.shape[2:]) for f in feats]


def _parse_groups(groups, n_s: int, n_t: int) -> List[Tuple[int, int]]:
    if groups is None:
        if n_s != n_t:
            raise ConfigError(f"at_groups: the student has {n_s} stage outputs and the teacher {n_t}; say which to "
                              "pair, e.g. at_groups: [[0, 1], [1, 2]] (student stage, teacher stage)")
        return [(i, i) for i in range(n_s)]
    if not isinstance(groups, (list, tuple)) or not groups:
        raise ConfigError(f"at_groups: expected a list of stage indices or [student, teacher] pairs, got {groups!r}")
    pairs = []
    for g in groups:
        if isinstance(g, int) and not isinstance(g, bool):
            pairs.append((g, g))
        elif isinstance(g, (list, tuple)) and len(g) == 2 and all(isinstance(v, int) for v in g):
            pairs.append((int(g[0]), int(g[1])))
        else:
            raise ConfigError(f"at_groups: {g!r} is neither a stage index nor a [student, teacher] pair")
    for s, t in pairs:
        if not (0 <= s < n_s and 0 <= t < n_t):
            raise ConfigError(f"at_groups: pair ({s}, {t}) is out of range: the student has stages 0..{n_s - 1}, the "
                              f"teacher 0..{n_t - 1}")
    return pairs


def make_plan(cfg, loaded_teacher=None) -> Plan:
    """Check the teacher against the student (classes, map sizes) on the meta device; log and return the plan."""
    import torch

    from zoo import registry
    from zoo.convert import core
    from zoo.factory import build_kwargs
    from zoo.losses import check_mode

    check(cfg)
    try:
        check_mode(cfg.at_mode)
    except ValueError as err:
        raise ConfigError(f"at_mode: {err}") from None
    t_entry, s_entry = registry.get(cfg.teacher_model), registry.get(cfg.model)
    loaded = loaded_teacher or core.load_state(cfg.teacher_model, cfg.teacher_ckpt_path, **(cfg.teacher_kwargs or {}))
    t_kwargs = {**(cfg.teacher_kwargs or {}), **loaded.kwargs}
    t_classes = int(loaded.kwargs.get("num_classes", t_entry.num_classes))
    if cfg.kd_alpha > 0 and t_classes != cfg.num_classes:
        raise ConfigError(f"kd_alpha: KD compares the class scores, but the teacher {cfg.teacher_model} has "
                          f"{t_classes} classes and the student {cfg.num_classes}")
    with torch.device("meta"):
        teacher = _model_class(t_entry, "pt")(**build_kwargs(t_entry, **t_kwargs))
        student = _model_class(s_entry, "pt")(**build_kwargs(s_entry, num_classes=cfg.num_classes,
                                                             in_chans=cfg.in_channels))
    if cfg.at_beta > 0:
        for m, role, name in ((student, "student", cfg.model), (teacher, "teacher", cfg.teacher_model)):
            if not hasattr(m, "forward_intermediates"):
                raise ConfigError(f"at_beta: the {role} {name} gives no stage outputs (forward_intermediates) for "
                                  "attention transfer; KD alone (at_beta 0) works with any model")
    plan = Plan(cfg.teacher_model, os.path.abspath(cfg.teacher_ckpt_path), sha256(cfg.teacher_ckpt_path),
                {k: (list(v) if isinstance(v, tuple) else v) for k, v in t_kwargs.items()}, float(cfg.at_beta),
                cfg.at_mode, float(cfg.kd_alpha), float(cfg.kd_temperature), float(cfg.label_smoothing),
                variant=str(getattr(teacher, "variant", "")))
    if cfg.at_beta > 0:
        try:
            s_sizes = _stage_sizes(student, cfg.in_channels, cfg.image_resize)
            t_sizes = _stage_sizes(teacher, cfg.in_channels, cfg.image_resize)
        except (ValueError, RuntimeError) as err:
            raise ConfigError(f"image_resize: {cfg.image_resize} px does not fit the student and teacher: "
                              f"{str(err).splitlines()[0]}") from None
        for s, t in _parse_groups(cfg.at_groups, len(s_sizes), len(t_sizes)):
            sh, th = s_sizes[s], t_sizes[t]
            pair = Pair(s, t, sh, th)
            if sh != th:
                if sh[0] >= th[0] and sh[1] >= th[1]:
                    pair.pool_student = th
                elif sh[0] <= th[0] and sh[1] <= th[1]:
                    pair.pool_teacher = sh
                else:
                    raise ConfigError(f"at_groups: student stage {s} ({sh[0]}x{sh[1]}) and teacher stage {t} "
                                      f"({th[0]}x{th[1]}) cannot be matched: neither map is at least as large as the "
                                      "other in both dimensions")
            plan.pairs.append(pair)
    return plan


def announce(plan: Plan, cfg, rank: int) -> None:
    """Log the plan and, on rank 0, write ``teacher.json`` in the run folder."""
    log.info("distillation: teacher %s from %s (sha256 %s)%s", plan.teacher_model, plan.teacher_path,
             plan.teacher_sha256[:16], f"; {plan.variant}" if plan.variant else "")
    log.info("distillation loss: (1 - %g) * CE + %g * KD(T=%g) + %g * sum AT(%s) over %d stage pair(s); the teacher is "
             "frozen (eval mode, no gradients)", plan.kd_alpha, plan.kd_alpha, plan.kd_temperature, plan.at_beta,
             plan.at_mode, len(plan.pairs))
    for p in plan.pairs:
        log.info("  AT %s", p.describe())
    if rank == 0:
        from zoo.files import atomic_write

        def write(tmp):
            with open(tmp, "w") as f:
                json.dump(plan.record(), f, indent=2)

        atomic_write(os.path.join(cfg.ckpt_save_dir, TEACHER_RECORD), write)


def build_teacher(plan: Plan, framework: str, loaded=None):
    """The teacher network of the plan, weights loaded, in inference mode."""
    from zoo import registry
    from zoo.convert import core
    from zoo.factory import build_kwargs

    entry = registry.get(plan.teacher_model)
    loaded = loaded or core.load_state(plan.teacher_model, plan.teacher_path, **_kw(plan.teacher_kwargs))
    model = _model_class(entry, framework)(**build_kwargs(entry, **{**_kw(plan.teacher_kwargs), **loaded.kwargs}))
    core.load_into(model, framework, loaded)
    return model


def _model_class(entry, framework: str):
    """The class of a registered model in one framework."""
    import importlib

    return getattr(importlib.import_module(f"zoo.models.{entry.family}.{framework}"), entry.cls)


def _kw(kwargs: dict) -> dict:
    return {k: (tuple(v) if isinstance(v, list) else v) for k, v in kwargs.items()}


# --- MindSpore: the teacher and the losses inside the compiled train step ------------------------------------

def ms_loss_cell(plan: Plan, student, loaded=None):
    """A cell ``(x, y) -> loss`` computing the student, the frozen teacher and every term in one GRAPH."""
    import mindspore as ms
    import numpy as np
    from mindspore import nn, ops

    from zoo.losses import ms as LM

    teacher = build_teacher(plan, "ms", loaded)
    teacher.update_parameters_name(TEACHER_PREFIX)
    for p in teacher.get_parameters():
        p.requires_grad = False

    class FrozenTeacher(nn.Cell):
        """The teacher, always in inference mode (BatchNorm on running statistics, dropout off), whatever
        ``set_train`` reaches it through the train step; its outputs carry no gradient."""

        def __init__(self, net, stages):
            super().__init__(auto_prefix=False)
            self.net, self.stages = net, stages
            for _, cell in net.cells_and_names():
                if isinstance(cell, nn.BatchNorm2d) or type(cell).__name__.startswith("BatchNorm"):
                    cell.use_batch_statistics = False
            self.add_flags_recursive(training=False)

        def add_flags_recursive(self, **flags):
            if "training" in flags:
                flags = dict(flags, training=False)
            return super().add_flags_recursive(**flags)

        def construct(self, x):
            if not self.stages:  # KD alone: the logits are enough (any model)
                return ops.stop_gradient(self.net(x)), []
            final, feats = self.net.forward_intermediates(x)
            logits = ops.stop_gradient(self.net.forward_head(final))
            return logits, [ops.stop_gradient(f) for f in feats]

    pairs = tuple((p.student, p.teacher, p.pool_student, p.pool_teacher) for p in plan.pairs)
    stages = bool(pairs)
    n_terms = len(plan.term_names)

    class DistillLossCell(nn.Cell):
        def __init__(self):
            super().__init__(auto_prefix=False)
            self.student = student
            self.stages = stages
            self.teacher = FrozenTeacher(teacher, stages)
            self.terms = ms.Parameter(ms.Tensor(np.zeros(n_terms, np.float32)), name=TERMS_PARAM, requires_grad=False)
            self.alpha, self.temperature, self.beta = plan.kd_alpha, plan.kd_temperature, plan.at_beta
            self.smoothing, self.mode, self.pairs = plan.label_smoothing, plan.at_mode, pairs

        def construct(self, x, y):
            if self.stages:
                final, feats = self.student.forward_intermediates(x)
                logits = self.student.forward_head(final)
            else:
                logits, feats = self.student(x), []
            t_logits, t_feats = self.teacher(x)
            kl, ce = LM.kd_terms(logits, t_logits, y, self.temperature, self.smoothing)
            loss = ce * (1.0 - self.alpha) + kl * self.alpha if self.alpha > 0 else ce
            terms = [ce, kl]
            for s, t, pool_s, pool_t in self.pairs:
                fs, ft = feats[s], t_feats[t]
                if pool_s is not None:
                    fs = LM.pool_to(fs, pool_s)
                if pool_t is not None:
                    ft = LM.pool_to(ft, pool_t)
                at = LM.at_loss(fs, ft, self.mode)
                terms.append(at)
                loss = loss + self.beta * at
            ops.assign(self.terms, ops.stack([loss] + terms))
            return loss

    return DistillLossCell()


def is_student_param(name: str) -> bool:
    """What a student checkpoint holds of a distillation train step (not the teacher, not the loss terms)."""
    return not (name.startswith(TEACHER_PREFIX) or name == TERMS_PARAM)


def ms_terms(loss_cell) -> dict:
    return dict(zip(_names(loss_cell), loss_cell.terms.asnumpy().astype(float).tolist()))


def _names(loss_cell):
    return ["loss", "ce", "kd"] + [f"at{s}" for s, _, _, _ in loss_cell.pairs]


# --- PyTorch ---------------------------------------------------------------------------------------------

class PtDistiller:
    """The frozen teacher and the loss of a PyTorch step; ``student_forward`` wraps the student so that one call
    (through DDP) returns its logits and stage outputs."""

    def __init__(self, plan: Plan, device, loaded=None):
        import torch

        self.plan = plan
        self.teacher = build_teacher(plan, "pt", loaded).to(device).eval()
        for p in self.teacher.parameters():
            p.requires_grad_(False)
        self.terms = dict.fromkeys(plan.term_names, 0.0)
        self._torch = torch

    def student_forward(self, model):
        """The student as one module (for DDP): (logits, stage outputs), or (logits, []) for KD alone."""
        import torch

        if not self.plan.pairs:
            class LogitsOnly(torch.nn.Module):
                def __init__(self, m):
                    super().__init__()
                    self.m = m

                def forward(self, x):
                    return self.m(x), []

            return LogitsOnly(model)

        class WithStages(torch.nn.Module):
            def __init__(self, m):
                super().__init__()
                self.m = m

            def forward(self, x):
                final, feats = self.m.forward_intermediates(x)
                return self.m.forward_head(final), feats

        return WithStages(model)

    def loss(self, wrapped, x, y):
        from zoo.losses import pt as LP

        torch, plan = self._torch, self.plan
        logits, feats = wrapped(x)
        self.teacher.eval()
        with torch.no_grad():
            if plan.pairs:
                final, t_feats = self.teacher.forward_intermediates(x)
                t_logits = self.teacher.forward_head(final)
            else:
                t_logits, t_feats = self.teacher(x), []
        with torch.autocast(x.device.type, enabled=False):  # the terms in float32 (the 1e-12 floor of AT)
            kl, ce = LP.kd_terms(logits, t_logits, y, plan.kd_temperature, plan.label_smoothing)
            loss = ce * (1.0 - plan.kd_alpha) + kl * plan.kd_alpha if plan.kd_alpha > 0 else ce
            terms = [ce, kl]
            for p in plan.pairs:
                fs, ft = feats[p.student], t_feats[p.teacher]
                if p.pool_student is not None:
                    fs = LP.pool_to(fs, p.pool_student)
                if p.pool_teacher is not None:
                    ft = LP.pool_to(ft, p.pool_teacher)
                at = LP.at_loss(fs, ft, plan.at_mode)
                terms.append(at)
                loss = loss + plan.at_beta * at
        self.terms = dict(zip(plan.term_names, [float(loss.detach())] + [float(t.detach()) for t in terms]))
        return loss


# --- logging the terms -----------------------------------------------------------------------------------

class TermMeter:
    """Each term's mean over the log interval and over the epoch (averaged over ranks)."""

    def __init__(self, backend):
        self.backend = backend
        self.names, self.interval, self.epoch = None, [], []

    def add(self) -> None:
        terms = getattr(self.backend, "loss_terms", lambda: None)()
        if not terms:
            return
        import numpy as np

        self.names = list(terms)
        v = np.array([terms[k] for k in self.names], np.float64)
        v = self.backend.allreduce(v) / self.backend.world
        self.interval.append(v)
        self.epoch.append(v)

    @staticmethod
    def _fmt(names, rows) -> str:
        import numpy as np

        m = np.mean(rows, axis=0)
        return " ".join(f"{k} {v:.4g}" for k, v in zip(names, m) if k != "loss")

    def interval_text(self) -> str:
        if not self.interval:
            return ""
        text = " (" + self._fmt(self.names, self.interval) + ")"
        self.interval = []
        return text

    def epoch_means(self) -> dict:
        import numpy as np

        if not self.epoch:
            return {}
        m = np.mean(self.epoch, axis=0)
        self.epoch = []
        return {f"train_{k}": float(v) for k, v in zip(self.names, m) if k != "loss"}


# --- the reference's recipe quirk ---------------------------------------------------------------------------

def milestone_epochs(cfg) -> set:
    """0-based epochs at whose start the lr drops (multi_step_decay milestones, or step_decay periods)."""
    if cfg.scheduler == "multi_step_decay" and cfg.multi_step_decay_milestones:
        return {int(m) for m in cfg.multi_step_decay_milestones}
    if cfg.scheduler == "step_decay" and cfg.decay_epochs > 0:
        return set(range(cfg.warmup_epochs + cfg.decay_epochs, cfg.epoch_size, cfg.decay_epochs))
    return set()


def at_epoch_start(backend, cfg, epoch: int, skip: int) -> None:
    """``fresh_optimizer_at_milestones``: at the start of an epoch where the lr drops, reset the optimizer's
    momentum (the reference creates a new SGD there). A resumed mid-epoch start does not reset again: the
    checkpoint holds the state after the reset."""
    if cfg.fresh_optimizer_at_milestones and skip == 0 and epoch in milestone_epochs(cfg):
        backend.reset_optimizer_state()
        log.info("epoch [%d/%d]: the lr drops here; optimizer state reset (fresh_optimizer_at_milestones, as the "
                 "reference creates a new SGD)", epoch + 1, cfg.epoch_size)
