"""zoo: a MindSpore-first model zoo of attention vision models with PyTorch twins.

    import zoo
    zoo.list_models("triplet")
    net = zoo.create_model("triplet_resnet50", framework="ms", checkpoint="official.pth.tar")
    model = zoo.create_model("triplet_resnet50", framework="pt", checkpoint="converted.ckpt")
"""
from __future__ import annotations

import os
from typing import Optional

# MindSpore logs every graph-compiler warning to stderr; keep errors only unless the user chose a level.
os.environ.setdefault("GLOG_v", "3")

from zoo.registry import get as get_entry, list_models, families  # noqa: F401

__version__ = "0.1.0"


def create_model(name: str, framework: str = "ms", num_classes: Optional[int] = None,
                 checkpoint: Optional[str] = None, layout: str = "auto", **kwargs):
    """Build the MindSpore (``framework='ms'``) or PyTorch (``'pt'``) twin of a registered model.

    ``checkpoint``: any file the converter reads (``.ckpt``, ``.safetensors``, ``.pth``/``.pth.tar``,
    in the zoo's names of either framework or an external layout the model's family imports), loaded
    strictly. ``num_classes=None`` takes the checkpoint's number of classes (or the model's default);
    a different number drops the checkpoint's classifier with a warning. Other keyword arguments go
    to the model's constructor (``in_chans``, ``drop_rate``, ``drop_path_rate``, ...).

    A PyTorch model is returned in train mode and a MindSpore cell in inference mode (each
    framework's default); call ``.eval()`` / ``.set_train(...)`` as needed.
    """
    from zoo.convert import core

    entry = get_entry(name)
    if framework not in ("ms", "pt"):
        raise ValueError(f"framework must be 'ms' or 'pt', got {framework!r}")
    loaded = None
    if checkpoint is not None:
        loaded = core.load_state(name, checkpoint, layout=layout, num_classes=num_classes, **kwargs)
        for note in loaded.notes:
            core.log.info("%s: %s", checkpoint, note)
        build = core.build_kwargs(entry, **{**kwargs, **loaded.kwargs})
    else:
        build = core.build_kwargs(entry, num_classes=num_classes, **kwargs)
    model = entry.builder(framework)(**build)
    if loaded is not None:
        core.load_into(model, framework, loaded)
    return model


from zoo import integrations as _integrations  # noqa: E402

_integrations.install()
