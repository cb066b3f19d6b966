"""Training configuration: mindcv's key names, one table of defaults, YAML recipes plus overrides.

``load_config(path, overrides)`` reads a recipe (flat YAML, as mindcv's configs are), applies
``--key value`` overrides, and checks every key and value before anything else happens: an unknown key
is an error that names it (and the closest known keys), a value of the wrong type an error that says
what was expected, a value outside its range (``KEYS[k].metadata['range']``, shown by ``--help-keys``)
an error that gives the range. Every float must be finite.
"""
from __future__ import annotations

import difflib
import math
import os
from dataclasses import MISSING, dataclass, field, fields
from typing import Any, Dict, List, Optional, Sequence

IMAGENET_MEAN = [123.675, 116.28, 103.53]  # mindcv's 0-255 convention
IMAGENET_STD = [58.395, 57.12, 57.375]


from zoo.errors import ConfigError  # noqa: E402,F401  (re-exported)


class Range:
    """A value's allowed range: ``lo``/``hi`` bounds (open or closed), or for a list, the bounds of each
    element, its length (``n``) and whether it must be ordered (``ordered``: a <= b)."""

    def __init__(self, lo=None, hi=None, lo_open=False, hi_open=False, n=None, ordered=False):
        self.lo, self.hi, self.lo_open, self.hi_open, self.n, self.ordered = lo, hi, lo_open, hi_open, n, ordered

    def text(self) -> str:
        lo = "" if self.lo is None else f"{'>' if self.lo_open else '>='} {self.lo}"
        hi = "" if self.hi is None else f"{'<' if self.hi_open else '<='} {self.hi}"
        both = " and ".join(x for x in (lo, hi) if x)
        if self.n or self.ordered:
            return (f"{self.n} numbers" if self.n else "numbers") + (f", each {both}" if both else "") + \
                (", the first <= the second" if self.ordered else "")
        return both

    def ok(self, v) -> bool:
        if isinstance(v, list):
            if self.n is not None and len(v) != self.n:
                return False
            if self.ordered and any(a > b for a, b in zip(v, v[1:])):
                return False
            return all(self.ok(x) for x in v)
        if isinstance(v, float) and not math.isfinite(v):
            return False
        if self.lo is not None and (v < self.lo or (self.lo_open and v == self.lo)):
            return False
        if self.hi is not None and (v > self.hi or (self.hi_open and v == self.hi)):
            return False
        return True


def _f(default, help: str, choices: Optional[Sequence] = None, range: Optional[Range] = None):
    meta = {"help": help, "choices": choices, "range": range}
    if isinstance(default, list):
        return field(default_factory=lambda d=default: list(d), metadata=meta)
    return field(default=default, metadata=meta)


POS = Range(1)  # a count: at least 1
NONNEG = Range(0)
PROB = Range(0, 1)
FRACTION = Range(0, 1, hi_open=True)
POSITIVE = Range(0, lo_open=True)
AREA_PAIR = Range(0, 1, lo_open=True, n=2, ordered=True)  # [min, max] fractions of the image
ASPECT_PAIR = Range(0, lo_open=True, n=2, ordered=True)


