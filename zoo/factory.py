"""Building models: ``create_model`` (both frameworks, optionally from any checkpoint) and ``build_kwargs``.

``zoo.create_model`` is this module's ``create_model``. ``build_kwargs`` is defined beside the entries in
``zoo.registry`` (the converter, which ``create_model`` uses, needs it too: imports flow one way) and
re-exported here.
"""
from __future__ import annotations

from typing import Optional

from zoo import registry
from zoo.registry import build_kwargs  # noqa: F401  (re-exported)


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

    entry = registry.get(name)
    if framework not in registry.FRAMEWORKS:
        raise ValueError(f"framework must be 'ms' or 'pt', got {framework!r}")
    loaded = None
    if checkpoint is not None:
        loaded = core.load_state(name, checkpoint, layout=layout, num_classes=num_classes, **kwargs)
        for note in loaded.notes:
            core.log.info("%s: %s", checkpoint, note)
        build = build_kwargs(entry, **{**kwargs, **loaded.kwargs})
    else:
        build = build_kwargs(entry, num_classes=num_classes, **kwargs)
    model = entry.builder(framework)(**build)
    if loaded is not None:
        core.load_into(model, framework, loaded)
    return model
