"""Strict conversion between checkpoints, the PyTorch twin and the MindSpore twin.

Everything passes through one canonical form: a complete state dict of the zoo's PyTorch twin as
numpy arrays ("zoo PyTorch names"). MindSpore names are derived from it by module type
(``names.name_map``). Loading is strict: every tensor of the source is used, every parameter of the
target is filled, every shape matches; otherwise ``ConversionError`` lists the missing, unexpected
and mismatched names.
"""
from __future__ import annotations

import logging
import os
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Optional, Tuple

import numpy as np

from zoo import registry
from zoo.convert import names
from zoo.convert.io import (Checkpoint, ConversionError, check_destination, file_format, read_checkpoint,
                            write_checkpoint)
from zoo.convert.layouts import get_importer
from zoo.registry import build_kwargs

log = logging.getLogger("zoo")


# --- the PyTorch twin's specification, without allocating it ----------------------------------

@dataclass
class Spec:
    """Names and shapes of a model's state dict, and its MindSpore names."""

    shapes: "OrderedDict[str, Tuple[int, ...]]"  # every PyTorch state_dict entry
    ms_names: "OrderedDict[str, str]"  # PyTorch name -> MindSpore name (PyTorch-only entries excluded)

    @property
    def ms_to_pt(self):
        """MindSpore name -> PyTorch name (of the first holder, for a tensor several modules share)."""
        out = OrderedDict()
        for p, m in self.ms_names.items():
            out.setdefault(m, p)
        return out

    @property
    def aliases(self) -> "OrderedDict[str, str]":
        """PyTorch names of shared tensors beyond their first holder -> that holder's PyTorch name."""
        m2p = self.ms_to_pt
        return OrderedDict((p, m2p[m]) for p, m in self.ms_names.items() if m2p[m] != p)


def spec(entry: registry.ModelEntry, **overrides) -> Spec:
    """The PyTorch twin's state-dict shapes and MindSpore names, built on the meta device (no memory)."""
    import torch

    with torch.device("meta"):
        model = entry.builder("pt")(**build_kwargs(entry, **overrides))
    return spec_of(model)


def spec_of(model) -> Spec:
    """The Spec of a built PyTorch module."""
    shapes = OrderedDict((k, tuple(v.shape)) for k, v in model.state_dict().items())
    return Spec(shapes, names.name_map(model))


# --- matching -----------------------------------------------------------------------------------

@dataclass
class Mismatch:
    missing: List[str] = field(default_factory=list)
    unexpected: List[str] = field(default_factory=list)
    shapes: List[Tuple[str, tuple, tuple]] = field(default_factory=list)  # (name, file shape, model shape)

    def __bool__(self):
        return bool(self.missing or self.unexpected or self.shapes)

    @property
    def size(self):
        return len(self.missing) + len(self.unexpected) + len(self.shapes)

    def describe(self, limit: int = 8) -> str:
        def cut(items):
            items = list(items)
            return ", ".join(items[:limit]) + (f", ... ({len(items) - limit} more)" if len(items) > limit else "")
        lines = []
        if self.missing:
            lines.append(f"  missing from the checkpoint ({len(self.missing)}): {cut(self.missing)}")
        if self.unexpected:
            lines.append(f"  not in the model ({len(self.unexpected)}): {cut(self.unexpected)}")
        if self.shapes:
            lines.append(f"  shape mismatches ({len(self.shapes)}): " +
                         cut(f"{n} {tuple(a)} in the file vs {tuple(b)} in the model" for n, a, b in self.shapes))
        return "\n".join(lines)


