"""``tools/check_reference.py at``: the Attention Transfer twins against szagoruyko/attention-transfer's own code.

    python tools/check_reference.py at --repo /path/to/attention-transfer [--functional-zoo /path/to/functional-zoo]

The reference's functions build each network with their params dict (``cifar.resnet``,
``imagenet.define_student``, ``imagenet.define_teacher``; the functional-zoo notebooks' ``define_model`` when
``--functional-zoo`` is given); the weights are made generic, saved as the reference saves them
(``model.pt7`` = ``{'params', 'optimizer', 'epoch'}``, with ``student.``/``teacher.`` after distillation; the
flat functional-zoo exports), converted with ``zoo convert`` to MindSpore, and loaded into both twins. Their
logits and group outputs are compared with the reference function's, in eval mode; the losses with
``utils.at_loss`` and ``utils.distillation`` on the reference's own group outputs.

The reference imports torchnet, nested_dict and torchvision at module level and never calls them in the
functions used here (``utils.flatten`` calls ``nested_dict(...).items_flat()``): small stand-ins are installed
when they are missing. ``define_teacher`` calls ``.cuda()``; on a machine without CUDA that call is made a no-op
while it runs. Nothing of the reference is copied into the zoo.
"""
from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import os
import sys
import tempfile
import types

import numpy as np

CIFAR = {"wrn_16_1": (16, 1), "wrn_16_2": (16, 2), "wrn_40_1": (40, 1), "wrn_40_2": (40, 2), "wrn_28_10": (28, 10)}
IMAGENET = ("at_resnet18", "at_resnet34", "at_resnet34_folded", "at_resnet18_folded", "at_resnet18_preact")
MODELS = tuple(CIFAR) + IMAGENET
BOUND = 1e-4


# --- importing the reference ------------------------------------------------------------------------

class _NestedDict(dict):
    """``nested_dict(d).items_flat()``: (key path, leaf) pairs of a nested dict, None leaves included."""

    def items_flat(self):
        def walk(d, pre):
            for k, v in d.items():
                if isinstance(v, dict):
                    yield from walk(v, pre + (k,))
                else:
                    yield pre + (k,), v
        return list(walk(self, ()))


def _stubs():
    mods = {}
    try:
        import nested_dict  # noqa: F401
    except ImportError:
        m = types.ModuleType("nested_dict")
        m.nested_dict = _NestedDict
        mods["nested_dict"] = m
    try:
        import torchnet  # noqa: F401
    except ImportError:
        tnt = types.ModuleType("torchnet")
        tnt.meter = types.SimpleNamespace()
        engine = types.ModuleType("torchnet.engine")
        engine.Engine = object
        tnt.engine = engine
        mods.update({"torchnet": tnt, "torchnet.engine": engine})
    try:
        import torchvision  # noqa: F401
    except Exception:  # missing, or built for another torch
        tv = types.ModuleType("torchvision")
        for sub in ("transforms", "datasets"):
            mods[f"torchvision.{sub}"] = types.ModuleType(f"torchvision.{sub}")
            setattr(tv, sub, mods[f"torchvision.{sub}"])
        mods["torchvision.datasets"].ImageFolder = object
        mods["torchvision"] = tv
    try:
        import tqdm  # noqa: F401
    except ImportError:
        mods["tqdm"] = types.ModuleType("tqdm")
        mods["tqdm"].tqdm = lambda x, **k: x
    return mods


def load_reference(repo: str):
    """The reference's utils, cifar and imagenet modules (executed from the checkout)."""
    for f in ("utils.py", "cifar.py", "imagenet.py"):
        if not os.path.isfile(os.path.join(repo, f)):
            raise SystemExit(f"{repo}/{f}: not found; is --repo an attention-transfer checkout?")
    stubs = _stubs()
    sys.modules.update(stubs)
    mods = {}
    for name in ("utils", "cifar", "imagenet"):
        path = os.path.join(repo, f"{name}.py")
        spec = importlib.util.spec_from_file_location(name, path)
        mod = importlib.util.module_from_spec(spec)
        sys.modules[name] = mod  # cifar.py and imagenet.py `import utils`
        spec.loader.exec_module(mod)
        mods[name] = mod
    return mods, sorted(stubs)


