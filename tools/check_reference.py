#!/usr/bin/env python
"""Prove the twins against a reference implementation's own code and checkpoint layout.

Builds each model with the reference repository's code (from a checkout you point at), gives it
generic random weights, saves a checkpoint exactly as the reference training script does, converts
it with ``zoo convert`` to a MindSpore ``.ckpt``, loads that into both twins (and the original file
into the PyTorch twin), and compares every output with the reference model's, in eval mode.

    python tools/check_reference.py triplet --repo /path/to/triplet-attention [--speed]
    python tools/check_reference.py van --repo /path/to/VAN-Classification
    python tools/check_reference.py halonet --repo /path/to/pytorch-image-models [--mindcv /path/to/mindcv]
    python tools/check_reference.py gmm --repo /path/to/Gaussian-Mixture-Mask-Attention --deps /tmp/gmm_ref_deps
    python tools/check_reference.py at --repo /path/to/attention-transfer [--functional-zoo /path/to/functional-zoo]

``gmm``: the repo's own ``models.create_model`` (main.py's arguments: ``--sd 0.1``, ``--num_kernals 5``,
``--is_GMM``) builds every README model and ``cait`` at 32 px (10 classes) and 64 px (200 classes); one AdamW step
with the repo's scheduler, then ``checkpoint.pth`` as main.py saves it and the bare final state dict; both go
through ``zoo convert`` into both twins, and the converted file back to ``.pth`` loads strictly into the
reference's model. einops (which the models import) comes from ``--deps``, a directory you install it into
outside the project; timm is stubbed when it does not import.

``at``: the reference's functions with their params dicts (tools/check_reference_at.py).

``halonet``: timm's own model code (a checkout, or the directory holding an installed ``timm``;
torchvision is stubbed when it does not import, as next to the CPU torch build) builds each variant;
its state dict is saved as ``.pth`` and ``.safetensors``, converted with ``zoo convert`` and loaded
into both twins. Then mindcv's ``halonet_50t`` (installed, or ``--mindcv`` checkout) is given the
same kind of weights, saved as mindcv's trainer saves them and imported; its own function is
computed on CPU by replacing its ``nn.Unfold`` (ExtractImagePatches: no CPU kernel) with an
equivalent in TensorFlow's patch order, and compared with both the mindcv-compatible twin
(``halonet_50t``) and the timm-layout twin (``halonet50ts``, against timm's code on those weights).

Nothing from the reference is copied into the zoo; this script only imports it from ``--repo``.
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import tempfile
import types

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import zoo  # noqa: E402,F401  (before any MindSpore import: quiets its log, GLOG_v=3)


# --speed: the PyTorch twin's inference throughput against the reference's, same weights (issue 15: >= 0.95x)
SPEED = {"on": False, "repeats": 10, "batch": 8, "rows": []}


def _speed(name: str, ref, twin, size: int) -> None:
    """Time the reference model and the PyTorch twin (both eval, no autograd, same weights) alternately on one
    batch, as ``zoo bench`` times the twins; record twin / reference throughput."""
    if not SPEED["on"]:
        return
    import statistics

    import torch

    from zoo.bench.speed import pair_ratio, paired_times

    x = torch.from_numpy(np.random.default_rng(2).standard_normal((SPEED["batch"], 3, size, size)).astype(np.float32))
    ref.eval()
    twin.eval()

    def call(m):
        def run():
            with torch.no_grad():
                return m(x)
        return run

    times = paired_times({"ref": call(ref), "twin": call(twin)}, SPEED["repeats"], warmup=1)
    b = SPEED["batch"]
    SPEED["rows"].append((name, size, b / statistics.median(times["ref"]), b / statistics.median(times["twin"]),
                          pair_ratio(times["ref"], times["twin"])))


def _print_speed() -> None:
    if not SPEED["rows"]:
        return
    import torch

    print(f"\nPyTorch twin vs the reference's code, inference, batch {SPEED['batch']}, {torch.get_num_threads()} "
          f"threads, {SPEED['repeats']} alternating rounds (ratio: the median of per-round throughput ratios)")
    print(f"{'model':<24} {'px':>4} {'reference img/s':>16} {'twin img/s':>11} {'twin/ref':>9}")
    for name, size, r, t, ratio in SPEED["rows"]:
        print(f"{name:<24} {size:>4} {r:>16.2f} {t:>11.2f} {ratio:>9.2f}")


def _load_triplet_reference(repo: str, kernel_size: int):
    """The reference's MODELS package, with the gate kernel line set to ``kernel_size``.

    The published k=3 models were trained with this line set to 3 (see the spec); the code
    hard-codes 7.
    """
    pkg = types.ModuleType("ta_ref")
    pkg.__path__ = [os.path.join(repo, "MODELS")]
    sys.modules["ta_ref"] = pkg
    mods = {}
    for name in ("triplet_attention", "resnet", "mobilenet"):
        path = os.path.join(repo, "MODELS", f"{name}.py")
        src = open(path).read()
        if name == "triplet_attention":
            if "kernel_size = 7" not in src:
                raise SystemExit(f"{path}: the line 'kernel_size = 7' was not found; "
                                 "is this the triplet-attention repo?")
            src = src.replace("kernel_size = 7", f"kernel_size = {kernel_size}")
        spec = importlib.util.spec_from_loader(f"ta_ref.{name}", loader=None)
        mod = importlib.util.module_from_spec(spec)
        mod.__package__ = "ta_ref"
        sys.modules[f"ta_ref.{name}"] = mod
        exec(compile(src, path, "exec"), mod.__dict__)
        mods[name] = mod
    return mods


TRIPLET = {  # zoo name -> (builder, kernel size, input size)
    "triplet_resnet18": (lambda m: m["resnet"].ResidualNet("ImageNet", 18, 1000, "TripletAttention"), 7, 224),
    "triplet_resnet18_k3": (lambda m: m["resnet"].ResidualNet("ImageNet", 18, 1000, "TripletAttention"), 3, 224),
    "triplet_resnet34": (lambda m: m["resnet"].ResidualNet("ImageNet", 34, 1000, "TripletAttention"), 7, 224),
    "triplet_resnet50": (lambda m: m["resnet"].ResidualNet("ImageNet", 50, 1000, "TripletAttention"), 7, 224),
    "triplet_resnet50_k3": (lambda m: m["resnet"].ResidualNet("ImageNet", 50, 1000, "TripletAttention"), 3, 224),
    "triplet_resnet101": (lambda m: m["resnet"].ResidualNet("ImageNet", 101, 1000, "TripletAttention"), 7, 224),
    "triplet_mobilenetv2": (lambda m: m["mobilenet"].triplet_attention_mobilenet_v2(), 7, 224),
    "triplet_mobilenetv2_k3": (lambda m: m["mobilenet"].triplet_attention_mobilenet_v2(), 3, 224),
    "triplet_resnet18_cifar": (lambda m: m["resnet"].ResidualNet("CIFAR10", 18, 10, "TripletAttention"), 7, 32),
    "triplet_resnet50_cifar": (lambda m: m["resnet"].ResidualNet("CIFAR10", 50, 10, "TripletAttention"), 7, 32),
}


def check_triplet(repo: str, names) -> bool:
    import mindspore as ms
    import torch

    from zoo.convert import convert_file
    from zoo.parity import randomize_

    ok_all = True
    print(f"{'model':<24} {'pt (official file)':>18} {'pt (converted)':>15} {'ms pynative':>12} "
          f"{'ms graph':>10}  notes")
    for name in names:
        build, k, size = TRIPLET[name]
        ref = build(_load_triplet_reference(repo, k))
        torch.manual_seed(0)
        randomize_(ref, 0, (8, 3, size, size))
        ref.eval()
        x = np.random.default_rng(1).standard_normal((2, 3, size, size)).astype(np.float32)
        with torch.no_grad():
            want = ref(torch.from_numpy(x)).numpy()
        scale = max(1.0, float(np.abs(want).max()))
        with tempfile.TemporaryDirectory() as d:
            # what train_imagenet.py's save_checkpoint writes for a DataParallel model
            wrapped = torch.nn.DataParallel(ref)
            src = os.path.join(d, f"TA_{name}_model_best.pth.tar")
            torch.save({"epoch": 100, "arch": "resnet", "state_dict": wrapped.state_dict(),
                        "best_prec1": torch.tensor(70.0), "optimizer": {"state": {}, "param_groups": []}}, src)
            dst = os.path.join(d, f"{name}.ckpt")
            loaded = convert_file(name, src, dst)
            errs = []
            for path in (src, dst):
                pt = zoo.create_model(name, "pt", checkpoint=path).eval()
                with torch.no_grad():
                    errs.append(float(np.abs(pt(torch.from_numpy(x)).numpy() - want).max()) / scale)
            _speed(name, ref, pt, size)
            net = zoo.create_model(name, "ms", checkpoint=dst)
            net.set_train(False)
            for mode in (ms.PYNATIVE_MODE, ms.GRAPH_MODE):
                ms.set_context(mode=mode)
                errs.append(float(np.abs(net(ms.Tensor(x)).asnumpy() - want).max()) / scale)
        ok = all(e <= 1e-4 for e in errs)
        ok_all &= ok
        print(f"{name:<24} {errs[0]:>18.1e} {errs[1]:>15.1e} {errs[2]:>12.1e} {errs[3]:>10.1e}  "
              f"{'ok' if ok else 'FAIL'}; layout {loaded.layout}")
    return ok_all


# --- VAN ---------------------------------------------------------------------------------------

def _timm_stubs() -> dict:
    """Minimal stand-ins for the few timm symbols models/van.py imports (timm needs torchvision, which
    does not import next to the CPU torch here). Only used when timm itself cannot be imported."""
    import torch

    from zoo.nn.pt import DropPath

    def to_2tuple(x):
        return tuple(x) if isinstance(x, (tuple, list)) else (x, x)

    def _cfg(url="", **kwargs):  # timm's vision_transformer._cfg: what the reference attaches as default_cfg
        return {"url": url, "num_classes": 1000, "input_size": (3, 224, 224), "pool_size": None,
                "crop_pct": 0.9, "interpolation": "bicubic", "mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5),
                "first_conv": "patch_embed.proj", "classifier": "head", **kwargs}

    mods = {name: types.ModuleType(name) for name in
            ("timm", "timm.models", "timm.models.layers", "timm.models.registry", "timm.models.vision_transformer")}
    mods["timm.models.layers"].DropPath = DropPath
    mods["timm.models.layers"].to_2tuple = to_2tuple
    mods["timm.models.layers"].trunc_normal_ = torch.nn.init.trunc_normal_
    mods["timm.models.registry"].register_model = lambda fn: fn
    mods["timm.models.vision_transformer"]._cfg = _cfg
    return mods


def _load_van_reference(repo: str):
    """The reference's models/van.py as a module (with stubbed timm imports when timm is unavailable)."""
    path = os.path.join(repo, "models", "van.py")
    if not os.path.isfile(path):
        raise SystemExit(f"{path}: not found; is {repo} a VAN-Classification checkout?")
    try:
        import timm.models.layers  # noqa: F401
        import timm.models.registry  # noqa: F401
        import timm.models.vision_transformer  # noqa: F401
        stubbed = False
    except Exception:  # not installed, or fails to import (torchvision)
        for name in [n for n in sys.modules if n == "timm" or n.startswith("timm.")]:
            del sys.modules[name]
        sys.modules.update(_timm_stubs())
        stubbed = True
    spec = importlib.util.spec_from_loader("van_ref", loader=None)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["van_ref"] = mod
    exec(compile(open(path).read(), path, "exec"), mod.__dict__)
    return mod, stubbed


