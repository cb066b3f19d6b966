"""What both training backends and the loop share, importing neither of them (a leaf of ``zoo.train``).

- ``Backend``: the protocol a framework backend implements (``zoo.train.ms.MindSporeBackend``,
  ``zoo.train.pt.PyTorchBackend``); the loop (``zoo.train.loop``) only calls these methods.
- ``decayed``: the weight-decay rule of every ``weight_decay_filter`` value, decided on MindSpore names,
  so both frameworks decay exactly the same parameters.
- ``launched_by_msrun`` / ``launched_by_torchrun`` / ``distributed_launch``: how the process was started.
- ``refuse_non_finite``: the check both backends run before writing a checkpoint.
"""
from __future__ import annotations

import os
from typing import Protocol, Tuple, runtime_checkable

import numpy as np

from zoo.errors import ConfigError, Diverged

EXIT_DIVERGED = 3  # exit status of a run stopped by a non-finite loss or non-finite weights

# weight_decay_filter values, and what each leaves undecayed (MindSpore parameter names)
WEIGHT_DECAY_FILTERS = {
    "disable": "decay every parameter",
    "auto": "MindSpore's own default: skip parameters whose name holds 'gamma' or 'beta' (norm scales and shifts)",
    "norm_and_bias": "mindcv's rule: skip names holding 'gamma', 'beta' or 'bias'",
    "1d_and_bias": "timm's rule: skip every 1-D parameter and every bias",
}


def decayed(name: str, ndim: int, rule) -> bool:
    """Whether weight decay applies to a parameter, by its MindSpore name and its number of dimensions.

    ``rule`` is a ``weight_decay_filter`` value or a config holding one. 'auto' is what MindSpore's
    ``nn.Optimizer`` does when it is given plain parameters (no groups): no decay for names containing
    'beta' or 'gamma'. The PyTorch backend maps its parameter names to MindSpore's before asking.
    """
    rule = getattr(rule, "weight_decay_filter", rule)
    if rule == "disable":
        return True
    if rule == "auto":
        return "beta" not in name and "gamma" not in name
    if rule == "norm_and_bias":
        return not any(s in name for s in ("beta", "gamma", "bias"))
    if rule == "1d_and_bias":
        return not (ndim <= 1 or name.endswith(".bias"))
    raise ConfigError(f"weight_decay_filter: {rule!r} is not one of {', '.join(WEIGHT_DECAY_FILTERS)}")


def launched_by_msrun() -> bool:
    """msrun starts a scheduler (MS_SCHED) and the workers (MS_WORKER), all running the training script;
    each must call ``init()`` (the scheduler's serves the cluster and ends the process when the workers finish)."""
    return os.environ.get("MS_ROLE") in ("MS_WORKER", "MS_SCHED") and int(os.environ.get("MS_WORKER_NUM", "1")) > 1


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 and "LOCAL_RANK" in os.environ


def distributed_launch() -> bool:
    """Launched by msrun (scheduler or worker) or torchrun with more than one process."""
    return launched_by_msrun() or launched_by_torchrun()


def describe_position(state: dict) -> str:
    """'the end of epoch 2' or 'epoch 3, step 5' for a checkpoint's training position (epochs done, step)."""
    epoch, step = int(state["epoch"]), int(state["step"])
    return f"the end of epoch {epoch}" if step == 0 else f"epoch {epoch + 1}, step {step}"


def refuse_non_finite(bad, state: dict, path: str) -> None:
    """The backends' check before saving: weights that became NaN/inf stop the run, the last good file stays."""
    if bad:
        raise Diverged(f"the weights became non-finite ({', '.join(bad[:3])}"
                       f"{', ...' if len(bad) > 3 else ''}) by {describe_position(state)}: stopping without saving "
                       f"{os.path.basename(path)}.")


def summarize_keys(keys, limit: int = 5) -> str:
    keys = list(keys)
    if not keys:
        return "none"
    return ", ".join(keys[:limit]) + (f", ... ({len(keys) - limit} more)" if len(keys) > limit else "")


def mismatch_message(path: str, missing, unexpected, saved_model=None, model=None) -> str:
    """A short, one-time description of a training checkpoint that does not fit (never every key)."""
    which = (f"it was saved by a run of {saved_model}, this run trains {model}; "
             if saved_model and model and saved_model != model else "")
    return (f"--resume {path}: the checkpoint does not match this model and optimizer ({which}{len(missing)} "
            f"missing: {summarize_keys(missing)}; {len(unexpected)} unexpected: {summarize_keys(unexpected)}). "
            "Resume with the recipe that saved it, or start from its weights with --ckpt_path")


@runtime_checkable
class Backend(Protocol):
    """One framework's side of the trainer: the model, loss, optimizer and train step, and its checkpoints."""

    framework: str  # 'ms' or 'pt'
    suffix: str  # checkpoint suffix: '.ckpt' or '.pth'
    rank: int
    world: int

    def describe(self) -> str: ...
    def build(self, schedule: list) -> None: ...
    def n_params(self) -> int: ...
    def set_train(self, mode: bool) -> None: ...
    def train_step(self, x: np.ndarray, y: np.ndarray, lr: float) -> Tuple[float, bool]: ...
    def logits(self, x: np.ndarray) -> np.ndarray: ...
    def allreduce(self, values: np.ndarray) -> np.ndarray: ...
    def reduce_bn(self) -> None: ...
    def save(self, path: str, state: dict) -> None: ...
    def load(self, path: str) -> dict: ...
    def finish(self) -> None: ...