@dataclass
class TrainConfig:
    # system
    mode: int = _f(0, "MindSpore execution mode: 0 = GRAPH (default), 1 = PYNATIVE", (0, 1))
    device_target: str = _f("auto", "Ascend, GPU or CPU; auto (default): MindSpore's default device for the installed "
                            "build, as mindcv's train.py runs (PyTorch: GPU if CUDA is available, else CPU)",
                            ("auto", "Ascend", "GPU", "CPU"))
    distribute: bool = _f(False, "data parallel; set automatically when launched by msrun with more than one worker")
    seed: int = _f(42, "seed of initialisation, data order and augmentation", range=Range(0, 2 ** 32 - 1))
    log_interval: int = _f(10, "log a line every N steps", range=POS)
    framework: str = _f("ms", "ms (MindSpore; msrun for data parallel) or pt (PyTorch; torchrun, DDP)", ("ms", "pt"))
    # data
    dataset: str = _f("imagenet", "imagenet (class folders), cifar10, cifar100, svhn, tiny_imagenet or digits",
                      ("imagenet", "cifar10", "cifar100", "svhn", "tiny_imagenet", "digits"))
    data_dir: str = _f("./data", "dataset root")
    train_split: str = _f("train", "training split (a folder for imagenet-style datasets)")
    val_split: str = _f("val", "validation split")
    shuffle: bool = _f(True, "shuffle the training data each epoch")
    num_parallel_workers: int = _f(4, "data workers per device", range=POS)
    batch_size: int = _f(32, "batch size per device (the global batch is this times the number of ranks)", range=POS)
    drop_remainder: bool = _f(True, "drop the last incomplete training batch")
    val_while_train: bool = _f(True, "evaluate on the validation split during training")
    val_interval: int = _f(1, "evaluate every N epochs", range=POS)
    # augmentation (mindcv's create_transforms)
    image_resize: int = _f(224, "training / evaluation image size (the model must accept it)", range=Range(1, 8192))
    scale: List[float] = _f([0.08, 1.0], "RandomResizedCrop area range", range=AREA_PAIR)
    ratio: List[float] = _f([0.75, 1.333], "RandomResizedCrop aspect range", range=ASPECT_PAIR)
    hflip: float = _f(0.5, "horizontal flip probability", range=PROB)
    vflip: float = _f(0.0, "vertical flip probability", range=PROB)
    color_jitter: Optional[Any] = _f(None, "colour jitter strength (float or [b, c, s(, h)])")
    interpolation: str = _f("bilinear", "resize interpolation (pilcubic = PIL's bicubic)",
                            ("bilinear", "bicubic", "pilcubic", "nearest", "area"))
    auto_augment: Optional[str] = _f(None, "mindcv's (randaug-m9-mstd0.5-inc1, autoaug, trivialaugwide) or, in the "
                                     "small-image pipeline, DeepVoltaire's cifar10_policy, svhn_policy, "
                                     "imagenet_policy")
    re_prob: float = _f(0.0, "random erasing probability", range=PROB)
    re_scale: List[float] = _f([0.02, 0.33], "random erasing area range", range=AREA_PAIR)
    re_ratio: List[float] = _f([0.3, 3.3], "random erasing aspect range", range=ASPECT_PAIR)
    re_value: Any = _f(0, "random erasing fill value")
    re_max_attempts: int = _f(10, "random erasing attempts", range=POS)
    mean: List[float] = _f(IMAGENET_MEAN, "normalisation mean, 0-255 scale", range=Range(0, 255))
    std: List[float] = _f(IMAGENET_STD, "normalisation std, 0-255 scale", range=Range(0, lo_open=True))
    crop_pct: float = _f(0.875, "evaluation centre-crop fraction (resize to image_resize / crop_pct first)",
                         range=Range(0, 1, lo_open=True))
    # zoo-only: the small-image pipeline (zoo.data.augment; docs/training.md)
    crop_padding: Optional[int] = _f(None, "zoo: RandomCrop(image_resize, padding) + flip in the small-image pipeline; "
                                     "None: 4 on array datasets, RandomResizedCrop on image folders", range=NONNEG)
    epoch_passes: int = _f(1, "zoo: passes over the training set per epoch, a fresh permutation each (the GMM/SPT "
                           "references' repeated augmentation --ra 3; not mindcv's aug_repeats)", range=POS)
    mixup: float = _f(0.0, "mixup alpha (0 = off)", range=NONNEG)
    cutmix: float = _f(0.0, "cutmix alpha (0 = off)", range=NONNEG)
    cutmix_prob: float = _f(1.0, "probability that a batch is mixed (mindcv: Mixup prob; mixup vs cutmix switch 0.5)",
                            range=PROB)
    # model
    model: str = _f("", "a registered model name (`zoo list`)")
    num_classes: int = _f(1000, "number of classes", range=POS)
    in_channels: int = _f(3, "input channels", range=POS)
    drop_rate: Optional[float] = _f(None, "dropout before the classifier (None: the model's default)", range=FRACTION)
    drop_path_rate: Optional[float] = _f(None, "stochastic depth rate (None: the model's default)", range=FRACTION)
    ckpt_path: str = _f("", "initial weights: any checkpoint `zoo convert` reads")
    pretrained: bool = _f(False, "not supported: the zoo downloads nothing; use ckpt_path")
    # checkpoints
    ckpt_save_dir: str = _f("./runs/train", "output folder: checkpoints, logs, result table")
    keep_checkpoint_max: int = _f(5, "per-epoch checkpoints to keep (the best and last are always kept)", range=NONNEG)
    ckpt_save_interval: int = _f(1, "save a checkpoint every N epochs", range=POS)
    ckpt_save_steps: int = _f(0, "also refresh last.ckpt every N steps (0 = at epoch ends only)", range=NONNEG)
    ckpt_save_all_ranks: bool = _f(False, "every rank saves its own last.ckpt under rank<N>/ (debugging)")
    resume: str = _f("", "continue a run: a checkpoint path, or 'auto' for ckpt_save_dir/last.ckpt")
    epoch_size: int = _f(90, "number of epochs", range=POS)
    # optimizer (mindcv's create_optimizer)
    opt: str = _f("momentum", "optimizer", ("sgd", "momentum", "nesterov", "adam", "adamw", "lion", "nadam", "adan",
                                          "rmsprop", "adagrad", "lamb"))
    momentum: float = _f(0.9, "momentum", range=Range(0, 1, hi_open=True))
    weight_decay: float = _f(1e-4, "weight decay", range=NONNEG)
    use_nesterov: bool = _f(False, "Nesterov momentum")
    weight_decay_filter: str = _f("disable", "disable (decay all), norm_and_bias (mindcv: skip gamma/beta/bias), "
                                  "1d_and_bias (timm: skip every 1-D parameter and bias)",
                                  ("disable", "norm_and_bias", "1d_and_bias", "auto"))
    eps: float = _f(1e-8, "Adam-family epsilon (mindcv's default 1e-10 differs from PyTorch's 1e-8)", range=POSITIVE)
    beta1: float = _f(0.9, "Adam-family beta1", range=FRACTION)
    beta2: float = _f(0.999, "Adam-family beta2", range=FRACTION)
    # schedule (mindcv's create_scheduler)
    scheduler: str = _f("constant", "learning-rate schedule", (
        "constant", "cosine_decay", "warmup_cosine_decay", "step_decay", "exponential_decay", "polynomial_decay",
        "multi_step_decay", "one_cycle", "cyclic"))
    lr: float = _f(0.1, "base learning rate (not scaled by batch size)", range=POSITIVE)
    min_lr: float = _f(1e-6, "minimum lr for cosine schedules", range=NONNEG)
    warmup_epochs: int = _f(0, "linear warmup epochs", range=NONNEG)
    warmup_factor: float = _f(0.0, "warmup starts at lr * warmup_factor", range=PROB)
    decay_epochs: int = _f(30, "step_decay period / cosine decay length", range=POS)
    decay_rate: float = _f(0.1, "step / exponential decay factor", range=POSITIVE)
    multi_step_decay_milestones: Optional[List[int]] = _f(None, "epochs at which multi_step_decay applies decay_rate",
                                                         range=Range(1, ordered=True))
    lr_epoch_stair: bool = _f(False, "change the lr once per epoch instead of every step")
    num_cycles: int = _f(1, "cosine cycles", range=POS)
    cycle_decay: float = _f(1.0, "lr decay between cycles", range=POSITIVE)
    # loss
    loss: str = _f("CE", "CE or BCE", ("CE", "BCE", "ce", "bce"))
    label_smoothing: float = _f(0.0, "label smoothing", range=FRACTION)
    # precision
    amp_level: str = _f("O0", "O0 (fp32), O1, O2 (fp16 but BatchNorm/LayerNorm), O3 (all fp16)",
                        ("O0", "O1", "O2", "O3"))
    loss_scale_type: str = _f("fixed", "fixed or dynamic (dynamic needs drop_overflow_update)", ("fixed", "dynamic"))
    loss_scale: float = _f(1.0, "(initial) loss scale", range=POSITIVE)
    drop_overflow_update: bool = _f(False, "skip the update of a step whose gradients overflow")
    # distillation (zoo.train.distill; docs/distillation.md)
    teacher_model: str = _f("", "distil from this registered model (the teacher; empty = no distillation)")
    teacher_ckpt_path: str = _f("", "the teacher's weights: any checkpoint `zoo convert` reads (either framework)")
    teacher_kwargs: Optional[Any] = _f(None, "teacher constructor arguments, e.g. {use_dim_bias: true}")
    at_beta: float = _f(0.0, "attention-transfer weight (the reference's beta: 1000; 0 = no AT)")
    at_mode: str = _f("code", "AT loss: code (the reference's utils.at_loss) or paper (Eq. 2)", ("code", "paper"))
    at_groups: Optional[Any] = _f(None, "stage outputs for AT: [0, 1, 2] or [[student, teacher], ...]; default all")
    kd_alpha: float = _f(0.0, "knowledge-distillation weight (the reference's alpha: 0.9; 0 = CE only)")
    kd_temperature: float = _f(4.0, "KD temperature T")  # ranges: zoo.train.distill.check
    fresh_optimizer_at_milestones: bool = _f(False, "reset the optimizer state where the lr drops (the reference "
                                             "creates a new SGD at each milestone)")
    # diagnostics
    record_samples: bool = _f(False, "write each rank's sample indices per epoch to ckpt_save_dir (debugging)")

    def global_batch(self, world: int) -> int:
        return self.batch_size * world