VAN = ("van_b0", "van_b1", "van_b2", "van_b3", "van_b4", "van_b5", "van_b6")


def check_van(repo: str, names, size=None) -> bool:
    """Reference van_b* with generic weights -> timm CheckpointSaver file -> `zoo convert` -> both twins."""
    import argparse as ap
    import contextlib
    import io
    import re

    import mindspore as ms
    import torch

    from zoo import cli
    from zoo.bench.flops import count_gmacs
    from zoo.parity import randomize_

    ref_mod, stubbed = _load_van_reference(repo)
    if stubbed:
        print("timm is not importable: models/van.py runs with stand-ins for DropPath, to_2tuple, trunc_normal_, "
              "register_model and _cfg")
    ok_all = True
    print(f"{'model':<8} {'input':>5} {'params (ref)':>13} {'GMACs (ref)':>11} {'pt (official file)':>18} "
          f"{'pt (converted)':>15} {'ms pynative':>12} {'ms graph':>10}  notes")
    for name in names:
        px = size or (224 if name in ("van_b0", "van_b1", "van_b2", "van_b3") else 64)
        torch.manual_seed(0)
        ref = getattr(ref_mod, name)()
        n_ref = sum(p.numel() for p in ref.parameters())
        gmacs = count_gmacs(ref, (3, 224, 224)) if name in ("van_b0", "van_b1", "van_b2", "van_b3") else None
        randomize_(ref, 0, (8, 3, px, px))
        ref.eval()
        x = np.random.default_rng(1).standard_normal((2, 3, px, px)).astype(np.float32)
        with torch.no_grad():
            want = ref(torch.from_numpy(x)).numpy()
        scale = max(1.0, float(np.abs(want).max()))
        with tempfile.TemporaryDirectory() as d:
            # what timm's CheckpointSaver (train.py) writes: no DataParallel prefix (it saves the unwrapped model)
            src = os.path.join(d, f"{name}_model_best.pth.tar")
            torch.save({"epoch": 299, "arch": name, "state_dict": ref.state_dict(),
                        "optimizer": {"state": {}, "param_groups": [{"lr": 1e-6, "weight_decay": 0.05}]},
                        "version": 2, "args": ap.Namespace(model=name, lr=1e-3, drop_path=0.1, batch_size=128),
                        "metric": 75.4}, src)
            dst = os.path.join(d, f"{name}.ckpt")
            out = io.StringIO()
            with contextlib.redirect_stdout(out):
                code = cli.main(["convert", name, src, dst])
            if code != 0:
                raise SystemExit(f"zoo convert {name} failed (exit {code}):\n{out.getvalue()}")
            layout = re.search(r"\((\S+) layout\)", out.getvalue())
            errs = []
            for path in (src, dst):
                pt = zoo.create_model(name, "pt", checkpoint=path).eval()
                with torch.no_grad():
                    errs.append(float(np.abs(pt(torch.from_numpy(x)).numpy() - want).max()) / scale)
            _speed(name, ref, pt, px)
            del pt
            net = zoo.create_model(name, "ms", checkpoint=dst)
            net.set_train(False)
            for mode in (ms.PYNATIVE_MODE, ms.GRAPH_MODE):
                ms.set_context(mode=mode)
                errs.append(float(np.abs(net(ms.Tensor(x)).asnumpy() - want).max()) / scale)
            ms.set_context(mode=ms.PYNATIVE_MODE)
            del net
        ok = all(e <= 1e-4 for e in errs) and n_ref == zoo.get_entry(name).published.params
        ok_all &= ok
        print(f"{name:<8} {px:>5} {n_ref:>13,} {'-' if gmacs is None else f'{gmacs:.3f}':>11} {errs[0]:>18.1e} "
              f"{errs[1]:>15.1e} {errs[2]:>12.1e} {errs[3]:>10.1e}  {'ok' if ok else 'FAIL'}; "
              f"layout {layout.group(1) if layout else '?'}")
        del ref
    return ok_all