def notebook_function(path: str, name: str = "define_model"):
    """``define_model`` from a functional-zoo notebook (its code cell, executed)."""
    import re as _re

    import torch
    import torch.nn.functional as F

    nb = json.load(open(path))
    for cell in nb["cells"]:
        src = "".join(cell.get("source", []))
        if cell["cell_type"] == "code" and f"def {name}" in src:
            ns = {"torch": torch, "F": F, "re": _re}
            exec(compile(src.split("\nf = ")[0], path, "exec"), ns)
            return ns[name]
    raise SystemExit(f"{path}: no cell defines {name}")


@contextlib.contextmanager
def _cuda_is_a_no_op():
    import torch

    if torch.cuda.is_available():
        yield
        return
    old = torch.Tensor.cuda
    torch.Tensor.cuda = lambda self, *a, **k: self
    try:
        yield
    finally:
        torch.Tensor.cuda = old


# --- weights and files as the reference makes them ------------------------------------------------------

def generic(params, seed: int):
    """Make a reference params dict generic: BatchNorm weight/bias and statistics, fc and conv biases random."""
    import torch

    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for k, v in params.items():
            if k.endswith("running_mean") or k.endswith(".b") or k.endswith(".bias"):
                v.copy_(torch.randn(v.shape, generator=g) * 0.1)
            elif k.endswith("running_var"):
                v.copy_(torch.rand(v.shape, generator=g) + 0.5)
            elif k.endswith(".a") or (k.endswith(".weight") and v.ndim == 1):
                v.copy_(torch.rand(v.shape, generator=g) + 0.5)
    return params


def folded_params(blocks, dim_bias: bool, seed: int):
    """A random flat dict in the functional-zoo folded layout (resnet-18/34-export's names and shapes), with the
    reference's own kaiming init scaled to keep a deep folded network's activations in range."""
    import torch

    g = torch.Generator().manual_seed(seed)

    def conv(no, ni, k, bias=True):
        w = torch.randn(no, ni, k, k, generator=g) * (2.0 / (ni * k * k)) ** 0.5 * 0.7
        return {"weight": w, "bias": torch.randn(no, generator=g) * 0.05} if bias else {"weight": w}

    p = {"conv0": conv(64, 3, 7)}
    ni = 64
    for gi, (no, n) in enumerate(zip((64, 128, 256, 512), blocks)):
        for i in range(n):
            base = f"group{gi}.block{i}"
            p[f"{base}.conv0"] = conv(no, ni if i == 0 else no, 3)
            p[f"{base}.conv1"] = conv(no, no, 3)
            if i == 0 and gi > 0:
                p[f"{base}.conv_dim"] = conv(no, ni, 1, bias=dim_bias)
        ni = no
    p["fc"] = {"weight": torch.randn(1000, 512, generator=g) * (1 / 512) ** 0.5, "bias": torch.zeros(1000)}
    return {f"{m}.{leaf}": t for m, d in p.items() for leaf, t in d.items()}


def save_model_pt7(path, params, epoch=1, lr=0.1, weight_decay=5e-4):
    """cifar.py / imagenet.py ``log``: ``torch.save(dict(params={k: v.data ...}, optimizer=..., epoch=...))``,
    the optimizer being the scripts' ``SGD(trainable, lr, momentum=0.9, weight_decay)`` after a step."""
    import torch

    trainable = [v for v in params.values() if v.requires_grad]
    opt = torch.optim.SGD(trainable, lr, momentum=0.9, weight_decay=weight_decay)
    for v in trainable:
        v.grad = torch.zeros_like(v)
    saved_lr = opt.param_groups[0]["lr"]
    opt.param_groups[0]["lr"] = 0.0
    opt.step()  # momentum buffers exist, the weights do not move
    opt.param_groups[0]["lr"] = saved_lr
    torch.save(dict(params={k: v.data for k, v in params.items()}, optimizer=opt.state_dict(), epoch=epoch), path)


