"""MindSpore's compile cache, keyed so that a changed model or configuration never reuses a stale graph.

MindSpore 2.8 saves a compiled GRAPH-mode graph under ``MS_COMPILER_CACHE_PATH`` when
``MS_COMPILER_CACHE_ENABLE=1`` and loads it in a later process instead of compiling again (it checks the
hash of the Python files the graph came from, and recompiles when they changed). On this project's CPU
machine that cuts the first training step of ``triplet_resnet18_cifar`` from about 20 s to 5 s (measured by
``zoo bench --compile-cache``; see docs/benchmarks.md). The environment variables are the documented way in
2.8 (``set_context(enable_compile_cache=...)`` is deprecated); MindSpore reads them when a graph is compiled.

The cache folder of one graph is ``<root>/<key>``: the key hashes the model name, its constructor
arguments, the input shape, the amp level, the execution mode, what the graph is (train step, inference),
the MindSpore version and the source of the zoo's model code (the family's files and the shared blocks), so
a change to any of them starts a fresh folder rather than loading a stale graph.
"""
from __future__ import annotations

import glob
import hashlib
import json
import os
from typing import Any, Optional, Sequence

ENABLE, PATH = "MS_COMPILER_CACHE_ENABLE", "MS_COMPILER_CACHE_PATH"


def source_hash(family: str) -> str:
    """A hash of the code a family's graphs come from: its model files, the shared layers, the train step."""
    root = os.path.dirname(os.path.abspath(__file__))
    files = sorted(glob.glob(os.path.join(root, "models", family, "*.py")))
    files += [os.path.join(root, "nn", "ms.py"), os.path.join(root, "train", "ms.py"), os.path.join(root, "factory.py")]
    h = hashlib.sha256()
    for f in files:
        if os.path.isfile(f):
            h.update(os.path.relpath(f, root).encode())
            with open(f, "rb") as fh:
                h.update(fh.read())
    return h.hexdigest()[:16]


def cache_key(model: str, what: str, input_shape: Sequence[int], amp_level: str = "O0", mode: int = 0,
              kwargs: Optional[dict] = None, extra: Optional[Any] = None) -> str:
    """The folder name of one compiled graph: ``<model>-<what>-<hash of everything it depends on>``."""
    import mindspore as ms

    from zoo import __version__, registry

    entry = registry.get(model)
    payload = dict(model=model, what=what, shape=[int(s) for s in input_shape], amp=amp_level, mode=int(mode),
                   kwargs=kwargs or {}, extra=extra, mindspore=ms.__version__, zoo=__version__,
                   source=source_hash(entry.family))
    digest = hashlib.sha256(json.dumps(payload, sort_keys=True, default=repr).encode()).hexdigest()[:16]
    return f"{model}-{what}-{digest}"


def enable(root: str, key: str) -> str:
    """Turn the cache on for the graphs compiled from now on in this process, in ``<root>/<key>``; returns it."""
    path = os.path.join(os.path.abspath(root), key)
    os.makedirs(path, exist_ok=True)
    os.environ[ENABLE] = "1"
    os.environ[PATH] = path
    return path


def disable() -> None:
    os.environ.pop(ENABLE, None)
    os.environ.pop(PATH, None)


def is_warm(path: str) -> bool:
    """Whether a cache folder already holds a compiled graph."""
    return bool(glob.glob(os.path.join(path, "**", "*.mindir"), recursive=True))