# --- HaloNet: timm and mindcv --------------------------------------------------------------------

HALONET = ("halonet_h1", "halonet26t", "sehalonet33ts", "halonet50ts", "halo2botnet50ts_256")


def _stub_torchvision() -> None:
    """Make ``import torchvision`` (and any submodule) succeed with placeholder objects.

    timm imports torchvision at import time (transforms, FrozenBatchNorm2d) but its HaloNet code
    never calls it; next to the CPU build of torch, PyPI's torchvision fails to import.
    """
    import importlib.abc
    import importlib.machinery

    class Placeholder(type):
        def __getattr__(cls, name):
            if name.startswith("__"):
                raise AttributeError(name)
            return Placeholder(name, (), {"__init__": lambda self, *a, **k: None})

    class Module(types.ModuleType):
        def __getattr__(self, name):
            if name.startswith("__"):
                raise AttributeError(name)
            return Placeholder(name, (), {"__init__": lambda self, *a, **k: None})

    class Finder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
        def find_spec(self, fullname, path=None, target=None):
            if fullname == "torchvision" or fullname.startswith("torchvision."):
                return importlib.machinery.ModuleSpec(fullname, self, is_package=True)
            return None

        def create_module(self, spec):
            mod = Module(spec.name)
            mod.__path__, mod.__version__ = [], "0.0.0+zoo-stub"
            return mod

        def exec_module(self, module):
            pass

    sys.meta_path.insert(0, Finder())


