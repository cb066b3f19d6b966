"""Checkpoint files: reading any supported format into named numpy arrays, and atomic writing.

Reads ``.pth/.pt/.pth.tar/.bin`` with ``torch.load(weights_only=True)`` (a pickle that carries code
is refused, never executed), ``.safetensors``, and MindSpore ``.ckpt``. Training wrappers are
removed (a ``state_dict``/``model``/``params``... entry, a ``module.`` prefix), and optimizer state
is dropped with a note. Writes go through ``zoo.files.atomic_write``: a temporary file next to the
destination, published only once complete (exclusively, without ``force``), so a failure never leaves a
half-written destination or a temporary file.

The class list (the label order of the classifier's outputs) travels with the weights where the trainer
or the converter wrote it: a ``zoo.classes`` string entry in a ``.ckpt``, ``classes`` in a
``.safetensors`` header, a ``classes`` entry of a training ``.pth`` or ``zoo:classes`` in a state dict's
``_metadata`` (a plain state dict stays loadable with ``load_state_dict``).
"""
from __future__ import annotations

import json
import os
import pickle
import re
import zipfile
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Dict, List, Optional

import numpy as np


from zoo.errors import ConversionError, WriteError  # noqa: E402,F401  (re-exported: zoo.convert.ConversionError)
from zoo.files import atomic_write

CLASSES_KEY = "zoo.classes"  # .ckpt string entry; "classes" in safetensors metadata and training .pth files
PT_METADATA_KEY = "zoo:classes"  # in a state dict's _metadata (no module path can be spelled with ':')


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
    classes: Optional[List[str]] = None  # the classifier's label names, where the file carries them


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
    meta: dict = {}
    reader = {"torch": _read_torch, "safetensors": _read_safetensors, "ms": _read_ms}[fmt]
    tensors = reader(path, notes, meta)
    tensors = _strip_prefix(tensors, "module.", notes)
    dropped = [k for k in tensors if is_optimizer_key(k)]
    if dropped:
        for k in dropped:
            del tensors[k]
        shown = ", ".join(dropped[:4]) + (", ..." if len(dropped) > 4 else "")
        notes.append(f"dropped {len(dropped)} optimizer/training-state entries ({shown})")
    if not tensors:
        raise ConversionError(f"{path}: no weight tensors found in the file")
    return Checkpoint(tensors, path, fmt, notes, _classes(meta.get("classes")))


