"""Checkpoint files: reading any supported format into named numpy arrays, and atomic writing.

Reads ``.pth/.pt/.pth.tar/.bin`` with ``torch.load(weights_only=True)`` (a pickle that carries code
is refused, never executed), ``.safetensors``, and MindSpore ``.ckpt``. Training wrappers are
removed (a ``state_dict``/``model``/``params``... entry, a ``module.`` prefix), and optimizer state
is dropped with a note. Writes go to a temporary file next to the destination and are renamed into
place only once complete, so a failure never leaves a half-written destination.
"""
from __future__ import annotations

import os
import pickle
import tempfile
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Dict, List, Optional

import numpy as np


from zoo.errors import ConversionError  # noqa: E402,F401  (re-exported: zoo.convert.ConversionError)


TORCH_SUFFIXES = (".pth.tar", ".pth", ".pt", ".pt7", ".bin", ".tar")  # .pt7: attention-transfer's model.pt7
MS_SUFFIXES = (".ckpt",)
SAFETENSORS_SUFFIXES = (".safetensors",)
SUPPORTED = ".pth, .pth.tar, .pt, .pt7, .bin, .safetensors, .ckpt"

# Wrapper keys that hold the weights, in the order they are tried (timm, the TA and VAN training
# scripts: state_dict; AT: params; the GMM repo's main.py: model_state_dict; others: model / module / net).
WEIGHT_KEYS = ("state_dict", "model", "params", "module", "net", "model_state", "model_state_dict", "weights")

# MindSpore optimizer / training-loop state saved next to the weights (mindcv, Model.train).
# mindcv's optimizers add lion_m/nadam_m/nadam_v/mu_schedule/prev_gradient, MindSpore's RMSProp
# moment/mean_square, SGD stat/accum, Lamb lamb_m/lamb_v; mindcv's TrainStep counts EMA updates in
# 'updates', and gradient accumulation keeps grad_accumulation/accu_grads copies.
_OPT_PREFIXES = ("moments.", "adam_m.", "adam_v.", "accum.", "mean_square.", "mean_grad.", "moment.", "moment1.",
                 "moment2.", "moment3.", "vhat.", "exp_avg.", "exp_avg_sq.", "ema.", "ema_", "optimizer.", "opt.",
                 "train_state.", "lion_m.", "nadam_m.", "nadam_v.", "lamb_m.", "lamb_v.", "prev_gradient.", "stat.",
                 "accu_grads.", "grad_accumulation.", "accum_update.")
_OPT_NAMES = {"global_step", "learning_rate", "momentum", "beta1_power", "beta2_power", "scale_sense",
              "current_iterator_step", "last_overflow_iterator_step", "epoch_num", "step_num", "loss_scale",
              "weight_decay", "lr", "epoch", "step", "updates", "mu_schedule", "accumulation_step"}


@dataclass
class Checkpoint:
    """Named arrays read from a file, plus what was removed on the way."""

    tensors: "OrderedDict[str, np.ndarray]"
    path: str
    fmt: str  # 'torch', 'safetensors' or 'ms'
    notes: List[str] = field(default_factory=list)


def file_format(path: str) -> str:
    low = path.lower()
    if low.endswith(SAFETENSORS_SUFFIXES):
        return "safetensors"
    if low.endswith(MS_SUFFIXES):
        return "ms"
    if low.endswith(TORCH_SUFFIXES):
        return "torch"
    raise ConversionError(f"{path}: unsupported file type; supported: {SUPPORTED}")


def is_optimizer_key(name: str) -> bool:
    return name in _OPT_NAMES or name.startswith(_OPT_PREFIXES)