def _import_timm(repo: str):
    root = next((d for d in (repo, os.path.dirname(os.path.abspath(repo)))
                 if os.path.isfile(os.path.join(d, "timm", "__init__.py"))), None)
    if root is None:
        raise SystemExit(f"--repo {repo}: no timm package there (expected {repo}/timm/__init__.py)")
    sys.path.insert(0, root)
    try:
        import torchvision  # noqa: F401
    except Exception as err:  # ImportError, or RuntimeError from a torchvision built for another torch
        for k in [k for k in sys.modules if k == "torchvision" or k.startswith("torchvision.")]:
            del sys.modules[k]
        _stub_torchvision()
        print(f"note: torchvision does not import ({type(err).__name__}); timm runs with a stub")
    import timm

    print(f"timm {timm.__version__} from {os.path.dirname(timm.__file__)}")
    return timm


def _zoo_convert(name, src, dst):
    """``zoo convert NAME SRC DST`` (the command line), its output kept unless it fails."""
    import contextlib
    import io

    from zoo.cli import main as zoo_cli

    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        code = zoo_cli(["convert", name, src, dst])
    if code != 0:
        raise SystemExit(f"zoo convert {name} {src} {dst} failed:\n{out.getvalue()}")


def _err(out, want, scale):
    return float(np.abs(np.asarray(out, np.float64) - want).max()) / scale


def _pt_out(model, x):
    import torch

    model.eval()
    with torch.no_grad():
        return model(torch.from_numpy(x)).numpy()


def _ms_outs(net, x):
    import mindspore as ms

    net.set_train(False)
    outs = []
    for mode in (ms.PYNATIVE_MODE, ms.GRAPH_MODE):
        ms.set_context(mode=mode)
        outs.append(net(ms.Tensor(x)).asnumpy())
    ms.set_context(mode=ms.PYNATIVE_MODE)
    return outs


def _generic_weights(name: str):
    """The zoo parity checks' weights for ``name``: its registry ``parity_seed`` (a draw on which float32
    determines the logits), the twin's timm-style init, zoo.parity's generic values, BatchNorm
    statistics calibrated on 16 random images as zoo.parity.check does. Returns (state dict, seed)."""
    import torch

    from zoo import registry
    from zoo.parity import randomize_

    seed = registry.get(name).parity_seed
    torch.manual_seed(seed)
    model = zoo.create_model(name, "pt", drop_rate=0.0, drop_path_rate=0.0)
    randomize_(model, seed, (16, 3, 256, 256))
    return model.state_dict(), seed


def _floor(model, x, want):
    import copy

    import torch

    with torch.no_grad():
        ref64 = copy.deepcopy(model).double()(torch.from_numpy(x).double()).numpy()
    return _err(want, ref64, max(1.0, float(np.abs(ref64).max())))


