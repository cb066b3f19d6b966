"""Importers for external checkpoint layouts (official repositories, timm, mindcv).

An importer takes the tensors of a checkpoint (wrapper and ``module.`` prefix already removed) and
returns them under the zoo's PyTorch names, or raises ``ConversionError``. Each family's module
registers its importers with ``@register_layout(family, layout)``; the registry entry of a model
lists the layouts that apply to it.
"""
from __future__ import annotations

import importlib
from typing import Callable, Dict, Tuple

_IMPORTERS: Dict[Tuple[str, str], Callable] = {}
_FAMILY_MODULES = ("triplet", "van", "halonet")


def register_layout(family: str, layout: str):
    def deco(fn):
        _IMPORTERS[(family, layout)] = fn
        return fn
    return deco


def get_importer(family: str, layout: str) -> Callable:
    for mod in _FAMILY_MODULES:
        importlib.import_module(f"zoo.convert.layouts.{mod}")
    try:
        return _IMPORTERS[(family, layout)]
    except KeyError:
        raise KeyError(f"no importer for layout {layout!r} of family {family!r}") from None
