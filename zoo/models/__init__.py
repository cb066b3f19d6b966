"""Model families. Importing this package registers every family's variants (no framework import).

``FAMILIES`` is the one list of families: each has ``zoo/models/<family>/config.py`` (the variants,
registered on import), ``pt.py`` and ``ms.py`` (the twins) and, when it imports external checkpoint
layouts, ``layouts.py`` (loaded by ``zoo.convert.layouts`` when a layout of that family is asked for).
"""
import importlib

FAMILIES = ("triplet", "van", "halonet", "gmm", "at")

for _family in FAMILIES:
    importlib.import_module(f"zoo.models.{_family}.config")