def check_halonet_timm(repo: str, names) -> bool:
    import torch
    from safetensors.torch import save_file

    timm = _import_timm(repo)
    ok_all = True
    cols = ("model", "seed", "fp32 floor", "pt (.pth)", "pt (.safetensors)", "pt (.ckpt)", "ms pynative", "ms graph")
    print("\n" + "  ".join(f"{c:>17}" if i else f"{c:<20}" for i, c in enumerate(cols)) + "  verdict")
    for name in names:
        weights, seed = _generic_weights(name)
        ref = timm.create_model(name)  # timm's own code
        ref.load_state_dict(weights, strict=True)
        ref.eval()
        x = np.random.default_rng(seed).standard_normal((2, 3, 256, 256)).astype(np.float32)
        want = _pt_out(ref, x)
        scale = max(1.0, float(np.abs(want).max()))
        floor = _floor(ref, x, want)
        with tempfile.TemporaryDirectory() as d:
            sd = ref.state_dict()
            pth, st, ckpt = (os.path.join(d, f"{name}{s}") for s in (".pth", ".safetensors", ".ckpt"))
            torch.save(sd, pth)  # timm's released files: a plain state dict
            save_file({k: v.contiguous() for k, v in sd.items()}, st)
            _zoo_convert(name, pth, ckpt)
            errs = [_err(_pt_out(zoo.create_model(name, "pt", checkpoint=f), x), want, scale) for f in (pth, st, ckpt)]
            _speed(name, ref, zoo.create_model(name, "pt", checkpoint=pth), 256)
            errs += [_err(o, want, scale) for o in _ms_outs(zoo.create_model(name, "ms", checkpoint=ckpt), x)]
        ok = all(e <= 1e-4 for e in errs)
        ok_all &= ok
        print(f"{name:<20}  {seed:>17}  {floor:>17.1e}  " + "  ".join(f"{e:>17.1e}" for e in errs) +
              f"  {'ok' if ok else 'FAIL'}")
    return ok_all


class _ExtractPatchesTF:
    """CPU stand-in for mindcv's ``nn.Unfold`` (ExtractImagePatches, 'valid', rates 1).

    TensorFlow's extract_image_patches flattens each patch as (row, column, channel) with the channel
    fastest: ``out[b, (ky * k + kx) * C + c, i, j] = x[b, c, i * s + ky, j * s + kx]``. MindSpore's
    GPU kernel runs that extractor on an NHWC copy; the Ascend kernel has the same contract.
    ``channel_major=True`` orders it (c, ky, kx) instead, as torch's F.unfold does.
    """

    def __new__(cls, k: int, s: int, channel_major: bool = False):
        from mindspore import nn, ops

        class Extract(nn.Cell):
            def construct(self, x):
                b, c, h, w = x.shape
                nh, nw = (h - k) // s + 1, (w - k) // s + 1
                pieces = []
                for ky in range(k):
                    for kx in range(k):
                        pieces.append(x[:, :, ky:ky + s * (nh - 1) + 1:s, kx:kx + s * (nw - 1) + 1:s])
                return ops.stack(pieces, 2 if channel_major else 1).reshape(b, k * k * c, nh, nw)

        return Extract()


def _import_mindcv_halonet(path):
    if path:
        root = next((d for d in (path, os.path.dirname(os.path.abspath(path)))
                     if os.path.isfile(os.path.join(d, "mindcv", "__init__.py"))), None)
        if root is None:
            raise SystemExit(f"--mindcv {path}: no mindcv package there")
        sys.path.insert(0, root)
    import inspect

    import mindcv
    from mindcv.models import halonet as H
    from mindspore import ops

    print(f"mindcv {getattr(mindcv, '__version__', '?')} from {os.path.dirname(mindcv.__file__)}")
    if "paddings=" in inspect.getsource(H.rel_logits_1d):
        # mindcv 0.3.0 calls ops.pad(x, paddings=...), an argument MindSpore >= 2.3 no longer takes
        class Ops:
            def __getattr__(self, name):
                return getattr(ops, name)

            @staticmethod
            def pad(x, padding=None, paddings=None):
                return ops.Pad(tuple(paddings))(x) if paddings is not None else ops.pad(x, padding)

        H.ops = Ops()
        print("note: mindcv's ops.pad(x, paddings=...) calls are routed to ops.Pad (same zero padding)")
    return H


def _mindcv_net(H, weights, channel_major=False):
    """mindcv's own halonet_50t with ``weights`` (zoo/timm names, mapped by the importer's rules), its
    unfold replaced by the CPU stand-in, in PYNATIVE inference mode."""
    import mindspore as ms

    from zoo.models.halonet.layouts import import_mindcv

    net = H.halonet_50t()
    params = {p.name: p for p in net.get_parameters()}
    for zoo_name, name in import_mindcv({k: k for k in params}).items():  # zoo (timm) name -> mindcv's
        params[name].set_data(ms.Tensor(weights[zoo_name].numpy()))
    for _, cell in net.cells_and_names():
        if isinstance(cell, H.HaloAttention):
            cell.kv_unfold = _ExtractPatchesTF(cell.win_size, cell.block_size, channel_major)
    net.set_train(False)
    ms.set_context(mode=ms.PYNATIVE_MODE)
    return net


