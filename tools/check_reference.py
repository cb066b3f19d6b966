#!/usr/bin/env python
"""Prove the twins against a reference implementation's own code and checkpoint layout.

Builds each model with the reference repository's code (from a checkout you point at), gives it
generic random weights, saves a checkpoint exactly as the reference training script does, converts
it with ``zoo convert`` to a MindSpore ``.ckpt``, loads that into both twins (and the original file
into the PyTorch twin), and compares every output with the reference model's, in eval mode.

    python tools/check_reference.py triplet --repo /path/to/triplet-attention
    python tools/check_reference.py van --repo /path/to/VAN-Classification

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

os.environ.setdefault("GLOG_v", "3")  # MindSpore: errors only
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))


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
                raise SystemExit(f"{path}: the line 'kernel_size = 7' was not found; is this the triplet-attention repo?")
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

    import zoo
    from zoo.convert import convert_file
    from zoo.parity import randomize_

    ok_all = True
    print(f"{'model':<24} {'pt (official file)':>18} {'pt (converted)':>15} {'ms pynative':>12} {'ms graph':>10}  notes")
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

    import zoo
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


FAMILIES = {"triplet": TRIPLET, "van": VAN}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("family", choices=tuple(FAMILIES), help="the family to check")
    p.add_argument("--repo", required=True, help="a checkout of the family's reference repository")
    p.add_argument("--models", help="comma-separated subset (default: all the reference builds)")
    p.add_argument("--size", type=int, help="VAN only: input size in px (default 224 for van_b0-b3, 64 for b4-b6)")
    args = p.parse_args(argv)
    if not os.path.isdir(args.repo):
        p.error(f"--repo {args.repo}: not a directory")
    known = FAMILIES[args.family]
    names = args.models.split(",") if args.models else list(known)
    unknown = [n for n in names if n not in known]
    if unknown:
        p.error(f"unknown model(s) {unknown}; choose from {', '.join(known)}")
    if args.family == "triplet":
        if args.size is not None:
            p.error("--size applies to the van family only")
        ok = check_triplet(args.repo, names)
    else:
        ok = check_van(args.repo, names, args.size)
    print("verdict:", "every output within 1e-4 of the reference" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    os._exit(code)  # skip MindSpore 2.8's noisy Cell.__del__ at interpreter shutdown
