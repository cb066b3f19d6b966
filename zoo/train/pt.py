"""The PyTorch backend of the trainer (``zoo.train.loop``): the same recipes, batches and updates as MindSpore.

    python tools/train.py -c RECIPE --framework pt [--device_target GPU]
    torchrun --nproc_per_node=N tools/train.py -c RECIPE --framework pt      (DDP: gloo on CPU, nccl on CUDA)

The optimizers are the PyTorch counterparts of what mindcv's ``create_optimizer`` builds, with the same
update rules: ``momentum``/``sgd``/``nesterov`` -> ``torch.optim.SGD`` (weight decay added to the gradient,
as MindSpore's optimizers do), ``adam`` -> ``Adam``, ``adamw`` -> ``AdamW`` (mindcv's AdamW applies
``p -= lr * (m_hat / (eps + sqrt(v_hat)) + wd * p)``, which is torch's decoupled decay), with the same
weight-decay groups (decided on the MindSpore names) and the same per-step learning rates. DDP keeps
BatchNorm statistics local (``broadcast_buffers=False``) and they are averaged over ranks at each
epoch end, as the MindSpore trainer does. Checkpoints are ``.pth`` files:
``{'state_dict', 'optimizer', 'train_state'}``, which ``zoo convert`` reads.
"""
from __future__ import annotations

import os

import numpy as np

from zoo.train.config import TrainConfig
from zoo.errors import TrainingError
from zoo.files import atomic_write
from zoo.train import distill
from zoo.train.common import decayed, mismatch_message, refuse_non_finite

SUPPORTED_OPT = ("sgd", "momentum", "nesterov", "adam", "adamw")


def check(cfg: TrainConfig) -> None:
    """What the PyTorch trainer cannot run, said before anything is built (``device_target: auto`` becomes
    GPU if torch sees CUDA, else CPU)."""
    from zoo.errors import ConfigError

    if cfg.device_target == "auto":
        import torch

        cfg.device_target = "GPU" if torch.cuda.is_available() else "CPU"
    if cfg.opt.lower() not in SUPPORTED_OPT:
        raise ConfigError(f"opt: the PyTorch trainer supports {', '.join(SUPPORTED_OPT)}, not {cfg.opt!r}")
    if cfg.loss.upper() != "CE":
        raise ConfigError(f"loss: the PyTorch trainer supports CE, not {cfg.loss!r}")
    if cfg.device_target not in ("CPU", "GPU"):
        raise ConfigError(f"device_target: the PyTorch trainer runs on CPU or GPU, not {cfg.device_target}")