def check_halonet_mindcv(repo: str, mindcv_path) -> bool:
    """mindcv halonet_50t checkpoints through the import into both twins.

    Two sets of weights: BatchNorm statistics calibrated under mindcv's function (as mindcv training
    leaves them; for the mindcv-compatible twin ``halonet_50t``) and under timm's (for the timm-layout
    twin ``halonet50ts``, compared with timm's code). Each is written as mindcv's trainer writes a
    checkpoint (weights, AdamW state, EMA copies, loss scale), converted with ``zoo convert`` and loaded.
    """
    import mindspore as ms
    from mindspore import nn as msnn
    from mindcv.optim import create_optimizer
    from mindcv.utils.train_step import TrainStep

    timm = _import_timm(repo) if "timm" not in sys.modules else sys.modules["timm"]
    H = _import_mindcv_halonet(mindcv_path)
    ok_all = True
    print("\nmindcv halonet_50t checkpoints through the mindcv import; error = max|twin - reference| / "
          "max(1, max|reference|)")
    print(f"{'twin':<28} {'reference':<34} {'pt':>9} {'ms pynative':>12} {'ms graph':>9}  verdict")
    with tempfile.TemporaryDirectory() as d:
        for twin, own in (("halonet_50t", "mindcv"), ("halonet50ts", "timm")):
            weights, seed = _generic_weights(twin)
            x = np.random.default_rng(seed).standard_normal((2, 3, 256, 256)).astype(np.float32)
            net = _mindcv_net(H, weights)
            refs = {"mindcv": net(ms.Tensor(x)).asnumpy()}
            timm_ref = timm.create_model("halonet50ts")
            timm_ref.load_state_dict(weights, strict=True)
            refs["timm"] = _pt_out(timm_ref, x)
            src = os.path.join(d, f"{twin}_weights-300_2502.ckpt")
            train = TrainStep(msnn.WithLossCell(net, msnn.SoftmaxCrossEntropyWithLogits(sparse=True)),
                              create_optimizer(net.trainable_params(), opt="adamw", lr=1e-3),
                              scale_sense=ms.Tensor(1024.0), ema=True)
            ms.save_checkpoint(train, src)  # what mindcv's trainer writes
            dst = os.path.join(d, f"{twin}.ckpt")
            _zoo_convert(twin, src, dst)
            outs = [_pt_out(zoo.create_model(twin, "pt", checkpoint=src), x),
                    *_ms_outs(zoo.create_model(twin, "ms", checkpoint=dst), x)]
            floor = _floor(_load_pt(twin, weights), x, outs[0])
            print(f"-- weights calibrated under {own}'s function (seed {seed}; float32 floor of the twin {floor:.1e}; "
                  f"max|logit| mindcv {np.abs(refs['mindcv']).max():.3g}, timm {np.abs(refs['timm']).max():.3g})")
            rows = [(twin, f"{own}'s function", outs, refs[own], True)]
            other = "timm" if own == "mindcv" else "mindcv"
            rows.append((twin, f"{other}'s function", outs, refs[other], False))
            if own == "timm":  # with a channel-major unfold, mindcv differs from timm only in the stem pool padding
                cm = zoo.create_model("halonet50ts", "pt", stem_pool_pad="zero")
                cm.load_state_dict(weights, strict=True)
                ref_cm = _mindcv_net(H, weights, channel_major=True)(ms.Tensor(x)).asnumpy()
                rows.append(("halonet50ts, zero-pad pool", "mindcv with a channel-major unfold", [_pt_out(cm, x)],
                             ref_cm, True))
            for name, label, got, ref, same in rows:
                scale = max(1.0, float(np.abs(ref).max()))
                errs = [_err(o, ref, scale) for o in got]
                ok = all(e <= 1e-4 for e in errs) if same else min(errs) > 1e-3
                ok_all &= ok
                cells = [f"{e:.1e}" for e in errs] + ["-"] * (3 - len(errs))
                verdict = ("ok" if ok else "FAIL") if same else ("differs, as expected" if ok else "UNEXPECTEDLY EQUAL")
                print(f"{name:<28} {label:<34} {cells[0]:>9} {cells[1]:>12} {cells[2]:>9}  {verdict}")
    return ok_all


# --- GMM-ViT (CatworldLee/Gaussian-Mixture-Mask-Attention) ------------------------------------------

GMM = tuple(f"{'gmm_' if g else ''}{a}_{i}" for a in ("vit", "swin", "cait", "cait_tiny", "pit", "t2t")
            for i in (32, 64) for g in (False, True))
_GMM_REF_MODEL = {"vit": "vit", "swin": "swin", "cait": "cait", "cait_tiny": "cait-tiny", "pit": "pit", "t2t": "t2t"}