# --- comparing ------------------------------------------------------------------------------------------

def _rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.abs(a - b).max()) / max(1.0, float(np.abs(b).max()))


def _zoo_convert(*args):
    from zoo.cli import main as zoo_cli

    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        code = zoo_cli(["convert", *args])
    if code != 0:
        raise SystemExit(f"zoo convert {' '.join(args)} failed:\n{out.getvalue()}")
    return out.getvalue()


def twin_errors(name, src, x, want, ckpt_dir, **kwargs):
    """[pt from the reference file, pt from the converted .ckpt, ms pynative, ms graph]: worst error over the
    logits and the group outputs (``want`` = [logits, g0, ...]; groups skipped where the reference has none)."""
    import mindspore as ms
    import torch

    import zoo

    dst = os.path.join(ckpt_dir, f"{name}.ckpt")
    layout = kwargs.pop("layout", "auto")
    _zoo_convert(name, src, dst, "--force", "--layout", layout)
    errs = []
    for path in (src, dst):
        m = zoo.create_model(name, "pt", checkpoint=path, layout=layout if path == src else "auto", **kwargs).eval()
        with torch.no_grad():
            final, feats = m.forward_intermediates(torch.from_numpy(x))
            got = [m.forward_head(final).numpy()] + [f.numpy() for f in feats]
        errs.append(max(_rel(g, w) for g, w in zip(got, want)))

    class Both(ms.nn.Cell):
        def __init__(self, net):
            super().__init__(auto_prefix=False)
            self.net = net

        def construct(self, x):
            final, feats = self.net.forward_intermediates(x)
            return (self.net.forward_head(final),) + tuple(feats)

    net = zoo.create_model(name, "ms", checkpoint=dst, **kwargs)
    net.set_train(False)
    cell = Both(net)
    for mode in (ms.PYNATIVE_MODE, ms.GRAPH_MODE):
        ms.set_context(mode=mode)
        got = [t.asnumpy() for t in cell(ms.Tensor(x))]
        errs.append(max(_rel(g, w) for g, w in zip(got, want)))
    ms.set_context(mode=ms.PYNATIVE_MODE)
    return errs


def _row(label, layout, errs, note=""):
    ok = all(e <= BOUND for e in errs)
    print(f"{label:<44} {layout:<18} " + " ".join(f"{e:>10.1e}" for e in errs) + f"  {'ok' if ok else 'FAIL'}"
          + (f"; {note}" if note else ""), flush=True)
    return ok


def check_losses(utils, g_s, g_t, y_s, y_t, labels) -> bool:
    """zoo.losses (both frameworks, both MindSpore modes) against utils.at_loss and utils.distillation."""
    import mindspore as ms
    import torch

    from zoo.losses import ms as LM
    from zoo.losses import pt as LP

    ok = True
    print(f"\n{'loss':<34} {'reference':>12} {'pt rel':>9} {'ms pynative':>12} {'ms graph':>10}")

    class AtCell(ms.nn.Cell):
        def construct(self, a, b):
            return LM.at_loss(a, b)

    class KdCell(ms.nn.Cell):
        def __init__(self, alpha):
            super().__init__()
            self.alpha = alpha

        def construct(self, a, b, c):
            return LM.kd_loss(a, b, c, 4.0, self.alpha)

    cases = [(f"at_loss group{i}", utils.at_loss, LP.at_loss, AtCell(), (s, t))
             for i, (s, t) in enumerate(zip(g_s, g_t))]
    for alpha in (0.0, 0.9):
        cases.append((f"distillation T=4 alpha={alpha}",
                      lambda a, b, c, al=alpha: utils.distillation(a, b, c, 4.0, al),
                      lambda a, b, c, al=alpha: LP.kd_loss(a, b, c, 4.0, al), KdCell(alpha), (y_s, y_t, labels)))
    for label, ref_fn, pt_fn, ms_fn, args in cases:
        with torch.no_grad():
            want = float(ref_fn(*args))
            got_pt = float(pt_fn(*args))
        rels = [abs(got_pt - want) / abs(want)]
        for mode in (ms.PYNATIVE_MODE, ms.GRAPH_MODE):
            ms.set_context(mode=mode)
            ms_args = [ms.Tensor(a.numpy().astype(np.int32) if a.dtype == torch.int64 else a.numpy()) for a in args]
            rels.append(abs(float(ms_fn(*ms_args).asnumpy()) - want) / abs(want))
        ms.set_context(mode=ms.PYNATIVE_MODE)
        good = all(r <= 1e-5 for r in rels)
        ok &= good
        print(f"{label:<34} {want:>12.6g} " + " ".join(f"{r:>10.1e}" for r in rels) + f"  {'ok' if good else 'FAIL'}")
    return ok


