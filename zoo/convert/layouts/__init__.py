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
_EXPORTERS: Dict[Tuple[str, str], Callable] = {}


def register_layout(family: str, layout: str):
    def deco(fn):
        _IMPORTERS[(family, layout)] = fn
        return fn
    return deco


def register_exporter(family: str, layout: str):
    """``fn(entry, state) -> object`` writing a canonical state (zoo PyTorch names, numpy) in an external layout
    (what ``torch.save`` then stores; ``zoo convert ... --to-layout LAYOUT``)."""
    def deco(fn):
        _EXPORTERS[(family, layout)] = fn
        return fn
    return deco


def _load_family(family: str) -> None:
    """Import ``zoo/models/<family>/layouts.py`` (which registers the family's importers and exporters)."""
    from zoo.models import FAMILIES

    if family in FAMILIES:
        try:
            importlib.import_module(f"zoo.models.{family}.layouts")
        except ModuleNotFoundError as err:
            if err.name != f"zoo.models.{family}.layouts":
                raise


def get_importer(family: str, layout: str) -> Callable:
    if (family, layout) not in _IMPORTERS:
        _load_family(family)
    try:
        return _IMPORTERS[(family, layout)]
    except KeyError:
        raise UnknownModelError(f"no importer for layout {layout!r} of family {family!r}") from None


def exporters(family: str) -> Tuple[str, ...]:
    """The layouts a family's models can be written in."""
    _load_family(family)
    return tuple(layout for f, layout in _EXPORTERS if f == family)


def get_exporter(family: str, layout: str) -> Callable:
    from zoo.errors import ConversionError

    if (family, layout) not in _EXPORTERS:
        _load_family(family)
    try:
        return _EXPORTERS[(family, layout)]
    except KeyError:
        known = ", ".join(exporters(family)) or "none"
        raise ConversionError(f"family {family!r} cannot be written in layout {layout!r}; it writes: {known}") from None