def _load_gmm_reference(repo: str):
    """The repo's ``models.create_model`` and ``utils.scheduler.build_scheduler`` (the repo on sys.path: its
    models import ``utils.drop_path``). einops must be importable (see --deps); timm is stubbed when it does not
    import (swin.py and t2t.py take to_2tuple, trunc_normal_ and DropPath from it)."""
    path = os.path.join(repo, "models", "create_model.py")
    if not os.path.isfile(path):
        raise SystemExit(f"{path}: not found; is {repo} a Gaussian-Mixture-Mask-Attention checkout?")
    try:
        import einops  # noqa: F401
    except ImportError:
        raise SystemExit("einops is not importable, and the GMM repo's models need it. Install it outside the "
                         "project, e.g. `python -m pip install --target /tmp/gmm_ref_deps einops==0.7.0` (the repo's "
                         "pin), and pass --deps /tmp/gmm_ref_deps") from None
    try:
        import timm.models.layers  # noqa: F401
        stubbed = False
    except Exception:  # not installed, or fails to import (torchvision)
        for name in [n for n in sys.modules if n == "timm" or n.startswith("timm.")]:
            del sys.modules[name]
        sys.modules.update(_timm_stubs())
        stubbed = True
    sys.path.insert(0, os.path.abspath(repo))
    import contextlib
    import io

    with contextlib.redirect_stdout(io.StringIO()):
        from models.create_model import create_model
        from utils.scheduler import build_scheduler
    return create_model, build_scheduler, stubbed


def check_gmm(repo: str, names) -> bool:
    """Each README model (and cait) at 32 and 64 px from the repo's own create_model, with generic weights,
    saved as main.py saves it (checkpoint.pth during training, the bare state dict at the end), converted with
    `zoo convert`, loaded into both twins; the converted file is also written back to .pth and loaded strictly
    into the reference's own model."""
    import argparse as ap
    import contextlib
    import io
    import re

    import mindspore as ms
    import torch

    from zoo import cli
    from zoo.bench.flops import count_linear_conv_gmacs
    from zoo.parity import randomize_

    create_model, build_scheduler, stubbed = _load_gmm_reference(repo)
    if stubbed:
        print("timm is not importable: swin.py and t2t.py run with stand-ins for DropPath, to_2tuple, trunc_normal_")
    ok_all = True
    cols = ("model", "params (ref)", "MACs (ref)", "pt (checkpoint.pth)", "pt (final .pth)", "pt (converted)",
            "ms pynative", "ms graph", "ref (back .pth)")
    print("error = max|twin - reference| / max(1, max|reference|) on the logits, eval mode, batch 2; MACs: Linear "
          "and Conv layers, M")
    print("  ".join(f"{c:>{len(c) if i else 17}}" for i, c in enumerate(cols)) + "  notes")
    for name in names:
        entry = zoo.get_entry(name)
        img, classes, gmm = entry.input_size[1], entry.num_classes, name.startswith("gmm_")
        arch = name.replace("gmm_", "").rsplit("_", 1)[0]
        args = ap.Namespace(model=_GMM_REF_MODEL[arch], sd=0.1, is_GMM=gmm, is_SLM=False, num_kernals=5,
                            epochs=100, warmup=10, lr=1e-3, weight_decay=5e-2)
        torch.manual_seed(0)
        with contextlib.redirect_stdout(io.StringIO()):
            ref = create_model(img, classes, args)
        n_ref = sum(p.numel() for p in ref.parameters() if p.requires_grad)
        macs = count_linear_conv_gmacs(ref, (3, img, img)) * 1e3
        randomize_(ref, 0)
        x = np.random.default_rng(1).standard_normal((2, 3, img, img)).astype(np.float32)
        errs, note = [], ""
        try:
            with tempfile.TemporaryDirectory() as d:
                # main.py during training: AdamW over every parameter, its own scheduler, saved each epoch
                opt = torch.optim.AdamW(ref.parameters(), lr=args.lr, weight_decay=args.weight_decay)
                sched = build_scheduler(args, opt, 391)
                ref.train()
                ref(torch.from_numpy(x)).sum().backward()
                opt.step()
                sched.step()
                ref.eval()
                with torch.no_grad():
                    want = ref(torch.from_numpy(x)).numpy()
                scale = max(1.0, float(np.abs(want).max()))
                src = os.path.join(d, "checkpoint.pth")
                torch.save({"model_state_dict": ref.state_dict(), "epoch": 0, "optimizer_state_dict": opt.state_dict(),
                            "scheduler": sched.state_dict()}, src)
                final = os.path.join(d, "final_checkpoint.pth")
                torch.save(ref.state_dict(), final)  # what main.py leaves in checkpoint.pth at the end
                dst = os.path.join(d, f"{name}.ckpt")
                out = io.StringIO()
                with contextlib.redirect_stdout(out):
                    code = cli.main(["convert", name, src, dst])
                if code != 0:
                    raise RuntimeError(f"zoo convert failed (exit {code}): {out.getvalue().strip()}")
                layout = re.search(r"\((\S+) layout\)", out.getvalue())
                note = f"layout {layout.group(1) if layout else '?'}"
                for path in (src, final, dst):
                    pt = zoo.create_model(name, "pt", checkpoint=path).eval()
                    with torch.no_grad():
                        errs.append(float(np.abs(pt(torch.from_numpy(x)).numpy() - want).max()) / scale)
                    if path == final:
                        _speed(name, ref, pt, img)
                    del pt
                net = zoo.create_model(name, "ms", checkpoint=dst)
                net.set_train(False)
                for mode in (ms.PYNATIVE_MODE, ms.GRAPH_MODE):
                    ms.set_context(mode=mode)
                    errs.append(float(np.abs(net(ms.Tensor(x)).asnumpy() - want).max()) / scale)
                ms.set_context(mode=ms.PYNATIVE_MODE)
                del net
                back = os.path.join(d, "back.pth")  # MindSpore file -> PyTorch, into the reference's own model
                with contextlib.redirect_stdout(io.StringIO()):
                    code = cli.main(["convert", name, dst, back])
                    again = create_model(img, classes, args)
                if code != 0:
                    raise RuntimeError(f"zoo convert back to .pth failed (exit {code})")
                again.load_state_dict(torch.load(back, weights_only=True), strict=True)
                again.eval()
                with torch.no_grad():
                    errs.append(float(np.abs(again(torch.from_numpy(x)).numpy() - want).max()) / scale)
        except Exception as err:  # report the model and go on with the others
            note = f"{type(err).__name__}: {str(err).splitlines()[0][:150]}"
        ok = len(errs) == 6 and all(e <= 1e-4 for e in errs)
        ok_all &= ok
        cells = [f"{n_ref:,}", f"{macs:.1f}"] + [f"{e:.1e}" for e in errs] + ["-"] * (6 - len(errs))
        print("  ".join([f"{name:>17}"] + [f"{c:>{len(h)}}" for c, h in zip(cells, cols[1:])]) +
              f"  {'ok' if ok else 'FAIL'}; {note}")
        del ref
    return ok_all