# --- the checks ----------------------------------------------------------------------------------------

def check_at(repo: str, names, functional_zoo=None) -> bool:
    import torch

    ref, stubbed = load_reference(repo)
    utils, cifar, imagenet = ref["utils"], ref["cifar"], ref["imagenet"]
    if stubbed:
        print(f"stand-ins for: {', '.join(stubbed)} (imported by the reference, not called here)")
    print(f"{'model (reference function)':<44} {'file layout':<18} {'pt (file)':>10} {'pt (.ckpt)':>10} "
          f"{'ms pynat.':>10} {'ms graph':>10}   (logits and every group output)")
    ok = True
    tmp = tempfile.mkdtemp(prefix="at_ref_")
    rng = np.random.default_rng(0)

    # CIFAR: cifar.resnet(depth, width, 10); a plain run's model.pt7, then a distillation run's
    x32 = rng.standard_normal((2, 3, 32, 32)).astype(np.float32)
    cifar_out = {}
    for name in [n for n in names if n in CIFAR]:
        depth, width = CIFAR[name]
        torch.manual_seed(0)
        f, params = cifar.resnet(depth, width, 10)
        generic(params, 1)
        with torch.no_grad():
            y, gs = f(torch.from_numpy(x32), params, False)
        want = [y.numpy()] + [g.numpy() for g in gs]
        cifar_out[name] = (f, params, y, gs)
        src = os.path.join(tmp, f"{name}.pt7")
        save_model_pt7(src, params)
        ok &= _row(f"cifar.resnet({depth}, {width})", "reference", twin_errors(name, src, x32, want, tmp))
    if "wrn_16_1" in cifar_out and "wrn_16_2" in cifar_out:
        (_, p_s, y_s, g_s), (f_t, p_t, y_t, g_t) = cifar_out["wrn_16_1"], cifar_out["wrn_16_2"]
        params = {"student." + k: v for k, v in p_s.items()}  # cifar.py main(): merge teacher and student
        for k, v in p_t.items():
            params["teacher." + k] = v.detach().requires_grad_(False)
        src = os.path.join(tmp, "at_16_1_16_2.pt7")
        save_model_pt7(src, params)
        ok &= _row("  distillation run: student", "reference",
                   twin_errors("wrn_16_1", src, x32, [y_s.numpy()] + [g.numpy() for g in g_s], tmp))
        ok &= _row("  distillation run: teacher", "reference-teacher",
                   twin_errors("wrn_16_2", src, x32, [y_t.numpy()] + [g.numpy() for g in g_t], tmp,
                               layout="reference-teacher"))
        labels = torch.from_numpy(rng.integers(0, 10, 2))
        loss_args = ([g.detach() for g in g_s], [g.detach() for g in g_t], y_s.detach(), y_t.detach(), labels)

    # ImageNet: define_student, define_teacher (folded file), the functional-zoo notebooks
    x224 = rng.standard_normal((1, 3, 224, 224)).astype(np.float32)
    xt = torch.from_numpy(x224)
    student_run = None
    for name, depth in (("at_resnet18", 18), ("at_resnet34", 34)):
        if name not in names:
            continue
        torch.manual_seed(0)
        f, params = imagenet.define_student(depth, 1)
        generic(params, 2)
        with torch.no_grad():
            y, gs = f(xt, params, False)
        src = os.path.join(tmp, f"student{depth}.pt7")
        save_model_pt7(src, params, weight_decay=1e-4)
        note = "define_student(34) builds [3, 4, 6, 5]; read from the weights" if depth == 34 else ""
        ok &= _row(f"imagenet.define_student({depth}, 1)", "reference",
                   twin_errors(name, src, x224, [y.numpy()] + [g.numpy() for g in gs], tmp), note)
        student_run = (f, params)
    for name, blocks, dim_bias in (("at_resnet34_folded", (3, 4, 6, 3), True),
                                   ("at_resnet18_folded", (2, 2, 2, 2), False)):
        if name not in names:
            continue
        flat = folded_params(blocks, dim_bias, 3)
        export = os.path.join(tmp, f"resnet-{18 if blocks[0] == 2 else 34}-export.pth")
        torch.save(flat, export)
        with _cuda_is_a_no_op():
            f_t, p_t = imagenet.define_teacher(export)
        with torch.no_grad():
            y, gs = f_t(xt, p_t)
        want = [y.numpy()] + [g.numpy() for g in gs]
        ok &= _row(f"imagenet.define_teacher({os.path.basename(export)})", "functional-zoo",
                   twin_errors(name, export, x224, want, tmp),
                   "conv_dim.bias ignored, as imagenet.py" if dim_bias else "")
        if name == "at_resnet34_folded" and student_run is not None:
            # imagenet.py main(): student.* and teacher.* in one model.pt7
            params = {"student." + k: v for k, v in student_run[1].items()}
            params.update({"teacher." + k: v.requires_grad_(False) for k, v in p_t.items()})
            src = os.path.join(tmp, "imagenet_run.pt7")
            save_model_pt7(src, params, weight_decay=1e-4)
            ok &= _row("  imagenet.py run: teacher", "reference-teacher", twin_errors(name, src, x224, want, tmp))
        if functional_zoo:
            nb = os.path.join(functional_zoo, f"resnet-{18 if blocks[0] == 2 else 34}-export.ipynb")
            fz = notebook_function(nb)(flat)
            with torch.no_grad():
                y = fz(xt, flat)
            ok &= _row(f"  {os.path.basename(nb)} define_model", "functional-zoo",
                       twin_errors(name, export, x224, [y.numpy()], tmp, use_dim_bias=True),
                       "logits only; use_dim_bias=True" if dim_bias else "logits only")
    if functional_zoo and "at_resnet18_preact" in names:
        nb = os.path.join(functional_zoo, "resnet-18-at-export.ipynb")
        import zoo
        from zoo.parity import randomize_

        m = zoo.create_model("at_resnet18_preact", "pt")
        randomize_(m, 4)
        flat = {}
        for k, v in m.state_dict().items():  # the notebook's names: bare convs, affine .a/.b
            bare = k.endswith(".weight") and k.split(".")[-2].startswith("conv")
            flat[k[:-len(".weight")] if bare else k] = v.clone()
        export = os.path.join(tmp, "resnet-18-at-export.pth")
        torch.save(flat, export)
        with torch.no_grad():
            y = notebook_function(nb)(flat)(xt, flat)
        ok &= _row("resnet-18-at-export.ipynb define_model", "functional-zoo",
                   twin_errors("at_resnet18_preact", export, x224, [y.numpy()], tmp),
                   "logits only (the notebook returns no groups)")
    elif "at_resnet18_preact" in names:
        print("at_resnet18_preact: skipped (give --functional-zoo for its notebook's define_model)")

    if "wrn_16_1" in cifar_out and "wrn_16_2" in cifar_out:
        ok &= check_losses(utils, *loss_args)
    return ok
