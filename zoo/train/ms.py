"""The MindSpore backend of the trainer (``zoo.train.loop``): one process per device, msrun for data parallel.

GRAPH mode by default. mindcv's factories build the loss and the optimizer (``create_loss``,
``create_optimizer``); MindSpore's ``amp.build_train_network`` builds the train step (mixed precision,
loss scaling and, under data parallel, the gradient all-reduce). Checkpoints are ``.ckpt`` files with
the weights, the optimizer state and ``train_state.*`` entries for the training position.
"""
from __future__ import annotations

import json
import logging
import os

import numpy as np

from zoo.train.config import TrainConfig
from zoo.errors import TrainingError
from zoo.files import atomic_write
from zoo.train import distill
from zoo.train.common import decayed, launched_by_msrun, mismatch_message, refuse_non_finite

STATE_PREFIX = "train_state."  # training-position entries in checkpoints (zoo convert drops them)
ADAM_FAMILY = ("adam", "adamw", "lamb", "nadam", "adan", "lion")


def check_device(cfg: TrainConfig) -> None:
    """Settings MindSpore would reject with a traceback deep inside, said plainly before anything is built.
    ``device_target: auto`` becomes the installed build's default device (what mindcv's train.py uses)."""
    from zoo.errors import ConfigError

    if cfg.device_target == "auto":
        import mindspore as ms

        cfg.device_target = ms.get_context("device_target")
    if cfg.device_target == "CPU" and (cfg.loss_scale_type == "dynamic" or cfg.drop_overflow_update):
        raise ConfigError("loss_scale_type: dynamic / drop_overflow_update: MindSpore supports neither on CPU; for a "
                          "CPU run pass --amp_level O0 --loss_scale_type fixed --loss_scale 1 --drop_overflow_update "
                          "False")
    if cfg.device_target == "CPU" and cfg.opt.lower() == "lamb":
        raise ConfigError("opt: lamb: MindSpore's Lamb has no CPU kernel (Ascend and GPU only); for a CPU try-out of "
                          "this recipe pass --opt adamw")
    if cfg.distribute and "MS_ROLE" not in os.environ:
        raise ConfigError("distribute: True needs the processes msrun starts (no MS_ROLE in the environment): launch "
                          "with `msrun --worker_num=N --local_worker_num=N tools/train.py -c ...`, or pass "
                          "--distribute False for one device (msrun with several workers turns it on by itself)")


check = check_device  # the loop calls <backend module>.check(cfg) before anything else