def param_groups(model, cfg: TrainConfig) -> list:
    """Weight-decay groups decided on the MindSpore names (``zoo.train.common.decayed``), as the MindSpore
    backend decides them: both frameworks decay exactly the same parameters for every filter."""
    from zoo.convert.names import name_map

    ms_names = name_map(model)
    decay, keep = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:  # a frozen tensor (MindSpore: not a trainable parameter) is not optimized
            continue
        (decay if decayed(ms_names.get(name, name), p.ndim, cfg) else keep).append(p)
    return [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": keep, "weight_decay": 0.0}]


def decayed_names(model, opt) -> set:
    """The parameters (PyTorch names) a built optimizer decays."""
    ids = {id(p) for g in opt.param_groups if g["weight_decay"] > 0 for p in g["params"]}
    return {n for n, p in model.named_parameters() if id(p) in ids}


class PyTorchBackend:
    framework, suffix = "pt", ".pth"

    def __init__(self, cfg: TrainConfig):
        import torch

        self.cfg = cfg
        self.classes = None  # the label names, stored in every checkpoint (set by the loop)
        check(cfg)
        self.rank, self.world, self.ddp = 0, 1, False
        local = int(os.environ.get("LOCAL_RANK", "0"))
        if cfg.device_target == "GPU":
            if not torch.cuda.is_available():
                raise TrainingError("device_target: GPU was asked for but torch sees no CUDA device")
            self.device = torch.device("cuda", local)
            torch.cuda.set_device(self.device)
            torch.backends.cuda.matmul.allow_tf32 = False  # parity with the float32 MindSpore run
            torch.backends.cudnn.allow_tf32 = False
        else:
            self.device = torch.device("cpu")
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            import torch.distributed as dist

            dist.init_process_group("nccl" if self.device.type == "cuda" else "gloo")
            self.rank, self.world, self.ddp = dist.get_rank(), dist.get_world_size(), True
        torch.manual_seed(cfg.seed)
        np.random.seed(cfg.seed)
        if cfg.amp_level != "O0":
            self.amp = self.device.type == "cuda"
        else:
            self.amp = False

    def describe(self) -> str:
        return f"PyTorch {'DDP ' if self.ddp else ''}{self.device}, amp {'fp16 autocast' if self.amp else 'off (fp32)'}"

    # --- building --------------------------------------------------------------------------

    def build(self, schedule: list) -> None:
        import torch

        import zoo

        cfg = self.cfg
        model = zoo.create_model(cfg.model, "pt", num_classes=cfg.num_classes, checkpoint=cfg.ckpt_path or None,
                                 in_chans=cfg.in_channels, drop_rate=cfg.drop_rate, drop_path_rate=cfg.drop_path_rate)
        self.model = model.to(self.device)
        self.wrapped, self.distiller = self.model, None
        if distill.is_distilling(cfg):  # a frozen teacher beside the student; the student returns its stages too
            plan = distill.make_plan(cfg)
            distill.announce(plan, cfg, self.rank)
            self.distiller = distill.PtDistiller(plan, self.device)
            self.wrapped = self.distiller.student_forward(self.model)
        if self.ddp:
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.device.index] if self.device.type == "cuda" else None
            self.wrapped = DistributedDataParallel(self.wrapped, device_ids=ids, broadcast_buffers=False)
        self.criterion = torch.nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
        groups = param_groups(self.model, cfg)
        lr0, opt = schedule[0], cfg.opt.lower()
        if opt in ("sgd", "momentum", "nesterov"):
            self.opt = torch.optim.SGD(groups, lr=lr0, momentum=cfg.momentum,
                                       nesterov=cfg.use_nesterov or opt == "nesterov")
        elif opt == "adam":
            self.opt = torch.optim.Adam(groups, lr=lr0, betas=(cfg.beta1, cfg.beta2), eps=cfg.eps)
        else:
            self.opt = torch.optim.AdamW(groups, lr=lr0, betas=(cfg.beta1, cfg.beta2), eps=cfg.eps)
        self.scaler = torch.amp.GradScaler("cuda", init_scale=cfg.loss_scale) if self.amp else None

    def n_params(self) -> int:
        return sum(p.numel() for p in self.model.parameters())

    # --- running ---------------------------------------------------------------------------

    def set_train(self, mode: bool) -> None:
        self.model.train(mode)

    def train_step(self, x, y, lr: float):
        import torch

        for g in self.opt.param_groups:
            g["lr"] = lr
        x = torch.from_numpy(np.ascontiguousarray(x)).to(self.device)
        y = torch.from_numpy(np.ascontiguousarray(y)).to(self.device)
        if y.dtype != torch.int64 and y.ndim == 1:
            y = y.long()
        self.opt.zero_grad(set_to_none=True)
        with torch.autocast(self.device.type, dtype=torch.float16, enabled=self.amp):
            if self.distiller is not None:
                loss = self.distiller.loss(self.wrapped, x, y)
            else:
                loss = self.criterion(self.wrapped(x), y)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.step(self.opt)
            self.scaler.update()
        else:
            loss.backward()
            self.opt.step()
        return float(loss.detach()), False

    def loss_terms(self):
        """The last step's loss terms (distillation), else None."""
        return None if self.distiller is None else self.distiller.terms

    def reset_optimizer_state(self) -> None:
        """A fresh optimizer's state (momentum buffers dropped)."""
        self.opt.state.clear()

    def logits(self, x) -> np.ndarray:
        import torch

        with torch.no_grad():
            return self.model(torch.from_numpy(np.ascontiguousarray(x)).to(self.device)).float().cpu().numpy()

    def allreduce(self, values: np.ndarray) -> np.ndarray:
        if self.world == 1:
            return np.asarray(values, np.float64)
        import torch
        import torch.distributed as dist

        t = torch.as_tensor(np.asarray(values, np.float64), device=self.device)
        dist.all_reduce(t)
        return t.cpu().numpy()

    def reduce_bn(self) -> None:
        """Average BatchNorm running statistics over ranks (as the MindSpore trainer does)."""
        if self.world == 1:
            return
        import torch
        import torch.distributed as dist

        with torch.no_grad():
            for m in self.model.modules():
                if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and m.track_running_stats:
                    for buf in (m.running_mean, m.running_var):
                        dist.all_reduce(buf)
                        buf.div_(self.world)

    def finish(self) -> None:
        if self.ddp:
            import torch.distributed as dist

            dist.barrier()
            dist.destroy_process_group()

    # --- checkpoints -----------------------------------------------------------------------

    def save(self, path: str, state: dict) -> None:
        import torch

        sd = self.model.state_dict()
        bad = [k for k, v in sd.items() if v.is_floating_point() and not torch.isfinite(v).all()]
        refuse_non_finite(bad, state, path)
        ckpt = {"state_dict": sd, "optimizer": self.opt.state_dict(), "train_state": dict(state),
                "scaler": self.scaler.state_dict() if self.scaler is not None else None}
        if self.classes:
            ckpt["classes"] = list(self.classes)
        size = sum(v.numel() * v.element_size() for v in sd.values()) * 3  # weights + two optimizer moments at most
        atomic_write(path, lambda tmp: torch.save(ckpt, tmp), size_hint=size)

    def load(self, path: str) -> dict:
        from zoo.convert.io import load_torch
        from zoo.errors import ConversionError

        if not os.path.isfile(path):
            raise TrainingError(f"--resume {path}: no such checkpoint")
        try:
            ckpt = load_torch(path, map_location=self.device)
        except ConversionError as err:  # the zoo's own words (not torch's advice to drop weights_only)
            raise TrainingError(f"--resume {err.message}") from None
        if not isinstance(ckpt, dict) or "train_state" not in ckpt or "optimizer" not in ckpt:
            raise TrainingError(f"--resume {path}: not a training checkpoint of this trainer (no training position); "
                                "to start from its weights use ckpt_path instead")
        sd, own = ckpt.get("state_dict") or {}, self.model.state_dict()
        missing = sorted(k for k in own if k not in sd)
        unexpected = sorted(k for k in sd if k not in own)
        shapes = [k for k in own if k in sd and tuple(sd[k].shape) != tuple(own[k].shape)]
        saved_model = dict(ckpt["train_state"]).get("model")
        if missing or unexpected or shapes:
            raise TrainingError(mismatch_message(path, missing + shapes, unexpected, saved_model, self.cfg.model))
        try:
            self.model.load_state_dict(sd, strict=True)
            self.opt.load_state_dict(ckpt["optimizer"])
        except (RuntimeError, ValueError, KeyError) as err:
            first = str(err).strip().splitlines()[0][:200] if str(err).strip() else type(err).__name__
            raise TrainingError(f"--resume {path}: the optimizer state does not match this recipe's optimizer "
                                f"({first}); resume with the recipe that saved it") from None
        if self.scaler is not None and ckpt.get("scaler"):
            self.scaler.load_state_dict(ckpt["scaler"])
        return dict(ckpt["train_state"])