def read_checkpoint(path: str) -> Checkpoint:
    """Read a checkpoint of any supported format into numpy arrays (weights only)."""
    path = os.fspath(path)
    fmt = file_format(path)
    if not os.path.isfile(path):
        raise ConversionError(f"{path}: no such file")
    if os.path.getsize(path) == 0:
        raise ConversionError(f"{path}: the file is empty")
    notes: List[str] = []
    reader = {"torch": _read_torch, "safetensors": _read_safetensors, "ms": _read_ms}[fmt]
    tensors = reader(path, notes)
    tensors = _strip_prefix(tensors, "module.", notes)
    dropped = [k for k in tensors if is_optimizer_key(k)]
    if dropped:
        for k in dropped:
            del tensors[k]
        shown = ", ".join(dropped[:4]) + (", ..." if len(dropped) > 4 else "")
        notes.append(f"dropped {len(dropped)} optimizer/training-state entries ({shown})")
    if not tensors:
        raise ConversionError(f"{path}: no weight tensors found in the file")
    return Checkpoint(tensors, path, fmt, notes)


def _corrupt(path: str, err: Exception) -> ConversionError:
    return ConversionError(f"{path}: cannot read the checkpoint; the file is truncated or corrupt ({type(err).__name__}: "
                           f"{str(err).splitlines()[0] if str(err) else ''})")


def _read_torch(path: str, notes: List[str]):
    import argparse

    import torch

    try:
        # timm's CheckpointSaver (the VAN training script's) stores the run's argparse.Namespace under
        # 'args'; a Namespace only holds attributes, so it is allowed next to tensors and containers
        with torch.serialization.safe_globals([argparse.Namespace]):
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        if "weights_only" in str(err) or "Unsupported" in str(err) or "global" in str(err).lower():
            raise ConversionError(
                f"{path}: refused to load: the file holds Python objects other than tensors and plain containers, "
                "and unpickling them could run code. Loading uses torch.load(weights_only=True). If you trust the "
                "file, load it yourself and re-save only its state_dict.") from None
        raise _corrupt(path, err) from None
    except (RuntimeError, EOFError, OSError, ValueError, KeyError, AttributeError) as err:
        raise _corrupt(path, err) from None
    return _flatten_weights(obj, path, notes)


def _flatten_weights(obj, path: str, notes: List[str]):
    """Find the weights in a loaded object: a flat name->tensor dict, possibly inside a wrapper."""
    import torch

    def is_weights(d):
        return isinstance(d, dict) and d and all(isinstance(v, (torch.Tensor, np.ndarray)) for v in d.values())

    if not isinstance(obj, dict):
        raise ConversionError(f"{path}: expected a dict of tensors (a state_dict), found {type(obj).__name__}")
    if not is_weights(obj):
        for key in WEIGHT_KEYS:
            if is_weights(obj.get(key)):
                others = [k for k in obj if k != key]
                weights = obj[key]
                if key == "params" and is_weights(obj.get("stats")):  # attention-transfer before May 2018
                    weights = {**weights, **obj["stats"]}
                    others.remove("stats")
                    notes.append("merged the 'stats' entry (BatchNorm running statistics) into the weights")
                notes.append(f"took the weights from the '{key}' entry" +
                             (f"; ignored {', '.join(map(str, others))}" if others else ""))
                obj = weights
                break
        else:
            # a dict that mixes tensors with scalars (e.g. timm's 'version'); keep the tensors
            tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
            if not tensors:
                raise ConversionError(f"{path}: no weights found; top-level keys: {', '.join(map(str, list(obj)[:10]))}; "
                                      f"expected a state_dict or a wrapper with one of {', '.join(WEIGHT_KEYS)}")
            ignored = [k for k in obj if k not in tensors]
            notes.append(f"ignored non-tensor entries: {', '.join(map(str, ignored[:6]))}")
            obj = tensors
    out, widened = OrderedDict(), 0
    for k, v in obj.items():
        if isinstance(v, torch.Tensor):
            if v.dtype == torch.bfloat16:  # numpy has no bfloat16
                v, widened = v.float(), widened + 1
            v = v.detach().cpu().contiguous().numpy()
        out[str(k)] = np.asarray(v)
    if widened:
        notes.append(f"widened {widened} bfloat16 tensors to float32")
    return out