KEYS = {f.name: f for f in fields(TrainConfig)}


def _coerce(key: str, value: Any):
    """Check (and, for strings from the command line, convert) a value for ``key``."""
    f = KEYS[key]
    optional = f.type.startswith("Optional[")
    typ = f.type[len("Optional["):-1] if optional else f.type
    choices = f.metadata.get("choices")
    if isinstance(value, str) and typ not in ("str", "Any"):
        import yaml
        try:
            value = yaml.safe_load(value)
        except yaml.YAMLError:
            raise ConfigError(f"{key}: cannot read {value!r}") from None
    if value is None:
        if optional or typ == "Any":
            return None
        raise ConfigError(f"{key}: a value is required ({f.metadata['help']})")
    ok = {"int": lambda v: isinstance(v, int) and not isinstance(v, bool),
          "float": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
          "bool": lambda v: isinstance(v, bool),
          "str": lambda v: isinstance(v, str),
          "List[float]": lambda v: isinstance(v, (list, tuple)) and all(isinstance(x, (int, float)) for x in v),
          "List[int]": lambda v: isinstance(v, (list, tuple)) and all(isinstance(x, int) for x in v),
          "Any": lambda v: True}.get(typ, lambda v: True)
    if typ == "float" and isinstance(value, str):  # YAML 1.1 reads "1e-3" as a string
        try:
            value = float(value)
        except ValueError:
            pass
    if not ok(value):
        raise ConfigError(f"{key}: expected {typ}, got {value!r} ({f.metadata['help']})")
    if typ == "float":
        value = float(value)
    if isinstance(value, tuple):
        value = list(value)
    if choices and value not in choices:
        raise ConfigError(f"{key}: {value!r} is not one of {', '.join(map(str, choices))}")
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{key}: {value!r} is not a finite number ({f.metadata['help']})")
    rng = f.metadata.get("range")
    if rng is not None and not rng.ok(value):
        raise ConfigError(f"{key}: {value!r} is out of range: expected {rng.text()} ({f.metadata['help']})")
    return value


