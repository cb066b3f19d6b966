"""Importers for external checkpoint layouts (official repositories, timm, mindcv).

An importer takes the tensors of a checkpoint (wrapper and ``module.`` prefix already removed) and
returns them under the zoo's PyTorch names, or raises ``ConversionError``. Each family keeps its
importers beside its models, in ``zoo/models/<family>/layouts.py``, registered with
``@register_layout(family, layout)``; the registry entry of a model lists the layouts that apply to it.
"""
from __future__ import annotations

import importlib
from typing import Callable, Dict, Tuple

from zoo.errors import UnknownModelError

_IMPORTERS: Dict[Tuple[str, str], Callable] = {}


def register_layout(family: str, layout: str):
    def deco(fn):
        _IMPORTERS[(family, layout)] = fn
        return fn
    return deco


def get_importer(family: str, layout: str) -> Callable:
    from zoo.models import FAMILIES

    if family in FAMILIES and (family, layout) not in _IMPORTERS:
        try:
            importlib.import_module(f"zoo.models.{family}.layouts")
        except ModuleNotFoundError as err:
            if err.name != f"zoo.models.{family}.layouts":
                raise
    try:
        return _IMPORTERS[(family, layout)]
    except KeyError:
        raise UnknownModelError(f"no importer for layout {layout!r} of family {family!r}") from None
