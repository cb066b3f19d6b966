"""zoo: a MindSpore-first model zoo of attention vision models with PyTorch twins.

    import zoo
    zoo.list_models("triplet")
    net = zoo.create_model("triplet_resnet50", framework="ms", checkpoint="official.pth.tar")
    model = zoo.create_model("triplet_resnet50", framework="pt", checkpoint="converted.ckpt")
"""
from __future__ import annotations

import os

# MindSpore logs every graph-compiler warning to stderr; keep errors only unless the user chose a level. The one
# place this is set: every entry point (the CLI, tools/, tests) imports zoo before MindSpore.
os.environ.setdefault("GLOG_v", "3")

from zoo import models as _models  # noqa: E402,F401  (registers every family's variants; no framework import)
from zoo.registry import get as get_entry, list_models, families  # noqa: E402,F401
from zoo.factory import create_model  # noqa: E402,F401

__version__ = "0.1.0"


from zoo import integrations as _integrations  # noqa: E402
from zoo.integrations import register_mindcv, register_timm  # noqa: E402,F401  (explicit registration)

_integrations.install()  # the import hook (off with ZOO_NO_REGISTRY_HOOK=1)