def compare(state: Dict[str, np.ndarray], shapes: Dict[str, tuple], check_shapes: bool = True,
            optional: Iterable[str] = ()) -> Mismatch:
    """Differences between a state (PyTorch names) and a model's shapes; PyTorch-only buffers are optional."""
    optional = set(optional)
    mm = Mismatch()
    mm.missing = [k for k in shapes if k not in state and not names.is_pt_only(k) and k not in optional]
    mm.unexpected = [k for k in state if k not in shapes and not names.is_pt_only(k)]
    if check_shapes:
        mm.shapes = [(k, tuple(v.shape), tuple(shapes[k])) for k, v in state.items()
                     if k in shapes and not names.is_pt_only(k) and tuple(v.shape) != tuple(shapes[k])]
    return mm


# --- loading a checkpoint into canonical form ---------------------------------------------------

@dataclass
class Loaded:
    """A checkpoint in zoo PyTorch names, ready for either twin."""

    state: "OrderedDict[str, np.ndarray]"
    kwargs: dict  # constructor arguments the weights require (num_classes, inferred architecture)
    spec: Spec
    layout: str
    source: str
    notes: List[str] = field(default_factory=list)
    keep_init: Tuple[str, ...] = ()  # parameters the model keeps from its initialisation (a dropped head)
    classes: Optional[List[str]] = None  # the classifier's label names, where the checkpoint carries them
    file_classes: Optional[int] = None  # the number of outputs of the checkpoint's own classifier


def _candidates(entry, ckpt: Checkpoint, layout: str, spec_for):
    """(layout name, tensors in zoo PyTorch names) for each way the checkpoint could be read."""
    if layout in ("auto", "zoo"):
        yield "zoo", ckpt.tensors
        spec_ = spec_for(ckpt.tensors)
        ms_to_pt = spec_.ms_to_pt
        if any(k in ms_to_pt and ms_to_pt[k] != k for k in ckpt.tensors):
            yield "zoo (MindSpore names)", _expand_aliases(
                OrderedDict((ms_to_pt.get(k, k), v) for k, v in ckpt.tensors.items()), spec_)
    for name in entry.layouts:
        if layout in ("auto", name):
            yield name, get_importer(entry.family, name)(ckpt.tensors)
    if layout not in ("auto", "zoo") and layout not in entry.layouts:
        known = ", ".join(("auto", "zoo") + entry.layouts)
        raise ConversionError(f"layout {layout!r} does not apply to {entry.name}; choose from: {known}")


def _expand_aliases(state, spec_: Spec):
    """Add the copies of shared tensors a state stores once (MindSpore names) under every PyTorch holder."""
    for alias, owner in spec_.aliases.items():
        if alias not in state and owner in state:
            state[alias] = state[owner]
    return state


def check_aliases(state: Dict[str, np.ndarray], spec_: Spec, source: str = "the checkpoint") -> None:
    """Refuse a state whose copies of one shared tensor differ (a model holds them as one tensor)."""
    bad = [f"{a} != {o}" for a, o in spec_.aliases.items()
           if a in state and o in state and not np.array_equal(state[a], state[o])]
    if bad:
        raise ConversionError(f"{source}: these tensors are one shared tensor in the model, but the copies in the "
                              f"file differ ({len(bad)}): {', '.join(bad[:4])}" + (" ..." if len(bad) > 4 else ""))


