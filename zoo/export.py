"""Deployment export, verified: MindIR from the MindSpore twin, ONNX from the PyTorch twin.

    zoo export MODEL --checkpoint FILE [--format mindir|onnx|air] [--input-size S] [--batch N] [--force] OUT

The twin is built from the checkpoint (any file ``zoo convert`` reads), in eval mode, and exported for one
input shape (``batch x 3 x H x W``; the model's input size unless ``--input-size``):

- **MindIR** (``mindspore.export``, the format MindSpore Lite and Ascend inference consume) from the MindSpore
  twin in GRAPH mode. Check: the file is loaded back (``mindspore.load`` + ``nn.GraphCell``) and run.
- **ONNX** (``torch.onnx.export``, the torch.export-based exporter; needs the ``onnx`` extra: onnx, onnxscript,
  onnxruntime) from the PyTorch twin. Check: the file is run with onnxruntime (CPU).
- **AIR** needs an Ascend device: MindSpore writes AIR only there, and cannot load it back to check it.

Before the file is published, the exported model's logits on a fixed random input are compared with both
twins' (the same weights): ``max|export - twin| / max(1, max|twin|)`` must be within the parity bound (1e-4,
DESIGN.md) for each. The file is written through ``zoo.files.atomic_write``: a failed export or check leaves
nothing behind, and an existing OUT is replaced only with ``--force``.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Dict, Optional, Sequence, Tuple

import numpy as np

from zoo import registry
from zoo.errors import ExportError
from zoo.parity import FWD_BOUND

FORMATS = {"mindir": ".mindir", "onnx": ".onnx", "air": ".air"}
INPUT_SEED = 0
ONNX_EXTRA = "pip install 'zoo[onnx]' (onnx, onnxscript, onnxruntime; pinned in requirements/lock.txt)"


@dataclass
class ExportResult:
    model: str
    format: str
    path: str
    input_shape: Tuple[int, ...]
    size_bytes: int = 0
    errors: Dict[str, float] = field(default_factory=dict)  # "ms" / "pt" -> max|export - twin| / max(1, max|twin|)
    verified: bool = False
    seconds: float = 0.0
    note: str = ""

    @property
    def passed(self) -> bool:
        return self.verified and all(v <= FWD_BOUND for v in self.errors.values())


def format_of(out: str, fmt: Optional[str]) -> str:
    """The format asked for (``fmt``, or OUT's suffix), checked against OUT's suffix."""
    suffix = os.path.splitext(out)[1].lower()
    by_suffix = {v: k for k, v in FORMATS.items()}.get(suffix)
    if fmt is None:
        if by_suffix is None:
            raise ExportError(f"{out}: give --format mindir|onnx|air, or an OUT ending in .mindir, .onnx or .air")
        return by_suffix
    fmt = fmt.lower()
    if fmt not in FORMATS:
        raise ExportError(f"--format {fmt}: not one of {', '.join(FORMATS)}")
    if suffix != FORMATS[fmt]:
        raise ExportError(f"{out}: a {fmt} file must end in {FORMATS[fmt]} (MindSpore and ONNX tools go by the suffix)")
    return fmt


def _check_destination(out: str, force: bool) -> None:
    from zoo.convert.io import ConversionError, check_destination
    try:
        check_destination(out, force)
    except ConversionError as err:
        raise ExportError(err.args[0]) from None


def _input(shape) -> np.ndarray:
    return np.random.default_rng(INPUT_SEED).standard_normal(shape).astype(np.float32)


def _rel(a: np.ndarray, ref: np.ndarray) -> float:
    if a.shape != ref.shape:
        raise ExportError(f"the exported model returns shape {a.shape}, the twin {ref.shape}")
    return float(np.abs(a.astype(np.float64) - ref).max()) / max(1.0, float(np.abs(ref).max()))


def _publishable_mode(path: str) -> None:
    """MindSpore writes its files read-only for the owner; give the export the usual umask-derived mode."""
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(path, 0o666 & ~mask)


def _twins(name: str, checkpoint: str, layout: str):
    """Both twins with the checkpoint's weights, in inference mode."""
    import mindspore as ms

    import zoo

    ms.set_context(mode=ms.GRAPH_MODE)
    net = zoo.create_model(name, "ms", checkpoint=checkpoint, layout=layout)
    net.set_train(False)
    pt = zoo.create_model(name, "pt", checkpoint=checkpoint, layout=layout)
    pt.eval()
    return net, pt


def _logits(net, pt, x: np.ndarray):
    """Both twins' logits on ``x``; the MindSpore twin's in PYNATIVE mode (the export compiles the GRAPH-mode
    function once more; parity holds in both modes)."""
    import mindspore as ms
    import torch

    with torch.no_grad():
        ref_pt = pt(torch.from_numpy(x)).numpy()
    mode = ms.get_context("mode")
    ms.set_context(mode=ms.PYNATIVE_MODE)
    try:
        ref_ms = net(ms.Tensor(x)).asnumpy()
    finally:
        ms.set_context(mode=mode)
    return ref_ms, ref_pt


def _export_mindir(net, x, tmp: str) -> np.ndarray:
    import mindspore as ms
    from mindspore import nn

    ms.export(net, ms.Tensor(x), file_name=tmp, file_format="MINDIR")
    if not os.path.isfile(tmp):  # MindSpore splits models over 1 GiB into <name>_graph.mindir + <name>_variables/
        stem = tmp[:-len(".mindir")]
        for extra in (stem + "_graph.mindir",):
            if os.path.exists(extra):
                os.remove(extra)
        import shutil
        shutil.rmtree(stem + "_variables", ignore_errors=True)
        raise ExportError("MindSpore wrote this model's MindIR as a graph file plus a folder of weights (models over "
                          "1 GiB); zoo export writes single files only")
    _publishable_mode(tmp)
    return nn.GraphCell(ms.load(tmp))(ms.Tensor(x)).asnumpy()


def _export_onnx(pt, x, tmp: str) -> np.ndarray:
    import contextlib
    import io
    import logging
    import warnings

    import torch
    try:
        import onnxruntime as ort
        import onnxscript  # noqa: F401  (torch's exporter needs it)
    except ImportError as err:
        raise ExportError(f"ONNX export needs the onnx extra ({err.name} is missing): {ONNX_EXTRA}") from None
    quiet = logging.getLogger("torch.onnx")
    level = quiet.level
    quiet.setLevel(logging.ERROR)  # "torchvision is not installed. Skipping torchvision::nms" and the like
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            program = torch.onnx.export(pt, (torch.from_numpy(x),), dynamo=True, input_names=["input"],
                                        output_names=["logits"], verbose=False)
    except Exception as err:  # the exporter's own errors are long; keep the first line
        raise ExportError(f"torch.onnx.export failed: {type(err).__name__}: {str(err).strip().splitlines()[0]}") \
            from err
    finally:
        quiet.setLevel(level)
    program.save(tmp, external_data=False)
    session = ort.InferenceSession(tmp, providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})[0]