def _read_safetensors(path: str, notes: List[str]):
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    try:
        return OrderedDict(load_file(path))
    except (SafetensorError, OSError, ValueError) as err:
        raise _corrupt(path, err) from None
    except Exception as err:  # bfloat16 and friends have no numpy dtype: read through torch
        if "bf16" not in str(err).lower() and "dtype" not in str(err).lower():
            raise _corrupt(path, err) from None
        from safetensors.torch import load_file as load_torch
        return _flatten_weights(load_torch(path), path, notes)


def _read_ms(path: str, notes: List[str]):
    import mindspore as ms

    try:
        params = ms.load_checkpoint(path)
    except Exception as err:  # MindSpore raises ValueError/RuntimeError for bad files
        raise _corrupt(path, err) from None
    out = OrderedDict()
    for k, p in params.items():
        out[k] = p.asnumpy() if hasattr(p, "asnumpy") else np.asarray(p)
    return out


def _strip_prefix(tensors, prefix: str, notes: List[str]):
    if tensors and all(k.startswith(prefix) for k in tensors):
        notes.append(f"removed the '{prefix}' prefix")
        return OrderedDict((k[len(prefix):], v) for k, v in tensors.items())
    return tensors


# --- writing ----------------------------------------------------------------------------------

def check_destination(dst: str, force: bool) -> None:
    """Fail early (before any work) if ``dst`` cannot or must not be written."""
    dst = os.fspath(dst)
    if os.path.isdir(dst):
        raise ConversionError(f"{dst}: is a directory; give a file name")
    if os.path.exists(dst) and not force:
        raise ConversionError(f"{dst}: already exists; pass --force to overwrite it")
    parent = os.path.dirname(os.path.abspath(dst))
    if not os.path.isdir(parent):
        raise ConversionError(f"{dst}: the directory {parent} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ConversionError(f"{dst}: the directory {parent} is not writable")


def write_checkpoint(tensors: Dict[str, np.ndarray], dst: str, framework: str, force: bool = False,
                     metadata: Optional[Dict[str, str]] = None) -> None:
    """Write ``tensors`` (already in ``framework``'s names) to ``dst`` atomically.

    The format follows the suffix: ``.ckpt`` (MindSpore), ``.safetensors`` (either framework's
    names), ``.pth``/``.pt``/``.bin`` (a plain PyTorch state_dict).
    """
    dst = os.fspath(dst)
    check_destination(dst, force)
    fmt = file_format(dst)
    if fmt == "ms" and framework != "ms":
        raise ConversionError(f"{dst}: a .ckpt file holds MindSpore weights; use .pth or .safetensors for PyTorch")
    if fmt == "torch" and framework != "pt":
        raise ConversionError(f"{dst}: a {os.path.splitext(dst)[1]} file holds PyTorch weights; use .ckpt or .safetensors for MindSpore")
    suffix = ".ckpt" if fmt == "ms" else os.path.splitext(dst)[1]
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(dst)}.", suffix=".partial" + suffix,
                                   dir=os.path.dirname(os.path.abspath(dst)))
        os.close(fd)
    except OSError as err:
        raise ConversionError(f"{dst}: cannot create a file there ({err.strerror}); nothing was written") from None
    try:
        if fmt == "ms":
            import mindspore as ms
            ms.save_checkpoint([{"name": k, "data": ms.Tensor(v)} for k, v in tensors.items()], tmp)
            os.chmod(tmp, 0o644)
        elif fmt == "safetensors":
            from safetensors.numpy import save_file
            meta = {"format": framework, **(metadata or {})}
            save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, tmp, metadata=meta)
        else:
            import torch
            torch.save(OrderedDict((k, torch.from_numpy(np.ascontiguousarray(v))) for k, v in tensors.items()), tmp)
        os.replace(tmp, dst)
    except BaseException as err:
        if os.path.exists(tmp):
            os.remove(tmp)
        if isinstance(err, (OSError, RuntimeError, ValueError)):
            raise ConversionError(f"{dst}: writing failed ({err}); nothing was written") from None
        raise
