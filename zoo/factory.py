"""Building models: ``create_model`` (both frameworks, optionally from any checkpoint) and ``build_kwargs``.

``zoo.create_model`` is this module's ``create_model``. ``build_kwargs`` is defined beside the entries in
``zoo.registry`` (the converter, which ``create_model`` uses, needs it too: imports flow one way) and
re-exported here.
"""
from __future__ import annotations

import inspect
from typing import Optional

from zoo import registry
from zoo.registry import build_kwargs  # noqa: F401  (re-exported)


def create_model(name: str, framework: str = "ms", num_classes: Optional[int] = None,
                 checkpoint: Optional[str] = None, layout: str = "auto", features_only: bool = False,
                 out_indices=None, **kwargs):
    """Build the MindSpore (``framework='ms'``) or PyTorch (``'pt'``) twin of a registered model.

    ``checkpoint``: any file the converter reads (``.ckpt``, ``.safetensors``, ``.pth``/``.pth.tar``,
    in the zoo's names of either framework or an external layout the model's family imports), loaded
    strictly. ``num_classes=None`` takes the checkpoint's number of classes (or the model's default);
    a different number drops the checkpoint's classifier with a warning. Other keyword arguments go
    to the model's constructor (``in_chans``, ``drop_rate``, ``drop_path_rate``, ...).

    A PyTorch model is returned in train mode and a MindSpore cell in inference mode (each
    framework's default); call ``.eval()`` / ``.set_train(...)`` as needed.

    ``features_only=True`` returns the feature model instead (``zoo.features``): its forward gives the list
    of the stage outputs ``out_indices`` selects (default all; an int N: the last N), its ``feature_info``
    describes them (``channels()``, ``reduction()``). The weights of ``checkpoint`` load before wrapping; the
    classifier is dropped; a model with a ``global_pool`` argument is built with ``'avg'`` unless given
    (the reference's fixed pooling window belongs to the head and would restrict the input size).
    """
    from zoo.convert import core

    entry = registry.get(name)
    if framework not in registry.FRAMEWORKS:
        raise ValueError(f"framework must be 'ms' or 'pt', got {framework!r}")
    if out_indices is not None and not features_only:
        raise ValueError(f"{name}: out_indices selects feature outputs; it needs features_only=True")
    if features_only and "global_pool" not in kwargs and "global_pool" not in entry.kwargs \
            and "global_pool" in inspect.signature(entry.builder(framework)).parameters:
        kwargs["global_pool"] = "avg"
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
    if features_only:
        from zoo.features import feature_model

        return feature_model(model, framework, out_indices, classifier=entry.classifier, name=name)
    return model