def _export_air(net, x, tmp: str) -> None:
    import mindspore as ms

    ms.export(net, ms.Tensor(x), file_name=tmp, file_format="AIR")


def export(name: str, checkpoint: str, out: str, fmt: Optional[str] = None,
           input_size: Optional[Sequence[int]] = None, batch: int = 1, force: bool = False,
           layout: str = "auto") -> ExportResult:
    """Export registered model ``name`` with the weights of ``checkpoint`` to ``out``, verified (module docstring)."""
    t0 = time.perf_counter()
    entry = registry.get(name)
    fmt = format_of(out, fmt)
    if batch < 1:
        raise ExportError(f"--batch {batch}: must be at least 1")
    if not os.path.isfile(checkpoint):
        raise ExportError(f"{checkpoint}: no such checkpoint file")
    _check_destination(out, force)
    size = tuple(input_size or entry.input_size)
    if len(size) != 3:
        raise ExportError(f"input size {size}: give C x H x W (or H x W, or one side)")
    shape = (batch, *size)
    if fmt == "air":
        import mindspore as ms
        device = ms.get_context("device_target")
        if device != "Ascend":
            raise ExportError(f"AIR needs Ascend: MindSpore writes AIR only on an Ascend device, and this MindSpore "
                              f"runs on {device}. Export MindIR here (--format mindir; MindSpore Lite and Ascend "
                              "inference read it), or run this command on an Ascend machine")
    if fmt == "onnx":
        import importlib.util
        missing = [m for m in ("onnx", "onnxscript", "onnxruntime") if importlib.util.find_spec(m) is None]
        if missing:
            raise ExportError(f"ONNX export needs the onnx extra ({', '.join(missing)} missing): {ONNX_EXTRA}")

    import mindspore as ms

    mode = ms.get_context("mode")
    try:
        res = _export(name, checkpoint, out, fmt, shape, layout)
    finally:
        ms.set_context(mode=mode)  # the caller's mode, as it was
    res.seconds = time.perf_counter() - t0
    return res


