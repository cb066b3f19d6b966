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
from zoo.train.common import decayed, refuse_non_finite

SUPPORTED_OPT = ("sgd", "momentum", "nesterov", "adam", "adamw")


class PyTorchBackend:
    framework, suffix = "pt", ".pth"

    def __init__(self, cfg: TrainConfig):
        import torch

        self.cfg = cfg
        if cfg.opt.lower() not in SUPPORTED_OPT:
            raise TrainingError(f"opt: the PyTorch trainer supports {', '.join(SUPPORTED_OPT)}, not {cfg.opt!r}")
        if cfg.loss.upper() != "CE":
            raise TrainingError(f"loss: the PyTorch trainer supports CE, not {cfg.loss!r}")
        self.rank, self.world, self.ddp = 0, 1, False
        local = int(os.environ.get("LOCAL_RANK", "0"))
        if cfg.device_target == "auto":
            cfg.device_target = "GPU" if torch.cuda.is_available() else "CPU"
        if cfg.device_target == "GPU":
            if not torch.cuda.is_available():
                raise TrainingError("device_target: GPU was asked for but torch sees no CUDA device")
            self.device = torch.device("cuda", local)
            torch.cuda.set_device(self.device)
            torch.backends.cuda.matmul.allow_tf32 = False  # parity with the float32 MindSpore run
            torch.backends.cudnn.allow_tf32 = False
        elif cfg.device_target == "CPU":
            self.device = torch.device("cpu")
        else:
            raise TrainingError("device_target: the PyTorch trainer runs on CPU or GPU")
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
        from zoo.convert.names import name_map

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
        ms_names = name_map(self.model)
        decay, keep = [], []
        for name, p in self.model.named_parameters():
            (decay if decayed(ms_names.get(name, name), p.ndim, cfg) else keep).append(p)
        groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": keep, "weight_decay": 0.0}]
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
        atomic_write(path, lambda tmp: torch.save(
            {"state_dict": sd, "optimizer": self.opt.state_dict(), "train_state": dict(state),
             "scaler": self.scaler.state_dict() if self.scaler is not None else None}, tmp))

    def load(self, path: str) -> dict:
        import torch

        if not os.path.isfile(path):
            raise TrainingError(f"--resume {path}: no such checkpoint")
        try:
            ckpt = torch.load(path, map_location=self.device, weights_only=True)
        except Exception as err:
            raise TrainingError(f"--resume {path}: cannot read the checkpoint ({type(err).__name__}: {err})") from None
        if not isinstance(ckpt, dict) or "train_state" not in ckpt or "optimizer" not in ckpt:
            raise TrainingError(f"--resume {path}: not a training checkpoint of this trainer (no training position); "
                                "to start from its weights use ckpt_path instead")
        try:
            self.model.load_state_dict(ckpt["state_dict"], strict=True)
            self.opt.load_state_dict(ckpt["optimizer"])
        except (RuntimeError, ValueError, KeyError) as err:
            raise TrainingError(f"--resume {path}: the checkpoint does not match this model and optimizer ({err}); "
                                "was it saved with another recipe?") from None
        if self.scaler is not None and ckpt.get("scaler"):
            self.scaler.load_state_dict(ckpt["scaler"])
        return dict(ckpt["train_state"])
