"""The model registry: one entry per model name.

An entry says which family a model belongs to, how to build each twin (a class name that both
``zoo.models.<family>.pt`` and ``zoo.models.<family>.ms`` define, plus the variant's arguments),
its default input size and preprocessing, its published figures, and the external checkpoint
layouts its family can import. Entries are declared in each family's ``config.py``, which imports this
module; ``zoo.models`` imports every family's ``config.py`` (``import zoo`` does that), so this module
imports nothing of the zoo's but its errors, and no deep-learning framework: ``zoo list`` stays fast.
"""
from __future__ import annotations

import difflib
import importlib
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Optional, Tuple

from zoo.errors import UnknownModelError

FRAMEWORKS = ("ms", "pt")


@dataclass(frozen=True)
class Published:
    """Figures published by the reference (None where it publishes none).

    ``gmacs`` counts multiply-accumulates in billions; several READMEs call this number "GFLOPs"
    (ResNet-18 at 1.8 "GFLOPs" is 1.8 G multiply-adds). ``top1``/``top5`` are accuracies in percent.
    """

    params: Optional[int] = None
    gmacs: Optional[float] = None
    top1: Optional[float] = None
    top5: Optional[float] = None
    dataset: str = "imagenet-1k"
    source: str = ""
    # ``params`` counts the trainable parameters only (frozen tables excluded), as the reference counted them;
    # False: every parameter
    params_trainable: bool = False


@dataclass(frozen=True)
class Preprocess:
    """How the reference evaluated the model (what validation must reproduce)."""

    mean: Tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: Tuple[float, float, float] = (0.229, 0.224, 0.225)
    interpolation: str = "bilinear"
    crop_pct: float = 0.875


@dataclass(frozen=True)
class ModelEntry:
    name: str
    family: str
    cls: str  # class defined by both zoo.models.<family>.pt and .ms
    kwargs: Dict[str, Any] = field(default_factory=dict)
    input_size: Tuple[int, int, int] = (3, 224, 224)
    # a smaller input the parity tests may use (None: the architecture needs the full size)
    test_input_size: Optional[Tuple[int, int, int]] = None
    # kwargs the parity tests add with test_input_size (e.g. a size-agnostic head)
    test_kwargs: Dict[str, Any] = field(default_factory=dict)
    # kwargs giving the same architecture with the fewest blocks that keep every code path (one block per
    # stage, two layers per transformer...): what tests of interfaces rather than numbers build
    # (tests/test_contract.py); {} where the architecture has no such argument
    shallow_kwargs: Dict[str, Any] = field(default_factory=dict)
    num_classes: int = 1000
    classifier: str = "fc"  # module path of the final Linear (head handling in loading)
    published: Published = field(default_factory=Published)
    # figures on further datasets when one model serves several (e.g. CIFAR-100 and SVHN besides CIFAR-10);
    # ``published`` is the first (the default dataset's)
    more_published: Tuple[Published, ...] = ()
    preprocess: Preprocess = field(default_factory=Preprocess)
    layouts: Tuple[str, ...] = ()  # external checkpoint layouts zoo.convert can import
    # reads constructor arguments the weights determine (e.g. a kernel size) from a state dict
    infer_kwargs: Optional[Callable[[dict], dict]] = None
    description: str = ""
    # seed of the random weights and input zoo.parity.check uses by default. Some random networks are
    # chaotic (float32 itself cannot fix their outputs to the parity bound); a family records a draw
    # on which float32 and float64 agree, so that the comparison of the twins means something.
    parity_seed: int = 0

    @property
    def all_published(self) -> Tuple[Published, ...]:
        """``published`` followed by ``more_published``: one ``Published`` per dataset."""
        return (self.published,) + tuple(self.more_published)

    def builder(self, framework: str):
        """The class that builds this model in ``framework`` ('ms' or 'pt')."""
        if framework not in FRAMEWORKS:
            raise ValueError(f"framework must be one of {FRAMEWORKS}, got {framework!r}")
        module = importlib.import_module(f"zoo.models.{self.family}.{framework}")
        return getattr(module, self.cls)


_REGISTRY: Dict[str, ModelEntry] = {}


def register(entry: ModelEntry) -> ModelEntry:
    if entry.name in _REGISTRY:
        raise ValueError(f"model {entry.name!r} is registered twice")
    _REGISTRY[entry.name] = entry
    return entry


def get(name: str) -> ModelEntry:
    try:
        return _REGISTRY[name]
    except KeyError:
        close = difflib.get_close_matches(name, list(_REGISTRY), n=3, cutoff=0.5)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        raise UnknownModelError(f"unknown model {name!r}.{hint} `zoo list` shows the registered models.") from None


def list_models(family: Optional[str] = None) -> list:
    """Names of the registered models (of one family when given), in registration order."""
    if family is not None and family not in families():
        raise UnknownModelError(f"unknown family {family!r}; families: {', '.join(families())}")
    return [n for n, e in _REGISTRY.items() if family is None or e.family == family]


def families() -> list:
    return list(dict.fromkeys(e.family for e in _REGISTRY.values()))


def entries() -> Dict[str, ModelEntry]:
    return dict(_REGISTRY)


def build_kwargs(entry: ModelEntry, **overrides) -> dict:
    """The constructor arguments of a registered variant, with ``overrides`` (None means: keep the default)."""
    kwargs = dict(entry.kwargs, num_classes=entry.num_classes)
    kwargs.update({k: v for k, v in overrides.items() if v is not None})
    return kwargs