def load_state(model: str, source, layout: str = "auto", num_classes: Optional[int] = None, **kwargs) -> Loaded:
    """Read ``source`` (a path or a ``Checkpoint``) as weights of ``model`` in zoo PyTorch names.

    ``num_classes=None`` takes the number of classes from the checkpoint's classifier; a different
    number drops the classifier (it keeps its initialisation, as for fine-tuning) with a note.
    Architecture arguments the weights determine (e.g. a gate kernel size) are read from them.
    """
    entry = registry.get(model)
    ckpt = source if isinstance(source, Checkpoint) else read_checkpoint(source)
    notes = list(ckpt.notes)
    base = spec(entry, **kwargs)

    def spec_for(tensors):  # architecture arguments the weights determine can change the names (block counts)
        inferred = {k: v for k, v in (entry.infer_kwargs(tensors) if entry.infer_kwargs else {}).items()
                    if k not in kwargs and v != entry.kwargs.get(k)}
        return spec(entry, **{**kwargs, **inferred}) if inferred else base

    tried = []
    for name, tensors in _candidates(entry, ckpt, layout, spec_for):
        mm = compare(tensors, spec_for(tensors).shapes, check_shapes=False)
        tried.append((name, tensors, mm))
        if not mm:
            break
    else:
        name, tensors, mm = min(tried, key=lambda t: t[2].size)
        hint = _suggest(entry, ckpt)
        raise ConversionError(
            f"{ckpt.path} does not fit {entry.name} (tried layouts: {', '.join(t[0] for t in tried)}; "
            f"closest: {name}):\n{mm.describe()}" + (f"\n  the checkpoint's shapes fit: {hint}" if hint else ""))
    state = OrderedDict(tensors)

    build = {}
    if entry.infer_kwargs is not None:
        for k, v in entry.infer_kwargs(state).items():
            current = kwargs.get(k, entry.kwargs.get(k))
            if k in kwargs and kwargs[k] != v:
                raise ConversionError(f"{ckpt.path}: the weights have {k}={v}, but {k}={kwargs[k]} was requested")
            if current != v:
                notes.append(f"the weights have {k}={v} ({entry.name} defaults to {current}); building with {k}={v}")
            build[k] = v

    keep_init: Tuple[str, ...] = ()
    head_w, head_b = f"{entry.classifier}.weight", f"{entry.classifier}.bias"
    file_classes = state[head_w].shape[0] if head_w in state else None
    if num_classes is None:
        num_classes = file_classes if file_classes is not None else entry.num_classes
        if file_classes is not None and file_classes != entry.num_classes:
            notes.append(f"the checkpoint has {file_classes} classes; building with num_classes={file_classes}")
    elif file_classes is not None and num_classes != file_classes:
        keep_init = tuple(k for k in (head_w, head_b) if k in state)
        for k in keep_init:
            del state[k]
        msg = (f"classifier '{entry.classifier}' dropped: the checkpoint has {file_classes} classes and the model "
               f"was built with num_classes={num_classes}; the new classifier keeps its initialisation")
        notes.append(msg)
        log.warning(msg)
    build["num_classes"] = num_classes

    final = spec(entry, **{**kwargs, **build})
    mm = compare(state, final.shapes, optional=keep_init)
    if mm:
        hint = _suggest(entry, ckpt)
        raise ConversionError(f"{ckpt.path} does not fit {entry.name} (layout {name}):\n{mm.describe()}"
                              + (f"\n  the checkpoint's shapes fit: {hint}" if hint else ""))
    for k, shape in final.shapes.items():  # restore PyTorch-only counters the file did not carry
        if names.is_pt_only(k) and k not in state:
            state[k] = np.zeros(shape, dtype=np.int64)
    state = OrderedDict((k, state[k]) for k in final.shapes if k in state)
    check_aliases(state, final, ckpt.path)
    classes = ckpt.classes
    if classes is not None and file_classes is not None and len(classes) != file_classes:
        notes.append(f"ignored the file's class list: {len(classes)} names for a {file_classes}-class classifier")
        classes = None
    if keep_init:
        classes = None  # the classifier was dropped: its label names went with it
    return Loaded(state, build, final, name, ckpt.path, notes, keep_init, classes, file_classes)


_BUFFERS = ("running_mean", "running_var", "num_batches_tracked", "moving_mean", "moving_variance")


def _param_count(tensors) -> int:
    return int(sum(np.asarray(v).size for k, v in tensors.items() if not k.endswith(_BUFFERS)))