class MindSporeBackend:
    framework, suffix = "ms", ".ckpt"
    cache_graphs = True  # MindSpore's compile cache in GRAPH mode (zoo bench turns it off to time compilation)

    def __init__(self, cfg: TrainConfig):
        import mindspore as ms

        self.cfg = cfg
        self.classes = None  # the label names, stored in every checkpoint (set by the loop)
        check_device(cfg)  # resolves device_target 'auto'
        ms.set_context(mode=cfg.mode)
        try:
            ms.set_device(cfg.device_target)
        except RuntimeError:  # MindSpore already ran a kernel in this process (e.g. zoo parity --train-steps)
            if ms.get_context("device_target") != cfg.device_target:
                current = ms.get_context("device_target")
                raise TrainingError(f"device_target: this process already runs MindSpore on {current}; it cannot "
                                    f"switch to {cfg.device_target}") from None
        self.rank, self.world = 0, 1
        if cfg.distribute or launched_by_msrun():
            from mindspore.communication import get_group_size, get_rank, init

            init()
            self.rank, self.world = get_rank(), get_group_size()
            ms.set_auto_parallel_context(parallel_mode=ms.ParallelMode.DATA_PARALLEL, gradients_mean=True,
                                         device_num=self.world)
        ms.set_seed(cfg.seed)
        np.random.seed(cfg.seed)

    def describe(self) -> str:
        cache = ""
        if getattr(self, "compile_cache", None):
            state = "a compiled graph is there" if self.cache_was_warm else "empty: compiling"
            cache = f", compile cache {os.path.relpath(self.compile_cache, self.cfg.ckpt_save_dir)} ({state})"
        return (f"MindSpore {'GRAPH' if self.cfg.mode == 0 else 'PYNATIVE'} mode, amp {self.cfg.amp_level}, "
                f"{self.cfg.device_target}{cache}")

    # --- building --------------------------------------------------------------------------

    def enable_compile_cache(self, schedule: list) -> None:
        """MindSpore's compile cache for this run's graphs (GRAPH mode), in ``<ckpt_save_dir>/compile_cache/<key>``:
        a rerun, a resume or another rank loads the compiled train step instead of compiling it again. The key
        covers every recipe key that can change a graph, the schedule, the ranks and the model code
        (``zoo.compile_cache``); ``ZOO_COMPILE_CACHE=off`` turns it off."""
        import hashlib

        from zoo import compile_cache
        from zoo.train.config import to_dict

        self.compile_cache = None
        root = compile_cache.train_cache_root(self.cfg.ckpt_save_dir)
        if self.cfg.mode != 0 or root is None or not self.cache_graphs:
            return
        cfg = self.cfg
        graph_keys = {k: v for k, v in to_dict(cfg).items() if k not in compile_cache.NOT_IN_GRAPH}
        lr = hashlib.sha256(np.asarray(schedule, np.float64).tobytes()).hexdigest()[:16]
        key = compile_cache.cache_key(cfg.model, "train", (cfg.batch_size, cfg.in_channels, cfg.image_resize,
                                                           cfg.image_resize), cfg.amp_level, cfg.mode,
                                      kwargs=graph_keys, extra=dict(lr=lr, steps=len(schedule), world=self.world))
        self.compile_cache = compile_cache.enable(root, key)
        self.cache_was_warm = compile_cache.is_warm(self.compile_cache)

    def build(self, schedule: list) -> None:
        from mindcv.loss import create_loss

        import zoo

        cfg = self.cfg
        self.enable_compile_cache(schedule)
        self.net = zoo.create_model(cfg.model, "ms", num_classes=cfg.num_classes, checkpoint=cfg.ckpt_path or None,
                                    in_chans=cfg.in_channels, drop_rate=cfg.drop_rate,
                                    drop_path_rate=cfg.drop_path_rate)
        self.opt = build_optimizer(self.net, cfg, schedule)
        self.loss_cell = None
        if distill.is_distilling(cfg):  # student, frozen teacher and every loss term in one train step
            plan = distill.make_plan(cfg)
            distill.announce(plan, cfg, self.rank)
            self.loss_cell = distill.ms_loss_cell(plan, self.net)
            self.step = build_train_step(self.loss_cell, None, self.opt, cfg)
        else:
            loss_fn = create_loss(name=cfg.loss.upper(), label_smoothing=cfg.label_smoothing)
            self.step = build_train_step(self.net, loss_fn, self.opt, cfg)
        self.step.set_train(True)

    def loss_terms(self):
        """The last step's loss terms (distillation), else None."""
        return None if self.loss_cell is None else distill.ms_terms(self.loss_cell)

    def reset_optimizer_state(self) -> None:
        """A fresh SGD's state: momentum buffers 0 (nn.SGD's first-step flags 1)."""
        import mindspore as ms

        for p in self.opt.get_parameters():
            if p.name.startswith(("moments.", "accum.", "stat.")):
                p.set_data(ms.Tensor(np.full(p.shape, 1.0 if p.name.startswith("stat.") else 0.0), p.dtype))

    def n_params(self) -> int:
        return sum(int(np.prod(p.shape)) for p in self.net.trainable_params())

    # --- running ---------------------------------------------------------------------------

    def set_train(self, mode: bool) -> None:
        (self.step if mode else self.net).set_train(mode)

    def train_step(self, x, y, lr=None):
        """One optimizer step; (local loss, overflow). The lr comes from the optimizer's own schedule."""
        import mindspore as ms

        out = self.step(ms.Tensor(x), ms.Tensor(y))
        if isinstance(out, tuple):
            return float(out[0].asnumpy()), bool(out[1].asnumpy())
        return float(out.asnumpy()), False

    def logits(self, x) -> np.ndarray:
        import mindspore as ms

        return self.net(ms.Tensor(x)).asnumpy()

    def allreduce(self, values: np.ndarray) -> np.ndarray:
        """Sum over ranks (float32 on the wire)."""
        if self.world == 1:
            return np.asarray(values, np.float64)
        import mindspore as ms
        from mindspore import ops

        return ops.AllReduce()(ms.Tensor(np.asarray(values, np.float32))).asnumpy().astype(np.float64)

    def reduce_bn(self) -> None:
        """Average BatchNorm running statistics over ranks (timm's ``--dist-bn reduce``): data parallel
        all-reduces gradients, not these buffers, and validation is sharded across ranks."""
        if self.world == 1:
            return
        import mindspore as ms

        stats = [p for p in self.net.get_parameters() if p.name.endswith((".moving_mean", ".moving_variance"))]
        if not stats:
            return
        flat = self.allreduce(np.concatenate([p.asnumpy().reshape(-1) for p in stats])) / self.world
        offset = 0
        for p in stats:
            n = int(np.prod(p.shape))
            p.set_data(ms.Tensor(flat[offset:offset + n].reshape(p.shape), p.dtype))
            offset += n

    def finish(self) -> None:
        from zoo import compile_cache

        compile_cache.disable()  # later graphs of this process (another run, a parity check) are not this run's

    # --- checkpoints -----------------------------------------------------------------------

    def save(self, path: str, state: dict) -> None:
        """Weights + optimizer state + training position, written atomically; refuses non-finite weights
        (a step's loss is computed before its update, so the weights after it are checked here)."""
        import mindspore as ms

        from zoo.convert.io import CLASSES_KEY, quiet_mindspore_logger

        params = [p for p in self.step.get_parameters() if distill.is_student_param(p.name)]
        arrays = [(p.name, p.dtype, p.asnumpy()) for p in params]
        bad = [n for n, dt, a in arrays if dt in (ms.float32, ms.float16) and not np.isfinite(a).all()]
        refuse_non_finite(bad, state, path)
        extra = {STATE_PREFIX + k: v for k, v in state.items()}
        if self.classes:
            extra[CLASSES_KEY] = json.dumps(list(self.classes))

        def write(tmp):  # the student only: a teacher's parameters stay out of the student's checkpoints
            with quiet_mindspore_logger():
                ms.save_checkpoint(self.step, tmp, append_dict=extra, choice_func=distill.is_student_param)

        atomic_write(path, write, size_hint=int(sum(a.nbytes for _, _, a in arrays)))

    def load(self, path: str) -> dict:
        """Restore weights and optimizer state; returns the training position."""
        import mindspore as ms

        if not os.path.isfile(path):
            raise TrainingError(f"--resume {path}: no such checkpoint")
        try:
            params = ms.load_checkpoint(path)
        except Exception as err:
            raise TrainingError(f"--resume {path}: cannot read the checkpoint ({type(err).__name__}: {err})") from None
        state = {k[len(STATE_PREFIX):]: (v if isinstance(v, str) else v.asnumpy().item())
                 for k, v in [(k, params.pop(k)) for k in list(params) if k.startswith(STATE_PREFIX)]}
        for k in [k for k, v in params.items() if isinstance(v, str)]:  # the class list and other notes
            params.pop(k)
        if "epoch" not in state:
            raise TrainingError(f"--resume {path}: not a training checkpoint of this trainer (no training position); "
                                "to start from its weights use ckpt_path instead")
        params.pop("learning_rate", None)  # the schedule comes from the recipe
        own = {p.name for p in self.step.get_parameters() if distill.is_student_param(p.name)}
        own.discard("learning_rate")
        missing, unexpected = sorted(own - set(params)), sorted(set(params) - own)
        if missing or unexpected:
            raise TrainingError(mismatch_message(path, missing, unexpected, state.get("model"), self.cfg.model))
        ms.load_param_into_net(self.step, params, strict_load=True)
        return state