def _unknown(key: str) -> ConfigError:
    close = difflib.get_close_matches(key, KEYS, n=3, cutoff=0.6)
    return ConfigError(f"unknown config key {key!r}" + (f" (did you mean {', '.join(close)}?)" if close else "") +
                       "; `zoo train --help-keys` lists them all")


def load_config(path: Optional[str] = None, overrides: Optional[Dict[str, Any]] = None) -> TrainConfig:
    """A checked TrainConfig from a YAML recipe and ``{key: value}`` overrides (strings are parsed)."""
    values: Dict[str, Any] = {}
    if path:
        import yaml

        if not os.path.isfile(path):
            raise ConfigError(f"{path}: recipe not found")
        try:
            with open(path) as f:
                data = yaml.safe_load(f) or {}
        except yaml.YAMLError as err:
            raise ConfigError(f"{path}: not valid YAML ({err})") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: expected a mapping of keys to values")
        for k, v in data.items():
            if k not in KEYS:
                raise ConfigError(f"{path}: " + str(_unknown(k)))
            values[k] = _coerce(k, v)
    for k, v in (overrides or {}).items():
        if k not in KEYS:
            raise _unknown(k)
        values[k] = _coerce(k, v)
    cfg = TrainConfig(**values)
    if not cfg.model:
        raise ConfigError("model: no model given (set `model:` in the recipe or pass --model NAME)")
    if cfg.pretrained:
        raise ConfigError("pretrained: the zoo downloads no weights; pass ckpt_path=<file> instead")
    if cfg.loss_scale_type == "dynamic" and not cfg.drop_overflow_update:
        raise ConfigError("loss_scale_type: dynamic loss scaling needs drop_overflow_update: True")
    if not cfg.ckpt_save_dir.strip():
        raise ConfigError("ckpt_save_dir: empty; give the output folder (e.g. --ckpt_save_dir ./runs/my_run)")
    if cfg.dataset != "digits" and not cfg.data_dir.strip():
        raise ConfigError("data_dir: empty; give the dataset root (--data_dir DIR)")
    if len(cfg.mean) != cfg.in_channels or len(cfg.std) != cfg.in_channels:
        raise ConfigError(f"mean, std: one value per input channel ({cfg.in_channels}), got {len(cfg.mean)} and "
                          f"{len(cfg.std)}")
    if cfg.ckpt_path and not os.path.isfile(cfg.ckpt_path):
        raise ConfigError(f"ckpt_path: {cfg.ckpt_path}: no such file")
    if cfg.resume not in ("", "auto") and not os.path.isfile(cfg.resume):
        raise ConfigError(f"resume: {cfg.resume}: no such checkpoint (use --resume auto to continue "
                          "ckpt_save_dir's last checkpoint)")
    from zoo.data.augment import check_config

    check_config(cfg)  # the small-image pipeline's keys
    return cfg