def _suggest(entry, ckpt: Checkpoint) -> str:
    """Registered models (of any family, any layout they import) whose state dict the checkpoint fits exactly,
    names and shapes, with the number of classes its classifier has. Cheap filters first (the classifier's
    name, the parameter count against the published one), so only plausible models are built (on meta)."""
    fits = []
    count = _param_count(ckpt.tensors)
    for other in registry.list_models():
        if other == entry.name:
            continue
        o = registry.get(other)
        if o.published.params and not 0.5 * o.published.params <= count <= 1.5 * o.published.params:
            continue
        for layout, tensors in _candidates_quiet(o, ckpt, None):
            head = tensors.get(f"{o.classifier}.weight")
            if head is None or getattr(head, "ndim", 0) < 1:
                continue
            extra = {}
            if o.infer_kwargs is not None:
                try:
                    extra = o.infer_kwargs(tensors)
                except Exception:
                    continue
            classes = int(head.shape[0])
            try:
                sp = spec(o, num_classes=classes, **extra)
            except Exception:  # a model that cannot be built with these arguments
                continue
            if not compare(tensors, sp.shapes):
                shown = f"{other} (num_classes={classes})" if classes != o.num_classes else other
                fits.append(shown + ("" if layout.startswith("zoo") else f", layout {layout}"))
                break
    return ", ".join(fits)


_MS_SUFFIXES = (".gamma", ".beta", ".moving_mean", ".moving_variance")


def _candidates_quiet(entry, ckpt: Checkpoint, spec_: Optional[Spec]):
    """The ways a suggestion reads the tensors as ``entry``'s: the zoo's names (MindSpore's only if the file
    uses them), then each layout the family imports; an importer that cannot read them yields nothing."""
    yield "zoo", ckpt.tensors
    if any(k.endswith(_MS_SUFFIXES) for k in ckpt.tensors):
        sp = spec_ or spec(entry)
        yield "zoo (MindSpore names)", _expand_aliases(
            OrderedDict((sp.ms_to_pt.get(k, k), v) for k, v in ckpt.tensors.items()), sp)
    for name in entry.layouts:
        try:
            yield name, get_importer(entry.family, name)(ckpt.tensors)
        except Exception:
            continue


# --- framework state <-> canonical ----------------------------------------------------------------

def to_ms(state: Dict[str, np.ndarray], spec_: Spec) -> "OrderedDict[str, np.ndarray]":
    """Canonical (PyTorch-named) state -> MindSpore parameter dict (a shared tensor once; its copies must agree)."""
    check_aliases(state, spec_)
    out = OrderedDict()
    for k, v in state.items():
        if not names.is_pt_only(k):
            out.setdefault(spec_.ms_names[k], v)
    return out


def from_ms(params: Dict[str, np.ndarray], spec_: Spec) -> "OrderedDict[str, np.ndarray]":
    """MindSpore parameter dict -> canonical state (PyTorch-only counters restored as 0)."""
    m2p = spec_.ms_to_pt
    unknown = [k for k in params if k not in m2p]
    if unknown:
        raise ConversionError(f"MindSpore parameters with no PyTorch counterpart: {', '.join(unknown[:8])}")
    state = _expand_aliases(OrderedDict((m2p[k], v) for k, v in params.items()), spec_)
    out = OrderedDict()
    for k, shape in spec_.shapes.items():
        if k in state:
            out[k] = state[k]
        elif names.is_pt_only(k):
            out[k] = np.zeros(shape, dtype=np.int64)
    return out


def pt_state(model) -> "OrderedDict[str, np.ndarray]":
    return OrderedDict((k, v.detach().cpu().numpy().copy()) for k, v in model.state_dict().items())


def ms_params(net) -> "OrderedDict[str, np.ndarray]":
    return OrderedDict((p.name, p.asnumpy().copy()) for _, p in net.parameters_and_names())


