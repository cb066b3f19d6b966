"""Registration of the MindSpore twins into mindcv's model registry.

After ``import zoo``, ``mindcv.create_model("triplet_resnet50", checkpoint_path=...)`` and mindcv's
scripts can build every zoo model whose name mindcv does not already own (those are skipped with a
warning: mindcv's own model keeps its name). Importing zoo does not import mindcv (or MindSpore):
if mindcv is already imported the models are registered at once, otherwise the moment it is.
"""
from __future__ import annotations

import importlib.abc
import importlib.util
import logging
import sys

from zoo import registry

log = logging.getLogger("zoo")

# mindcv reads each entry point's configuration from ``default_cfgs`` of the entry's module.
# Means and stds are in mindcv's 0-255 convention.
default_cfgs: dict = {}
_registered: list = []
_skipped: list = []


def _entry_point(name: str):
    def create(pretrained: bool = False, num_classes: int = None, in_channels: int = 3, **kwargs):
        if pretrained:
            raise ValueError(f"{name}: the zoo downloads no weights; pass checkpoint_path=<file> "
                             "(any checkpoint `zoo convert` reads, converted to .ckpt)")
        from zoo import create_model
        return create_model(name, "ms", num_classes=num_classes, in_chans=in_channels, **kwargs)

    create.__name__ = create.__qualname__ = name
    create.__module__ = __name__
    create.__doc__ = f"{registry.get(name).description} (MindSpore twin from the zoo)"
    return create


def register_mindcv(mindcv_registry=None) -> list:
    """Register every zoo model mindcv does not own; returns the names registered."""
    if mindcv_registry is None:
        from mindcv.models import registry as mindcv_registry
    for name, e in registry.entries().items():
        if name in _registered:
            continue
        if mindcv_registry.is_model(name):
            if name not in _skipped:
                _skipped.append(name)
                log.warning("zoo: mindcv already has a model named %r; mindcv.create_model(%r) builds mindcv's, "
                            "zoo.create_model(%r) builds the zoo's", name, name, name)
            continue
        default_cfgs[name] = {
            "url": "", "num_classes": e.num_classes, "input_size": e.input_size, "first_conv": "",
            "classifier": e.classifier, "mean": [255 * m for m in e.preprocess.mean],
            "std": [255 * s for s in e.preprocess.std], "interpolation": e.preprocess.interpolation,
            "crop_pct": e.preprocess.crop_pct}
        mindcv_registry.register_model(_entry_point(name))
        _registered.append(name)
    return list(_registered)


class _AfterImport(importlib.abc.MetaPathFinder):
    """Runs ``callback(module)`` right after ``fullname`` has been imported (once)."""

    def __init__(self, fullname: str, callback):
        self.fullname, self.callback = fullname, callback

    def find_spec(self, fullname, path=None, target=None):
        if fullname != self.fullname:
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(fullname)
        if spec is None or spec.loader is None:
            return spec
        loader, callback = spec.loader, self.callback

        class Loader(importlib.abc.Loader):
            def create_module(self, spec):
                return loader.create_module(spec)

            def exec_module(self, module):
                loader.exec_module(module)
                callback(module)

        spec.loader = Loader()
        return spec


def _register_safely(_module=None) -> None:
    try:
        register_mindcv()
    except Exception as err:  # an incompatible mindcv must not break importing it or the zoo
        log.warning("zoo: could not register models into mindcv: %s", err)


def install() -> None:
    """Register into mindcv now if it is imported, or as soon as it is."""
    if "mindcv" in sys.modules:
        _register_safely()
    elif importlib.util.find_spec("mindcv") is not None and \
            not any(isinstance(f, _AfterImport) for f in sys.meta_path):
        sys.meta_path.insert(0, _AfterImport("mindcv", _register_safely))
