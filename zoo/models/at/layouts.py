"""Attention Transfer: the reference's checkpoint files, read and written.

Read (``zoo convert`` / ``create_model(..., checkpoint=)``; the reader has already taken the ``params`` entry
and, in files from before May 2018, merged the ``stats`` entry holding the BatchNorm statistics):

- ``reference``: ``model.pt7`` of cifar.py / imagenet.py, ``{'params': flat dict, 'optimizer', 'epoch'}``.
  Conv weights are stored bare (``group0.block0.conv0``), BatchNorm entries with their suffixes (running
  statistics in the same dict, no ``num_batches_tracked``). After a distillation run the dict holds
  ``student.*`` and ``teacher.*``: this layout takes the student.
- ``reference-teacher``: the same files, taking ``teacher.*`` (imagenet.py saves the folded teacher there too).
  A file of one network (no prefixes) reads the same as ``reference``.
- ``functional-zoo``: the flat exports: the folded ResNet-18/34 (``conv0.weight``, ``conv0.bias``, ...: the
  zoo's own names) and resnet-18-at-export (bare convs, ``affine0.a``/``.b``).

Written (``zoo convert MODEL SRC DST.pt7 --to-layout reference``): ``export_reference`` builds what cifar.py /
imagenet.py save, ``{'params': ..., 'optimizer': a fresh SGD state_dict, 'epoch': 0}``, so that the reference
loads it as a teacher (``model_data['params']``) or resumes from it (``--resume``); ``export_functional_zoo``
the flat dict ``define_teacher`` / the functional-zoo notebooks load.
"""
from __future__ import annotations

import re
from collections import OrderedDict

from zoo.convert.layouts import register_exporter, register_layout
from zoo.errors import ConversionError

_BARE_CONV = re.compile(r"(^|\.)(conv\d*|convdim|conv_dim)$")
_CONV_WEIGHT = re.compile(r"(^|\.)(conv\d*|convdim|conv_dim)\.weight$")
_PREFIXES = ("student.", "teacher.")
# the SGD each reference script creates (momentum 0.9, its default weight decay), for the written file
SGD_DEFAULTS = {"WideResNet": dict(lr=0.1, momentum=0.9, weight_decay=5e-4),  # cifar.py
                "ResNet": dict(lr=0.1, momentum=0.9, weight_decay=1e-4)}  # imagenet.py


def bare_to_zoo(tensors):
    """Bare conv tensors (``group0.block0.conv0``) -> the module's ``.weight``; every other name unchanged."""
    return OrderedDict((k + ".weight" if _BARE_CONV.search(k) else k, v) for k, v in tensors.items())


def _take(tensors, which: str):
    if not any(k.startswith(_PREFIXES) for k in tensors):
        return tensors  # a file of one network (a teacher's own run, or no distillation)
    pre = which + "."
    return OrderedDict((k[len(pre):] if k.startswith(pre) else k, v) for k, v in tensors.items()
                       if k.startswith(pre) or not k.startswith(_PREFIXES))


@register_layout("at", "reference")
def import_reference(tensors):
    return bare_to_zoo(_take(tensors, "student"))


@register_layout("at", "reference-teacher")
def import_reference_teacher(tensors):
    return bare_to_zoo(_take(tensors, "teacher"))


@register_layout("at", "functional-zoo")
def import_functional_zoo(tensors):
    return bare_to_zoo(tensors)


# --- writing ---------------------------------------------------------------------------------------

def _reference_params(entry, state):
    """Canonical (zoo PyTorch) state -> the reference's flat dict: bare convs, no num_batches_tracked."""
    import torch

    out = OrderedDict()
    for k, v in state.items():
        if k.endswith("num_batches_tracked"):
            continue
        if entry.cls != "FoldedResNet" and _CONV_WEIGHT.search(k):
            k = k[: -len(".weight")]
        out[k] = torch.from_numpy(v.copy())
    return out


def _fresh_sgd_state(n_params: int, cls: str) -> dict:
    """What ``torch.optim.SGD(params, lr, momentum=0.9, weight_decay=wd).state_dict()`` gives before any step."""
    import torch

    dummy = [torch.zeros(1, requires_grad=True) for _ in range(n_params)]
    return torch.optim.SGD(dummy, **SGD_DEFAULTS.get(cls, SGD_DEFAULTS["ResNet"])).state_dict()


@register_exporter("at", "reference")
def export_reference(entry, state):
    """``{'params', 'optimizer', 'epoch'}`` as cifar.py / imagenet.py save ``model.pt7`` (one network, no prefix).

    The optimizer entry is a fresh SGD over the trainable tensors (all but the running statistics), with the
    script's default hyperparameters, so that ``--resume`` accepts the file; ``epoch`` is 0."""
    if entry.cls in ("FoldedResNet", "AffineResNet"):
        raise ConversionError(f"{entry.name} is not a network the reference trains; write it with "
                              "--to-layout functional-zoo")
    params = _reference_params(entry, state)
    trainable = sum(1 for k in params if not k.endswith(("running_mean", "running_var")))
    return {"params": params, "optimizer": _fresh_sgd_state(trainable, entry.cls), "epoch": 0}


@register_exporter("at", "functional-zoo")
def export_functional_zoo(entry, state):
    """The flat dict of the functional-zoo exports (``define_teacher`` loads it with ``torch.load``)."""
    if entry.cls not in ("FoldedResNet", "AffineResNet"):
        raise ConversionError(f"{entry.name} is trained by the reference scripts; write it with --to-layout reference")
    return _reference_params(entry, state)
