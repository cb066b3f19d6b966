"""MindSpore's compile cache, keyed so that a changed model or configuration never reuses a stale graph.

MindSpore 2.8 saves a compiled GRAPH-mode graph under ``MS_COMPILER_CACHE_PATH`` when
``MS_COMPILER_CACHE_ENABLE=1`` and loads it in a later process instead of compiling again (it checks the
hash of the Python files the graph came from, and recompiles when they changed). On this project's CPU
machine that cut the first training step of ``triplet_resnet18_cifar`` (batch 8) from 20 s to 5 s, and the same
with ``set_context(enable_compile_cache=True, compile_cache_path=...)`` (21 s to 5 s); ``zoo bench
--compile-cache`` measures it (docs/benchmarks.md). The environment variables are the documented way in 2.8 (the
``set_context`` keys are deprecated); MindSpore reads them when a graph is compiled, so setting them in a running
process works.

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
import sys
from typing import Any, Optional, Sequence

ENABLE, PATH = "MS_COMPILER_CACHE_ENABLE", "MS_COMPILER_CACHE_PATH"
_enabled = {"path": None}  # the folder this process set (so that it is not taken for the user's own setting)


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


# recipe keys that cannot change a compiled graph (paths, logging, checkpoint policy, data reading); every other
# key, and the learning-rate schedule itself, is part of a training graph's key
NOT_IN_GRAPH = ("data_dir", "train_split", "val_split", "shuffle", "num_parallel_workers", "val_while_train",
                "val_interval", "ckpt_save_dir", "keep_checkpoint_max", "ckpt_save_interval", "ckpt_save_steps",
                "ckpt_save_all_ranks", "resume", "ckpt_path", "log_interval", "record_samples", "seed")
ENV = "ZOO_COMPILE_CACHE"  # off (or 0): no cache; a folder: the cache root instead of <run folder>/compile_cache


def train_cache_root(run_dir: str) -> Optional[str]:
    """Where the trainer keeps compiled graphs: ``<run folder>/compile_cache`` unless ``ZOO_COMPILE_CACHE`` says
    otherwise; None when it is off or the user set MindSpore's own variables (theirs win)."""
    choice = os.environ.get(ENV, "").strip()
    theirs = (ENABLE in os.environ or PATH in os.environ) and os.environ.get(PATH) != _enabled["path"]
    if choice.lower() in ("0", "off", "false", "no") or theirs:
        return None
    return choice or os.path.join(run_dir, "compile_cache")


def usable() -> bool:
    """Whether MindSpore's cache can work in this process: it hashes the main script, so a process started from a
    command string (as pytest-xdist's workers are), an interactive interpreter or an embedding one has none, and
    every GRAPH compilation with the cache on would fail there (FileNotFoundError on '-c')."""
    main = sys.argv[0] if sys.argv else ""
    return bool(main) and os.path.isfile(main)


def enable(root: str, key: str) -> Optional[str]:
    """Turn the cache on for the graphs compiled from now on in this process, in ``<root>/<key>``; returns it
    (None, and the cache stays off, where MindSpore's cache cannot work: see ``usable``)."""
    if not usable():
        return None
    path = os.path.join(os.path.abspath(root), key)
    os.makedirs(path, exist_ok=True)
    os.environ[ENABLE] = "1"
    os.environ[PATH] = path
    _enabled["path"] = path
    return path


def disable() -> None:
    if os.environ.get(PATH) == _enabled["path"]:
        os.environ.pop(ENABLE, None)
        os.environ.pop(PATH, None)
    _enabled["path"] = None


def is_warm(path: Optional[str]) -> bool:
    """Whether a cache folder already holds a compiled graph."""
    return path is not None and bool(glob.glob(os.path.join(path, "**", "*.mindir"), recursive=True))