def _classes(value) -> Optional[List[str]]:
    """A class list from what a file holds (a JSON string or a list of strings); None if absent or malformed."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return None
    if isinstance(value, (list, tuple)) and value and all(isinstance(c, str) for c in value):
        return list(value)
    return None


def _corrupt(path: str, err: Exception) -> ConversionError:
    return ConversionError(f"{path}: cannot read the checkpoint; the file is truncated or corrupt "
                           f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''})")


def load_torch(path: str, map_location="cpu"):
    """``torch.load(weights_only=True)`` with the zoo's messages: a file that would need code to unpickle is
    refused (never run), a corrupt one is called corrupt; torch's own advice to disable the safe loader is
    not relayed."""
    import argparse

    import torch

    try:
        # timm's CheckpointSaver (the VAN training script's) stores the run's argparse.Namespace under
        # 'args'; a Namespace only holds attributes, so it is allowed next to tensors and containers
        with torch.serialization.safe_globals([argparse.Namespace]):
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        if _pickle_imports(path):
            raise ConversionError(
                f"{path}: refused to load: the file holds Python objects other than tensors and plain containers, "
                "and unpickling them could run code. Loading uses torch.load(weights_only=True). If you trust the "
                "file, load it yourself and re-save only its state_dict.") from None
        detail = re.search(r"WeightsUnpickler error:\s*(.+?)\s*(?:\n|$)", str(err))
        raise ConversionError(f"{path}: cannot read the checkpoint; the file is truncated or corrupt, or not a "
                              f"PyTorch checkpoint ({detail.group(1) if detail else 'not a valid pickle'})") from None
    except (RuntimeError, EOFError, OSError, ValueError, KeyError, AttributeError, IndexError) as err:
        raise _corrupt(path, err) from None


def _pickle_imports(path: str) -> bool:
    """Whether the file's pickles (the ``data.pkl`` of a torch zip, or the pickles a legacy file starts with) import
    anything: read with ``pickletools.genops``, which parses opcodes and runs nothing. Only complete pickles count,
    so random bytes (which a parser may read as an import before failing) are corrupt, not dangerous."""
    import pickletools

    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as z:
                member = next((n for n in z.namelist() if n.endswith("data.pkl")), None)
                data = z.read(member) if member else b""
        else:
            with open(path, "rb") as f:
                data = f.read(1 << 24)
    except (OSError, zipfile.BadZipFile, KeyError):
        return False
    imports = ("GLOBAL", "STACK_GLOBAL", "INST", "OBJ", "REDUCE", "NEWOBJ", "NEWOBJ_EX")
    pos = 0
    for _ in range(5):  # a legacy torch file: magic number, protocol, system info, then the object
        found, end = False, None
        try:
            for op, _, at in pickletools.genops(data[pos:]):
                found = found or op.name in imports
                if op.name == "STOP":
                    end = pos + at + 1
        except Exception:  # not a complete pickle: corrupt, not dangerous
            return False
        if found:
            return True
        if end is None or end >= len(data):
            return False
        pos = end
    return False


def _read_torch(path: str, notes: List[str], meta: dict):
    obj = load_torch(path)
    if isinstance(obj, dict):
        if "classes" in obj and _classes(obj.get("classes")):
            meta["classes"] = obj["classes"]
    return _flatten_weights(obj, path, notes, meta)


def _flatten_weights(obj, path: str, notes: List[str], meta: Optional[dict] = None):
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
                raise ConversionError(f"{path}: no weights found; top-level keys: "
                                      f"{', '.join(map(str, list(obj)[:10]))}; expected a state_dict or a wrapper "
                                      f"with one of {', '.join(WEIGHT_KEYS)}")
            ignored = [k for k in obj if k not in tensors]
            notes.append(f"ignored non-tensor entries: {', '.join(map(str, ignored[:6]))}")
            obj = tensors
    pt_meta = getattr(obj, "_metadata", None)
    if meta is not None and isinstance(pt_meta, dict) and isinstance(pt_meta.get(PT_METADATA_KEY), dict):
        meta.setdefault("classes", pt_meta[PT_METADATA_KEY].get("classes"))
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


def _read_safetensors(path: str, notes: List[str], meta: dict):
    from safetensors import SafetensorError, safe_open
    from safetensors.numpy import load_file

    try:
        with safe_open(path, "np") as f:
            meta.update(f.metadata() or {})
    except Exception:  # the header is read again (and reported) below
        pass
    try:
        return OrderedDict(load_file(path))
    except (SafetensorError, OSError, ValueError) as err:
        raise _corrupt(path, err) from None
    except Exception as err:  # bfloat16 and friends have no numpy dtype: read through torch
        if "bf16" not in str(err).lower() and "dtype" not in str(err).lower():
            raise _corrupt(path, err) from None
        from safetensors.torch import load_file as load_torch
        return _flatten_weights(load_torch(path), path, notes)


def _read_ms(path: str, notes: List[str], meta: dict):
    import mindspore as ms

    try:
        params = ms.load_checkpoint(path)
    except Exception as err:  # MindSpore raises ValueError/RuntimeError for bad files
        raise _corrupt(path, err) from None
    out = OrderedDict()
    for k, p in params.items():
        if isinstance(p, str):  # append_dict strings: the class list, nothing to load
            if k == CLASSES_KEY:
                meta["classes"] = p
            continue
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
                     metadata: Optional[Dict[str, str]] = None, classes: Optional[List[str]] = None) -> None:
    """Write ``tensors`` (already in ``framework``'s names) to ``dst`` atomically.

    The format follows the suffix: ``.ckpt`` (MindSpore), ``.safetensors`` (either framework's
    names), ``.pth``/``.pt``/``.bin`` (a plain PyTorch state_dict). ``classes`` (the label names, in
    the classifier's order) is stored with the weights. Without ``force`` the file is published so
    that it fails if ``dst`` appeared meanwhile.
    """
    dst = os.fspath(dst)
    check_destination(dst, force)
    fmt = file_format(dst)
    if fmt == "ms" and framework != "ms":
        raise ConversionError(f"{dst}: a .ckpt file holds MindSpore weights; use .pth or .safetensors for PyTorch")
    if fmt == "torch" and framework != "pt":
        raise ConversionError(f"{dst}: a {os.path.splitext(dst)[1]} file holds PyTorch weights; "
                              "use .ckpt or .safetensors for MindSpore")
    size = int(sum(np.asarray(v).nbytes for v in tensors.values()))

    def write(tmp):
        if fmt == "ms":
            import mindspore as ms
            extra = {CLASSES_KEY: json.dumps(list(classes))} if classes else None
            with quiet_mindspore_logger():
                ms.save_checkpoint([{"name": k, "data": ms.Tensor(v)} for k, v in tensors.items()], tmp,
                                   append_dict=extra)
        elif fmt == "safetensors":
            from safetensors.numpy import save_file
            meta = {"format": framework, **(metadata or {})}
            if classes:
                meta["classes"] = json.dumps(list(classes))
            save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, tmp, metadata=meta)
        else:
            import torch
            sd = OrderedDict((k, torch.from_numpy(np.ascontiguousarray(v))) for k, v in tensors.items())
            if classes:
                sd._metadata = OrderedDict([(PT_METADATA_KEY, {"classes": list(classes)})])
            torch.save(sd, tmp)

    try:
        atomic_write(dst, write, overwrite=force, size_hint=size)
    except WriteError as err:
        raise ConversionError(err.message) from None


class quiet_mindspore_logger:
    """MindSpore logs a CRITICAL line of its own when a save fails; the zoo's error says it better."""

    def __enter__(self):
        import logging

        from mindspore import log as ms_log

        self.logger = ms_log._get_logger()
        self.level = self.logger.level
        self.logger.setLevel(logging.CRITICAL + 1)
        return self

    def __exit__(self, *exc):
        self.logger.setLevel(self.level)
        return False