def _load_pt(name, weights):
    model = zoo.create_model(name, "pt")
    model.load_state_dict(weights, strict=True)
    return model.eval()


import check_reference_at  # noqa: E402  (tools/check_reference_at.py: the at family)

FAMILIES = {"triplet": TRIPLET, "van": VAN, "halonet": HALONET, "gmm": GMM, "at": check_reference_at.MODELS}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("family", choices=tuple(FAMILIES), help="the family to check")
    p.add_argument("--repo", required=True, help="a checkout of the family's reference repository (halonet: "
                   "pytorch-image-models, or the directory holding an installed timm)")
    p.add_argument("--models", help="comma-separated subset (default: all the reference builds)")
    p.add_argument("--mindcv", help="halonet: a mindcv checkout for halonet_50t (default: the installed mindcv)")
    p.add_argument("--size", type=int, help="VAN only: input size in px (default 224 for van_b0-b3, 64 for b4-b6)")
    p.add_argument("--no-mindcv", action="store_true", help="halonet: skip mindcv's halonet_50t")
    p.add_argument("--deps", help="gmm: a directory with einops (installed there, outside the project, e.g. "
                   "`pip install --target DIR einops==0.7.0`), put on the import path for the reference's models")
    p.add_argument("--functional-zoo", help="at: a functional-zoo checkout (its notebooks define the exported "
                   "ImageNet networks; without it those rows are skipped)")
    p.add_argument("--speed", action="store_true", help="also time the PyTorch twin against the reference's model "
                   "(inference, the same weights, alternating rounds; not for at)")
    p.add_argument("--repeats", type=int, default=10, help="--speed: timed rounds (default 10)")
    args = p.parse_args(argv)
    SPEED.update(on=args.speed, repeats=args.repeats)
    if args.speed and args.family == "at":
        p.error("--speed is not available for the at family (its reference is functional code, not modules)")
    if args.deps is not None:
        if not os.path.isdir(args.deps):
            p.error(f"--deps {args.deps}: not a directory")
        sys.path.insert(0, os.path.abspath(args.deps))
    if not os.path.isdir(args.repo):
        p.error(f"--repo {args.repo}: not a directory")
    known = FAMILIES[args.family]
    names = args.models.split(",") if args.models else list(known)
    unknown = [n for n in names if n not in known]
    if unknown:
        p.error(f"unknown model(s) {unknown}; choose from {', '.join(known)}")
    if args.size is not None and args.family != "van":
        p.error("--size applies to the van family only")
    if args.family == "triplet":
        ok = check_triplet(args.repo, names)
    elif args.family == "van":
        ok = check_van(args.repo, names, args.size)
    elif args.family == "gmm":
        ok = check_gmm(args.repo, names)
    elif args.family == "at":
        ok = check_reference_at.check_at(args.repo, names, args.functional_zoo)
    else:
        ok = check_halonet_timm(args.repo, names)
        if not args.no_mindcv:
            ok &= check_halonet_mindcv(args.repo, args.mindcv)
    _print_speed()
    print("verdict:", "every output within 1e-4 of the reference" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    from zoo.cli import exit_process

    exit_process(main())