def parse_overrides(args: Sequence[str]) -> Dict[str, str]:
    """``['--lr', '0.1', '--epoch_size=3']`` -> ``{'lr': '0.1', 'epoch_size': '3'}``."""
    out, i = {}, 0
    args = list(args)
    while i < len(args):
        a = args[i]
        if not a.startswith("--"):
            raise ConfigError(f"unexpected argument {a!r}; overrides look like --key value")
        key = a[2:].replace("-", "_")
        if "=" in key:
            key, value = key.split("=", 1)
        elif i + 1 < len(args) and not args[i + 1].startswith("--"):
            value, i = args[i + 1], i + 1
        else:  # a bare flag means True
            value = "true"
        if key not in KEYS:
            raise _unknown(key)
        out[key] = value
        i += 1
    return out


def keys_help() -> str:
    lines = []
    for f in fields(TrainConfig):
        default = f.default if f.default_factory is MISSING else f.default_factory()
        rng = f.metadata.get("range")
        lines.append(f"  {f.name:<22} {str(default):<22} {f.metadata['help']}" + (f" [{rng.text()}]" if rng else ""))
    return "\n".join(lines)


def to_dict(cfg: TrainConfig) -> dict:
    return {f.name: getattr(cfg, f.name) for f in fields(TrainConfig)}