def load_into_pt(model, state: Dict[str, np.ndarray], keep_init: Iterable[str] = ()) -> None:
    """Load a canonical state into a PyTorch module strictly (``keep_init`` may be absent)."""
    import torch

    target = model.state_dict()
    mm = compare(state, {k: tuple(v.shape) for k, v in target.items()}, optional=keep_init)
    mm.missing += [k for k in target if names.is_pt_only(k) and k not in state and k not in mm.missing]
    if mm:
        raise ConversionError(f"weights do not fit the PyTorch model:\n{mm.describe()}")
    full = OrderedDict((k, v) for k, v in target.items())
    for k, v in state.items():
        full[k] = torch.from_numpy(np.ascontiguousarray(v)).to(target[k].dtype)
    model.load_state_dict(full, strict=True)


def load_into_ms(net, params: Dict[str, np.ndarray], keep_init: Iterable[str] = ()) -> None:
    """Load a MindSpore parameter dict into a cell strictly (``keep_init``: MindSpore names that may be absent)."""
    import mindspore as ms

    target = OrderedDict((p.name, p) for _, p in net.parameters_and_names())
    mm = compare(params, {k: tuple(p.shape) for k, p in target.items()}, optional=keep_init)
    if mm:
        raise ConversionError(f"weights do not fit the MindSpore model:\n{mm.describe()}")
    for k, v in params.items():
        p = target[k]
        p.set_data(ms.Tensor(np.ascontiguousarray(v), dtype=p.dtype))


def load_into(model, framework: str, loaded: Loaded) -> None:
    if framework == "pt":
        load_into_pt(model, loaded.state, loaded.keep_init)
    else:
        keep = tuple(loaded.spec.ms_names[k] for k in loaded.keep_init)
        load_into_ms(model, to_ms(loaded.state, loaded.spec), keep)


# --- file conversion --------------------------------------------------------------------------

def target_framework(dst: str, to: Optional[str]) -> str:
    fmt = file_format(dst)
    implied = {"ms": "ms", "torch": "pt"}.get(fmt)
    if to is None:
        if implied is None:
            raise ConversionError(f"{dst}: a .safetensors file can hold either framework's names; "
                                  "pass --to ms or --to pt")
        return implied
    if to not in registry.FRAMEWORKS:
        raise ConversionError(f"--to must be 'ms' or 'pt', got {to!r}")
    if implied is not None and implied != to:
        raise ConversionError(f"{dst}: the suffix means {'MindSpore' if implied == 'ms' else 'PyTorch'}, "
                              f"but --to {to} was given")
    return to


def convert_file(model: str, src: str, dst: str, to: Optional[str] = None, layout: str = "auto",
                 force: bool = False, allow_non_finite: bool = False, to_layout: Optional[str] = None,
                 **kwargs) -> Loaded:
    """Convert ``src`` (any supported format and layout) into ``dst`` for ``to`` ('ms' or 'pt').

    Checks the destination before reading anything, verifies that the result fills every parameter
    of the target twin, casts every tensor to the dtype the model uses (with a note), refuses NaN/inf
    values unless ``allow_non_finite``, and writes atomically (exclusively unless ``force``). The class
    list travels along where the source carries one. Returns what was loaded (notes included).
    ``to_layout`` writes an external layout of the model's family instead (a PyTorch file the reference
    code loads, e.g. attention-transfer's ``model.pt7``).
    """
    from zoo.files import clean_stale_partials, disk_full, free_space

    if to_layout is not None:
        return _export_file(model, src, dst, to_layout, layout, force, allow_non_finite, **kwargs)
    framework = target_framework(dst, to)
    check_destination(dst, force)
    if os.path.abspath(src) == os.path.abspath(dst):
        raise ConversionError("the source and the destination are the same file")
    folder = os.path.dirname(os.path.abspath(dst))
    clean_stale_partials(folder)
    loaded = load_state(model, src, layout=layout, **kwargs)
    entry = registry.get(model)
    cast_to_model_dtypes(entry, loaded, {**kwargs, **loaded.kwargs})
    if not allow_non_finite:
        refuse_non_finite_tensors(loaded)
    if framework == "ms":
        params = to_ms(loaded.state, loaded.spec)
        net = entry.builder("ms")(**build_kwargs(entry, **{**kwargs, **loaded.kwargs}))
        load_into_ms(net, params)  # proves every MindSpore parameter is filled with the right shape
        out = params
    else:
        out = loaded.state
    need = int(sum(v.nbytes for v in out.values()))
    free = free_space(folder)
    if free is not None and free < need:
        raise ConversionError(disk_full(dst, need, folder).message)
    write_checkpoint(out, dst, framework, force=force, metadata={"model": model}, classes=loaded.classes)
    return loaded