def param_groups(params, cfg: TrainConfig) -> list:
    """Explicit weight-decay groups for every ``weight_decay_filter`` (``zoo.train.common.decayed`` on the
    MindSpore names), so mindcv and MindSpore apply no rule of their own and PyTorch can match exactly."""
    decay = [p for p in params if decayed(p.name, p.ndim, cfg)]
    keep = [p for p in params if not decayed(p.name, p.ndim, cfg)]
    groups = [{"params": g, "weight_decay": wd} for g, wd in ((decay, cfg.weight_decay), (keep, 0.0)) if g]
    return groups + [{"order_params": list(params)}]


def build_optimizer(net, cfg: TrainConfig, lr_schedule):
    """mindcv's create_optimizer, given our parameter groups (its 'auto' filter passes groups through)."""
    from mindcv.optim import create_optimizer

    kwargs = {}
    if cfg.opt.lower() in ADAM_FAMILY:
        kwargs = dict(beta1=cfg.beta1, beta2=cfg.beta2)
    if cfg.opt.lower() in ("adam", "adamw"):
        kwargs["eps"] = cfg.eps  # mindcv's own eps argument only reaches RMSProp
    fixed_scale = cfg.loss_scale if cfg.loss_scale_type == "fixed" and not cfg.drop_overflow_update else 1.0
    params = param_groups(net.trainable_params(), cfg)
    logging.getLogger("mindcv.optim.optim_factory").setLevel(logging.ERROR)  # its 'auto' warning
    return create_optimizer(params, opt=cfg.opt, lr=lr_schedule, weight_decay=cfg.weight_decay, momentum=cfg.momentum,
                            nesterov=cfg.use_nesterov, weight_decay_filter="auto", loss_scale=fixed_scale, **kwargs)


def decayed_names(opt) -> set:
    """The parameters a built MindSpore optimizer decays (its own decay flags)."""
    return {p.name for p, flag in zip(opt.parameters, opt.decay_flags) if flag} if opt.exec_weight_decay else set()


def build_train_step(net, loss_fn, opt, cfg: TrainConfig):
    from mindspore import amp

    if cfg.loss_scale_type == "dynamic":
        manager = amp.DynamicLossScaleManager(cfg.loss_scale, scale_factor=2, scale_window=1000)
    else:
        manager = amp.FixedLossScaleManager(cfg.loss_scale, drop_overflow_update=cfg.drop_overflow_update)
    return amp.build_train_network(net, opt, loss_fn, level=cfg.amp_level, loss_scale_manager=manager)