def _export(name: str, checkpoint: str, out: str, fmt: str, shape, layout: str) -> ExportResult:
    from zoo.files import atomic_write

    net, pt = _twins(name, checkpoint, layout)
    x = _input(shape)
    ref_ms, ref_pt = _logits(net, pt, x)
    res = ExportResult(name, fmt, out, shape)

    def write(tmp: str) -> None:
        if fmt == "air":
            _export_air(net, x, tmp)
            res.note = "AIR cannot be loaded back by MindSpore: not verified (check it with ATC / ACL)"
            return
        got = _export_mindir(net, x, tmp) if fmt == "mindir" else _export_onnx(pt, x, tmp)
        res.errors = {"ms": _rel(got, ref_ms), "pt": _rel(got, ref_pt)}
        res.verified = True
        if not res.passed:
            worst = max(res.errors, key=res.errors.get)
            raise ExportError(f"the exported {fmt} model's logits differ from the {worst} twin's by "
                              f"{res.errors[worst]:.1e} (bound {FWD_BOUND:.0e}); nothing was written")
        res.size_bytes = os.path.getsize(tmp)

    atomic_write(out, write)
    return res


# --- reporting ------------------------------------------------------------------------------

def _size(n: int) -> str:
    return f"{n / 2 ** 20:.1f} MB" if n >= 2 ** 20 else f"{n / 1024:.0f} kB"


def format_table(results) -> str:
    head = ("model", "format", "input", "batch", "file", "size", "vs ms twin", "vs pt twin", "time", "verdict")
    rows = []
    for r in results:
        sci = lambda k: f"{r.errors[k]:.1e}" if k in r.errors else "-"  # noqa: E731
        verdict = "ok" if r.passed else ("written, not verified" if not r.verified else "FAIL")
        rows.append((r.model, r.format, "x".join(map(str, r.input_shape[2:])), str(r.input_shape[0]), r.path,
                     _size(r.size_bytes) if r.size_bytes else "-", sci("ms"), sci("pt"), f"{r.seconds:.0f}s", verdict))
    widths = [max(len(str(x)) for x in col) for col in zip(head, *rows)]
    fmt = "  ".join("{:<%d}" % w for w in widths)
    return "\n".join([fmt.format(*head), fmt.format(*("-" * w for w in widths))] + [fmt.format(*row) for row in rows])


LEGEND = f"""\
vs ms twin / vs pt twin: max|export - twin| / max(1, max|twin|) on the logits of one fixed random input: the
  exported file (MindIR run by mindspore.load + nn.GraphCell, ONNX by onnxruntime on the CPU) against each twin
  built from the same checkpoint; bound {FWD_BOUND:.0e}, as for parity."""