def _export_file(model: str, src: str, dst: str, to_layout: str, layout: str, force: bool, allow_non_finite: bool,
                 **kwargs) -> Loaded:
    from zoo.convert.io import TORCH_SUFFIXES
    from zoo.convert.layouts import get_exporter
    from zoo.errors import WriteError
    from zoo.files import atomic_write, clean_stale_partials

    entry = registry.get(model)
    export = get_exporter(entry.family, to_layout)
    if not dst.lower().endswith(TORCH_SUFFIXES):
        raise ConversionError(f"{dst}: layout {to_layout!r} is a PyTorch file; give a {', '.join(TORCH_SUFFIXES)} name")
    check_destination(dst, force)
    if os.path.abspath(src) == os.path.abspath(dst):
        raise ConversionError("the source and the destination are the same file")
    clean_stale_partials(os.path.dirname(os.path.abspath(dst)))
    loaded = load_state(model, src, layout=layout, **kwargs)
    cast_to_model_dtypes(entry, loaded, {**kwargs, **loaded.kwargs})
    if not allow_non_finite:
        refuse_non_finite_tensors(loaded)
    obj = export(entry, loaded.state)

    def write(tmp):
        import torch
        torch.save(obj, tmp)

    try:
        atomic_write(dst, write, overwrite=force)
    except WriteError as err:
        raise ConversionError(err.message) from None
    loaded.layout = f"{loaded.layout} -> {to_layout}"
    return loaded


def model_dtypes(entry, build: dict) -> Dict[str, np.dtype]:
    """The numpy dtype of every state-dict entry of the PyTorch twin (built on the meta device)."""
    import torch

    with torch.device("meta"):
        m = entry.builder("pt")(**build_kwargs(entry, **build))
    return {k: torch.empty(0, dtype=v.dtype).numpy().dtype for k, v in m.state_dict().items()}


def cast_to_model_dtypes(entry, loaded: Loaded, build: dict) -> None:
    """Cast the state to the dtypes the model uses (a float16 or int64 tensor in a float32 model), with a note."""
    dtypes = model_dtypes(entry, build)
    cast = {}
    for k, v in loaded.state.items():
        want = dtypes.get(k)
        if want is not None and v.dtype != want:
            cast.setdefault(f"{v.dtype} -> {want}", []).append(k)
            loaded.state[k] = v.astype(want)
    for change, keys in cast.items():
        shown = ", ".join(keys[:3]) + (f", ... ({len(keys) - 3} more)" if len(keys) > 3 else "")
        loaded.notes.append(f"cast {len(keys)} tensor(s) {change}, the model's dtype: {shown}")


def refuse_non_finite_tensors(loaded: Loaded) -> None:
    bad = []
    for k, v in loaded.state.items():
        if v.dtype.kind in "fc":
            n = int(v.size - np.isfinite(v).sum())
            if n:
                bad.append(f"{k} ({n} of {v.size} values)")
    if bad:
        shown = ", ".join(bad[:5]) + (f", ... ({len(bad) - 5} more tensors)" if len(bad) > 5 else "")
        raise ConversionError(f"{loaded.source}: {len(bad)} tensor(s) hold NaN or inf values: {shown}. A model with "
                              "them computes NaN; if you want the file converted anyway, pass --allow-non-finite")
