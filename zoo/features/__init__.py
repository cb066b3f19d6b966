"""Feature extraction the timm/mindcv way: ``create_model(name, framework, features_only=True, out_indices=...)``.

Every zoo model computes its stage outputs inside its forward (``forward_intermediates(x) -> (x_final,
[stage outputs])``, no hooks: MindSpore hooks only work in PYNATIVE), and describes them in ``feature_info``
(``num_chs``, ``reduction``, ``module`` per output, timm's keys). The distillation losses read the same
outputs for their attention maps. A feature model (``pt.FeatureListNet`` / ``ms.FeatureListCell``) wraps a
built model, calls ``forward_intermediates`` and returns the list of the outputs ``out_indices`` selects;
its ``feature_info`` (a ``FeatureInfo``) describes only those, ``out_channels`` lists their channels (mindcv's
``FeatureExtractWrapper`` property). The MindSpore cell compiles in GRAPH mode.

The classifier (the registry's ``classifier`` module: ``fc``, ``head``, ``head.fc``, ``classifier.1``,
``mlp_head.1``) is replaced by an identity, so its weights are not part of the feature model's parameters;
everything else stays (the stages after the last selected output still run: ``forward_intermediates``
computes them all).
"""
from __future__ import annotations

from typing import Iterable, List, Optional, Sequence, Union

FEATURE_KEYS = ("num_chs", "reduction", "module")


class FeatureInfo(list):
    """The ``feature_info`` of a feature model: a list of dicts (``num_chs``, ``reduction``, ``module``),
    one per output, with timm ``FeatureInfo``'s helpers. ``idx`` (an int or a sequence) picks outputs."""

    def get(self, key: str, idx: Union[None, int, Sequence[int]] = None):
        if idx is None:
            return [f[key] for f in self]
        if isinstance(idx, int):
            return self[idx][key]
        return [self[i][key] for i in idx]

    def channels(self, idx=None):
        return self.get("num_chs", idx)

    def reduction(self, idx=None):
        return self.get("reduction", idx)

    def module_name(self, idx=None):
        return self.get("module", idx)


def stage_info(model, name: str = "") -> List[dict]:
    """The model's ``feature_info`` (all its stage outputs), or a clear error if it has none."""
    info = getattr(model, "feature_info", None)
    if not info or not callable(getattr(model, "forward_intermediates", None)):
        raise ValueError(f"{name or type(model).__name__} has no stage outputs (forward_intermediates and "
                         "feature_info): features_only is not available for it")
    return [dict(f) for f in info]


def resolve_out_indices(n: int, out_indices: Union[None, int, Iterable[int]], name: str = "") -> tuple:
    """``out_indices`` as a tuple of indices in 0..n-1. None: every output; an int k: the last k (timm's
    meaning); a sequence: those outputs, in that order, negative ones counted from the end."""
    what = f"{name}: " if name else ""
    if out_indices is None:
        return tuple(range(n))
    if isinstance(out_indices, bool) or not isinstance(out_indices, (int, list, tuple, range)):
        raise TypeError(f"{what}out_indices must be a sequence of ints (or an int: the last N outputs), "
                        f"got {out_indices!r}")
    if isinstance(out_indices, int):
        if not 1 <= out_indices <= n:
            raise ValueError(f"{what}out_indices={out_indices} (the last N outputs) must be in 1..{n}: "
                             f"the model has {n} stage outputs")
        return tuple(range(n - out_indices, n))
    idx = tuple(out_indices)
    if not idx:
        raise ValueError(f"{what}out_indices is empty; give indices in 0..{n - 1} (or -{n}..-1)")
    bad = [i for i in idx if isinstance(i, bool) or not isinstance(i, int) or not -n <= i < n]
    if bad:
        raise ValueError(f"{what}out_indices {bad} out of range: the model has {n} stage outputs, "
                         f"indices 0..{n - 1} (or -{n}..-1)")
    idx = tuple(i % n for i in idx)
    if len(set(idx)) != len(idx):
        raise ValueError(f"{what}out_indices {tuple(out_indices)} name an output twice")
    return idx


def feature_model(model, framework: str, out_indices=None, classifier: Optional[str] = None, name: str = ""):
    """Wrap a built zoo model (either framework) into its feature model; see the module docstring.

    ``classifier``: the dotted name of the classifier module to drop (the registry's ``classifier``)."""
    info = stage_info(model, name)
    idx = resolve_out_indices(len(info), out_indices, name)
    if classifier:
        _drop_classifier(model, framework, classifier)
    selected = FeatureInfo(info[i] for i in idx)
    if framework == "pt":
        from zoo.features.pt import FeatureListNet
        return FeatureListNet(model, idx, selected)
    if framework == "ms":
        from zoo.features.ms import FeatureListCell
        return FeatureListCell(model, idx, selected)
    raise ValueError(f"framework must be 'ms' or 'pt', got {framework!r}")


def _drop_classifier(model, framework: str, classifier: str) -> None:
    """Replace the module ``classifier`` (dotted path) by an identity, where it is one of the model's modules."""
    *path, leaf = classifier.split(".")
    parent = model
    for p in path:
        parent = parent[int(p)] if p.isdigit() else getattr(parent, p, None)
        if parent is None:
            return
    if framework == "pt":
        from torch import nn
        if isinstance(getattr(parent, leaf, None) if not leaf.isdigit() else parent[int(leaf)], nn.Linear):
            setattr(parent, leaf, nn.Identity())  # nn.Sequential: "1" is its module's name too
    else:
        from mindspore import nn

        from zoo.nn import ms as L
        if leaf.isdigit():
            if isinstance(parent[int(leaf)], nn.Dense):
                parent[int(leaf)] = L.Identity()
        elif isinstance(getattr(parent, leaf, None), nn.Dense):
            setattr(parent, leaf, L.Identity())
