"""Attention Transfer: the MindSpore and PyTorch twins compute the same function (logits and the group outputs
the attention maps are taken from), load every file layout of the reference, and have its sizes and init;
the AT and KD losses agree across frameworks and MindSpore modes.

Cost plan (2 cores): one gradient check per architecture (WRN, ImageNet student, folded teacher, pre-activation
export), logits + group outputs in both MindSpore modes for every variant (ImageNet ones at 64 px with global
pooling, and each ImageNet architecture once at 224 px with the reference head), layouts on the smallest
networks. ``zoo parity --family at --small`` measures every variant's gradients (docs/parity.md).
"""
import re

import mindspore as ms
import numpy as np
import pytest
import torch
import torch.nn.functional as F

import zoo
from zoo import parity, registry
from zoo.bench.flops import count_gmacs
from zoo.convert import convert_file, core, load_state
from conftest import meta_pt, show, to_np  # the helpers the test files share

NAMES = registry.list_models("at")
WRN = [n for n in NAMES if n.startswith("wrn_")]


# --- gradients, once per architecture -------------------------------------------------------------

@pytest.mark.parametrize("name,size,batch,mode", [("wrn_16_2", 32, 4, "graph"), ("at_resnet18", 64, 2, "graph"),
                                                  ("at_resnet34_folded", 32, 1, "pynative"),
                                                  ("at_resnet18_preact", 32, 1, "pynative")])
def test_parity_gradients(name, size, batch, mode):
    """Forward in both modes, train-mode gradients of every parameter, the bit-identical round trip.

    The students in GRAPH mode (the training path); the BatchNorm-free teachers at 32 px, one sample.
    (WRN at batch 4: with 2 samples, a train-mode BatchNorm over the 8x8 last group makes some gradients
    ill-conditioned on random weights; float32 itself then misses the bound against float64.)"""
    e = registry.get(name)
    kwargs = dict(e.test_kwargs) if size != e.input_size[1] else {}
    r = parity.check(name, input_size=(3, size, size), batch=batch, grad_mode=mode, **kwargs)
    show(r)
    assert r.error is None, r.error
    assert r.roundtrip
    assert set(r.fwd) == {"pynative", "graph"} and max(r.fwd.values()) <= max(10 * r.fwd_floor, 1e-6)
    assert r.grad_mode == mode and r.grad_ratio is not None and r.grad_ratio <= 0.2, r.grad_details[:3]
    assert r.grad_noisy == [], r.grad_noisy
    assert r.passed


# --- logits and group outputs of every variant, both MindSpore modes ----------------------------------

def _twins(name, seed=0, **kwargs):
    """Both twins of a registered model with the same generic weights (copied through the converter)."""
    from zoo.factory import build_kwargs

    e = registry.get(name)
    build = build_kwargs(e, **kwargs)
    torch.manual_seed(seed)
    pt = e.builder("pt")(**build)
    net = e.builder("ms")(**build)
    return pt, net


def _load_pair(pt, net, size, seed=0):
    parity.randomize_(pt, seed, (4, *size))
    sp = core.spec_of(pt)
    state = core.pt_state(pt)
    core.load_into_ms(net, core.to_ms(state, sp))
    back = core.from_ms(core.ms_params(net), sp)
    return all(np.array_equal(back[k], v) for k, v in state.items() if not k.endswith("num_batches_tracked"))


class _Intermediates(ms.nn.Cell):
    """Compiles forward_intermediates + forward_head as one GRAPH (what distillation runs)."""

    def __init__(self, net):
        super().__init__(auto_prefix=False)
        self.net = net

    def construct(self, x):
        final, feats = self.net.forward_intermediates(x)
        return (self.net.forward_head(final),) + tuple(feats)


def compare_intermediates(pt, net, x):
    """{mode: [error of logits, error of g0, g1, ...]}, each max|ms - pt| / max(1, max|pt|), eval mode."""
    pt.eval()
    net.set_train(False)
    with torch.no_grad():
        final, feats = pt.forward_intermediates(torch.from_numpy(x))
        want = [pt.forward_head(final).numpy()] + [f.numpy() for f in feats]
    cell = _Intermediates(net)
    out = {}
    for mode in (ms.PYNATIVE_MODE, ms.GRAPH_MODE):
        ms.set_context(mode=mode)
        got = [t.asnumpy() for t in cell(ms.Tensor(x))]
        assert [g.shape for g in got] == [w.shape for w in want]
        out["graph" if mode == ms.GRAPH_MODE else "pynative"] = [
            float(np.abs(g - w).max()) / max(1.0, float(np.abs(w).max())) for g, w in zip(got, want)]
    ms.set_context(mode=ms.PYNATIVE_MODE)
    return out


FULL_SIZE = ("at_resnet18", "at_resnet34_folded", "at_resnet18_preact")  # each ImageNet architecture at 224 px


def _variant_cases():
    """Every variant once: the CIFAR ones at 32 px, each ImageNet architecture at 224 px (the reference head),
    the other ImageNet variants at 32 px with global pooling."""
    return [(n, (3, 224, 224) if n in FULL_SIZE else (3, 32, 32), 1) for n in NAMES]


@pytest.mark.parametrize("name,size,batch", _variant_cases(),
                         ids=lambda v: "x".join(map(str, v)) if isinstance(v, tuple) else str(v))
def test_logits_and_group_outputs(name, size, batch):
    """The logits and every group output (the attention points), PYNATIVE and GRAPH, and the round trip."""
    e = registry.get(name)
    kwargs = dict(e.test_kwargs) if tuple(size) != tuple(e.input_size) else {}
    pt, net = _twins(name, **kwargs)
    assert _load_pair(pt, net, size)
    x = np.random.default_rng(1).standard_normal((batch, *size)).astype(np.float32)
    errs = compare_intermediates(pt, net, x)
    print(f"\n{name} {size}: " + "; ".join(f"{m}: " + " ".join(f"{v:.1e}" for v in vs) for m, vs in errs.items()))
    assert len(errs["graph"]) == 1 + len(pt.feature_info)
    assert max(max(v) for v in errs.values()) <= 1e-5, errs


def test_feature_info_matches_the_group_outputs():
    for name in ("wrn_16_2", "at_resnet18", "at_resnet18_folded", "at_resnet18_preact"):
        e = registry.get(name)
        m = zoo.create_model(name, "pt", **(e.test_kwargs if name.startswith("at_") else {})).eval()
        size = e.test_input_size
        with torch.no_grad():
            final, feats = m.forward_intermediates(torch.zeros(1, *size))
        assert tuple(final.shape[1:2]) == (m.num_features,)
        assert [f.shape[1] for f in feats] == [i["num_chs"] for i in m.feature_info]
        assert [size[1] // f.shape[2] for f in feats] == [i["reduction"] for i in m.feature_info]
        assert [i["module"] for i in m.feature_info] == [f"group{g}" for g in range(len(feats))]
        assert all(isinstance(m.get_submodule(i["module"]), torch.nn.Module) for i in m.feature_info)


# --- sizes, init, interface ------------------------------------------------------------------------

# torchvision's ResNet-18 / ResNet-34 counts (11,689,512 / 21,797,672) less what these networks lack
_BN_CHANNELS_18 = 64 + 4 * (64 + 128 + 256 + 512) + (128 + 256 + 512)  # every BatchNorm of torchvision's ResNet-18
DERIVED_PARAMS = {
    "at_resnet34": 21_797_672 - 2 * (128 + 256 + 512),  # no BatchNorm on the projection shortcuts
    "at_resnet18_folded": 11_689_512 - 2 * _BN_CHANNELS_18 + (64 + 4 * (64 + 128 + 256 + 512)),  # BN -> conv biases
}


@pytest.mark.parametrize("name", ["wrn_28_10", *DERIVED_PARAMS])
def test_parameter_count_of_unpublished_variants(name):
    """Trainable parameters (running statistics are buffers) of the variants without a published count, derived
    from other published counts (the published ones: tests/test_contract.py)."""
    assert registry.get(name).published.params is None
    n = sum(p.numel() for p in meta_pt(name).parameters())
    if name == "wrn_28_10":
        assert round(n / 1e6, 1) == 36.5  # the WRN paper's WRN-28-10 (Zagoruyko & Komodakis, 2016)
    else:
        assert n == DERIVED_PARAMS[name]


def test_reference_34_block_counts_have_the_reference_size():
    """define_student(34) builds [3, 4, 6, 5]: 31.2 M parameters (spec 2.1)."""
    from zoo.models.at.pt import ResNet

    with torch.device("meta"):
        n = sum(p.numel() for p in ResNet(layers=(3, 4, 6, 5)).parameters())
    assert round(n / 1e6, 1) == 31.2


@pytest.mark.parametrize("name,gmacs", [("wrn_16_1", 0.0267), ("wrn_40_2", 0.3276), ("at_resnet18", 1.8141),
                                        ("at_resnet34_folded", 3.6638)])
def test_gmacs(name, gmacs):
    """Multiply-adds counted with torch's counter (the figures of docs/models.md)."""
    e = registry.get(name)
    got = count_gmacs(zoo.create_model(name, "pt"), e.input_size)
    assert abs(got - gmacs) / gmacs < 0.01, got


@pytest.mark.parametrize("framework", ["pt", "ms"])
def test_reference_init(framework):
    """utils.py: conv and fc kaiming-normal (fan_in), fc bias 0, BatchNorm weight uniform in [0, 1), bias 0."""
    m = zoo.create_model("wrn_16_2", framework)
    val = to_np
    w, b = ("weight", "bias") if framework == "pt" else ("gamma", "beta")
    gammas = np.concatenate([val(getattr(bn, w)) for bn in (m.group1.block0.bn0, m.group2.block1.bn1, m.bn)])
    assert gammas.min() >= 0 and gammas.max() < 1 and 0.4 < gammas.mean() < 0.6 and gammas.std() > 0.2
    assert np.all(val(getattr(m.bn, b)) == 0)
    conv = val(m.group2.block1.conv1.weight)  # (128, 128, 3, 3): std sqrt(2 / (128 * 9))
    assert abs(conv.std() / np.sqrt(2 / (128 * 9)) - 1) < 0.05
    fc = val(m.fc.weight)  # (10, 128): std sqrt(2 / 128)
    assert abs(fc.std() / np.sqrt(2 / 128) - 1) < 0.15
    assert np.all(val(m.fc.bias) == 0)


@pytest.mark.parametrize("framework", ["pt", "ms"])
def test_unsupported_input_size_is_a_clear_error(framework):
    m = zoo.create_model("at_resnet18_folded", framework)
    x = np.zeros((1, 3, 160, 160), np.float32)
    with pytest.raises((ValueError, RuntimeError), match="193..224 px|global_pool='avg'"):
        m(torch.from_numpy(x)) if framework == "pt" else m(ms.Tensor(x))
    w = zoo.create_model("wrn_16_1", framework)
    with pytest.raises((ValueError, RuntimeError), match="29..32 px"):
        x = np.zeros((1, 3, 64, 64), np.float32)
        w(torch.from_numpy(x)) if framework == "pt" else w(ms.Tensor(x))
    small = zoo.create_model("at_resnet18_folded", framework, global_pool="avg")
    x = np.zeros((1, 3, 160, 160), np.float32)
    out = small(torch.from_numpy(x)) if framework == "pt" else small(ms.Tensor(x))
    assert tuple(out.shape) == (1, 1000)


def test_folded_teacher_bias_choice():
    """The default ignores conv_dim.bias as imagenet.py does; use_dim_bias=True adds it (functional-zoo)."""
    ref = zoo.create_model("at_resnet34_folded", "pt", global_pool="avg").eval()
    fixed = zoo.create_model("at_resnet34_folded", "pt", global_pool="avg", use_dim_bias=True).eval()
    with torch.no_grad():
        for blk in (ref.group1.block0, ref.group2.block0, ref.group3.block0):
            blk.conv_dim.bias.normal_()
    fixed.load_state_dict(ref.state_dict())
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        a, b = ref(x), fixed(x)
        ref.group1.block0.conv_dim.bias.zero_()
        ref.group2.block0.conv_dim.bias.zero_()
        ref.group3.block0.conv_dim.bias.zero_()
        c = ref(x)
    assert not torch.allclose(a, b) and torch.equal(a, c)  # the default never reads the bias
    assert "ignored" in ref.variant and "applied" in fixed.variant
    assert not ref.group1.block0.conv_dim.bias.requires_grad


# --- the reference's file layouts -------------------------------------------------------------------
# Files are written here as the reference writes them (flat dicts named by its scheme, torch.save of
# {'params', 'optimizer', 'epoch'}), from the twin's random weights; the reference's functions (written
# out below from cifar.py / imagenet.py / the functional-zoo notebooks) compute the expected outputs from the
# flat dict, and the converted twins must agree with them. tools/check_reference.py does the same with
# the reference repository's own code.

def _bn_f(x, p, base):
    return F.batch_norm(x, p[base + ".running_mean"], p[base + ".running_var"], p[base + ".weight"],
                        p[base + ".bias"], False)


def _pool_f(o, k, stride, size):
    return F.avg_pool2d(o, k, stride, 0) if size in (32, 224) else o.mean((2, 3), keepdim=True)


def ref_wrn(x, p, depth, base=""):
    """cifar.py resnet(depth, width).f in eval mode."""
    n = (depth - 4) // 6

    def block(x, b, stride):
        o1 = F.relu(_bn_f(x, p, b + ".bn0"))
        y = F.conv2d(o1, p[b + ".conv0"], stride=stride, padding=1)
        o2 = F.relu(_bn_f(y, p, b + ".bn1"))
        z = F.conv2d(o2, p[b + ".conv1"], stride=1, padding=1)
        return z + F.conv2d(o1, p[b + ".convdim"], stride=stride) if b + ".convdim" in p else z + x

    o = F.conv2d(x, p[base + "conv0"], padding=1)
    gs = []
    for g, s in enumerate((1, 2, 2)):
        for i in range(n):
            o = block(o, f"{base}group{g}.block{i}", s if i == 0 else 1)
        gs.append(o)
    o = _pool_f(F.relu(_bn_f(o, p, base + "bn")), 8, 1, x.shape[-1]).flatten(1)
    return F.linear(o, p[base + "fc.weight"], p[base + "fc.bias"]), gs


def ref_student(x, p, blocks, base=""):
    """imagenet.py define_student(...).f in eval mode."""
    def block(x, b, stride):
        y = F.conv2d(x, p[b + ".conv0"], stride=stride, padding=1)
        o1 = F.relu(_bn_f(y, p, b + ".bn0"))
        o2 = _bn_f(F.conv2d(o1, p[b + ".conv1"], padding=1), p, b + ".bn1")
        return F.relu(o2 + F.conv2d(x, p[b + ".convdim"], stride=stride)) if b + ".convdim" in p else F.relu(o2 + x)

    o = F.max_pool2d(F.relu(_bn_f(F.conv2d(x, p[base + "conv0"], stride=2, padding=3), p, base + "bn0")), 3, 2, 1)
    gs = []
    for g, n in enumerate(blocks):
        for i in range(n):
            o = block(o, f"{base}group{g}.block{i}", 2 if (g and not i) else 1)
        gs.append(o)
    o = _pool_f(o, 7, 7, x.shape[-1]).flatten(1)
    return F.linear(o, p[base + "fc.weight"], p[base + "fc.bias"]), gs


def ref_folded(x, p, base="", dim_bias=False):
    """imagenet.py define_teacher(...).f (dim_bias=False), or the functional-zoo notebook's (True)."""
    blocks = [sum(re.match(rf"{re.escape(base)}group{j}.block\d+.conv0.weight$", k) is not None for k in p)
              for j in range(4)]

    def conv(x, b, stride=1, pad=0):
        return F.conv2d(x, p[b + ".weight"], p[b + ".bias"], stride, pad)

    o = F.max_pool2d(F.relu(conv(x, base + "conv0", 2, 3)), 3, 2, 1)
    gs = []
    for g, n in enumerate(blocks):
        stride = 1 if g == 0 else 2
        for i in range(n):
            b = f"{base}group{g}.block{i}.conv"
            xin = o
            o = F.relu(conv(xin, b + "0", stride if i == 0 else 1, 1))
            o = conv(o, b + "1", 1, 1)
            if i == 0 and stride != 1:
                if dim_bias:
                    o = o + conv(xin, b + "_dim", stride)
                else:
                    o = o + F.conv2d(xin, p[b + "_dim.weight"], stride=stride)
            else:
                o = o + xin
            o = F.relu(o)
        gs.append(o)
    o = _pool_f(o, 7, 1, x.shape[-1]).flatten(1)
    return F.linear(o, p[base + "fc.weight"], p[base + "fc.bias"]), gs


def ref_affine(x, p):
    """functional-zoo resnet-18-at-export.ipynb define_model(params)."""
    def affine(o, b):
        return o * p[b + ".a"].view(1, -1, 1, 1) + p[b + ".b"].view(1, -1, 1, 1)

    def group(o, base, stride):
        if base == "group0":
            x0 = o
            o = F.conv2d(x0, p[base + ".block0.conv0"], padding=1)
            o = F.conv2d(F.relu(affine(o, base + ".block0.affine1")), p[base + ".block0.conv1"], padding=1) + x0
        else:
            x0 = F.relu(affine(o, base + ".block0.affine0"))
            o = F.conv2d(x0, p[base + ".block0.conv0"], padding=1, stride=stride)
            o = F.conv2d(F.relu(affine(o, base + ".block0.affine1")), p[base + ".block0.conv1"], padding=1)
            o = o + F.conv2d(x0, p[base + ".block0.conv_dim"], stride=stride)
        x1 = o
        o = F.conv2d(F.relu(affine(x1, base + ".block1.affine0")), p[base + ".block1.conv0"], padding=1)
        o = F.conv2d(F.relu(affine(o, base + ".block1.affine1")), p[base + ".block1.conv1"], padding=1)
        return o + x1

    o = F.max_pool2d(F.relu(affine(F.conv2d(x, p["conv0"], stride=2, padding=3), "affine0")), 3, 2, 1)
    gs = []
    for g in range(4):
        o = group(o, f"group{g}", 1 if g == 0 else 2)
        gs.append(o)
    o = _pool_f(F.relu(affine(o, "affine_last")), 7, 1, x.shape[-1]).flatten(1)
    return F.linear(o, p["fc.weight"], p["fc.bias"]), gs


def reference_params(model):
    """The twin's weights as the reference's flat dict: ``utils.flatten`` names, conv tensors bare (functional
    convs) or with .weight/.bias (the folded exports), BatchNorm statistics in the dict, no counters."""
    folded = type(model).__name__ == "FoldedResNet"
    out = {}
    for mod_name, mod in model.named_modules():
        if isinstance(mod, torch.nn.Conv2d):
            if folded:
                out[mod_name + ".weight"] = mod.weight.detach().clone()
                if mod.bias is not None:
                    out[mod_name + ".bias"] = mod.bias.detach().clone()
            else:
                out[mod_name] = mod.weight.detach().clone()
        elif isinstance(mod, torch.nn.BatchNorm2d):
            for leaf in ("weight", "bias", "running_mean", "running_var"):
                out[f"{mod_name}.{leaf}"] = getattr(mod, leaf).detach().clone()
        elif isinstance(mod, torch.nn.Linear):
            out[mod_name + ".weight"], out[mod_name + ".bias"] = mod.weight.detach().clone(), mod.bias.detach().clone()
        elif type(mod).__name__ == "Affine":
            out[mod_name + ".a"], out[mod_name + ".b"] = mod.a.detach().clone(), mod.b.detach().clone()
    return out


def save_like_reference(path, params, epoch=3, old_style=False):
    """cifar.py / imagenet.py ``log``: torch.save(dict(params=..., optimizer=..., epoch=...)); before May 2018
    the BatchNorm statistics went to a separate ``stats`` entry."""
    trainable = [v.requires_grad_() for k, v in params.items() if not k.endswith(("running_mean", "running_var"))]
    opt = torch.optim.SGD(trainable, 0.0, momentum=0.9, weight_decay=5e-4)
    sum((v * v).sum() for v in trainable).backward()
    opt.step()  # a momentum buffer per tensor, as after training (lr 0: the weights stay)
    opt.param_groups[0]["lr"] = 0.1
    data = {k: v.detach() for k, v in params.items()}
    if old_style:
        stats = {k: v for k, v in data.items() if k.endswith(("running_mean", "running_var"))}
        torch.save(dict(params={k: v for k, v in data.items() if k not in stats}, stats=stats,
                        optimizer=opt.state_dict(), epoch=epoch), path)
    else:
        torch.save(dict(params=data, optimizer=opt.state_dict(), epoch=epoch), path)


def _random_twin(name, size, seed=0, **kwargs):
    m = zoo.create_model(name, "pt", **kwargs)
    parity.randomize_(m, seed, (4, *size))
    with torch.no_grad():  # no exact zeros left (the folded teacher's shortcut bias, say)
        for p in m.parameters():
            p.add_(torch.randn(p.shape) * 0.01)
    return m.eval()


def _max_err(got, want):
    return max(float((g - w).abs().max()) / max(1.0, float(w.abs().max())) for g, w in zip(got, want))


def _pt_outputs(model, x):
    with torch.no_grad():
        final, feats = model.eval().forward_intermediates(x)
        return [model.forward_head(final)] + list(feats)


def _ms_outputs(name, ckpt, x, **kwargs):
    net = zoo.create_model(name, "ms", checkpoint=ckpt, **kwargs)
    cell = _Intermediates(net)
    net.set_train(False)
    outs = []
    for mode in (ms.PYNATIVE_MODE, ms.GRAPH_MODE):
        ms.set_context(mode=mode)
        outs.append([torch.from_numpy(t.asnumpy()) for t in cell(ms.Tensor(x.numpy()))])
    ms.set_context(mode=ms.PYNATIVE_MODE)
    return outs


def test_cifar_model_pt7_layouts(tmp_path):
    """cifar.py files: one network; a distillation run (student.* and teacher.*); the pre-May-2018
    {'params', 'stats'} file. Converted to MindSpore, both twins give the reference function's logits and groups."""
    student = _random_twin("wrn_16_1", (3, 32, 32), 1)
    teacher = _random_twin("wrn_16_2", (3, 32, 32), 2)
    x = torch.randn(2, 3, 32, 32)
    ps, pt_ = reference_params(student), reference_params(teacher)
    with torch.no_grad():
        y, g = ref_wrn(x, ps, 16)
        want_s = [y] + g
        y, g = ref_wrn(x, pt_, 16)
        want_t = [y] + g

    single, distil, old = tmp_path / "single.pt7", tmp_path / "distil.pt7", tmp_path / "old.pt7"
    save_like_reference(single, dict(ps))
    merged = {"student." + k: v for k, v in ps.items()}
    merged.update({"teacher." + k: v for k, v in pt_.items()})
    save_like_reference(distil, merged)
    save_like_reference(old, dict(ps), old_style=True)

    ckpt = tmp_path / "wrn_16_1.ckpt"
    loaded = convert_file("wrn_16_1", str(distil), str(ckpt))
    assert loaded.layout == "reference"
    for outs in _ms_outputs("wrn_16_1", str(ckpt), x):
        assert _max_err(outs, want_s) < 1e-5
    for src in (single, distil, old):
        m = zoo.create_model("wrn_16_1", "pt", checkpoint=str(src))
        assert _max_err(_pt_outputs(m, x), want_s) < 1e-5, src
    assert any("stats" in n for n in load_state("wrn_16_1", str(old)).notes)
    # the teacher: by the explicit layout, and automatically for a model only the teacher's weights fit
    for layout in ("reference-teacher", "auto"):
        t = zoo.create_model("wrn_16_2", "pt", checkpoint=str(distil), layout=layout)
        assert _max_err(_pt_outputs(t, x), want_t) < 1e-5
    assert load_state("wrn_16_2", str(distil)).layout == "reference-teacher"


def test_imagenet_model_pt7_and_functional_zoo_layouts(tmp_path):
    """imagenet.py's model.pt7 after a run: the student of define_student(34) with the reference's [3, 4, 6, 5]
    blocks (at width 0.25 here, to keep the file small) and a folded teacher whose shortcut convs carry biases
    (as resnet-34-export's do; a ResNet-18 here); then the functional-zoo flat export. 64 px with global
    pooling (each architecture's full size runs above)."""
    from zoo.models.at.pt import ResNet

    size = (3, 64, 64)
    torch.manual_seed(3)
    student = ResNet(layers=(3, 4, 6, 5), width=0.25, global_pool="avg")
    parity.randomize_(student, 3, (4, *size))
    student.eval()
    teacher = _random_twin("at_resnet18_folded", size, 4, global_pool="avg", dim_bias=True)
    x = torch.randn(1, *size)
    ps, pt_ = reference_params(student), reference_params(teacher)
    assert "group1.block0.conv_dim.bias" in pt_ and "group3.block4.conv0" in ps
    with torch.no_grad():
        ys, gs = ref_student(x, ps, (3, 4, 6, 5))
        yt, gt = ref_folded(x, pt_)
        yt_fixed = ref_folded(x, pt_, dim_bias=True)[0]
    run = tmp_path / "model.pt7"
    merged = {"student." + k: v for k, v in ps.items()}
    merged.update({"teacher." + k: v for k, v in pt_.items()})
    save_like_reference(run, merged)

    s = zoo.create_model("at_resnet34", "pt", checkpoint=str(run), global_pool="avg", width=0.25)
    assert s.layers == (3, 4, 6, 5)
    assert _max_err(_pt_outputs(s, x), [ys] + gs) < 1e-5
    assert load_state("at_resnet18_folded", str(run)).layout == "reference-teacher"
    t = zoo.create_model("at_resnet18_folded", "pt", checkpoint=str(run), global_pool="avg")
    assert t.dim_bias and not t.use_dim_bias
    assert _max_err(_pt_outputs(t, x), [yt] + gt) < 1e-5
    fixed = zoo.create_model("at_resnet18_folded", "pt", checkpoint=str(run), global_pool="avg", use_dim_bias=True)
    assert _max_err(_pt_outputs(fixed, x)[:1], [yt_fixed]) < 1e-5 and _max_err([yt], [yt_fixed]) > 1e-4

    # the functional-zoo export: a flat dict (torch.load gives the dict itself), into both twins
    export = tmp_path / "resnet-18-export.pth"
    torch.save(pt_, export)
    ckpt = tmp_path / "t.ckpt"
    assert convert_file("at_resnet18_folded", str(export), str(ckpt), global_pool="avg").layout == "zoo"
    for outs in _ms_outputs("at_resnet18_folded", str(ckpt), x, global_pool="avg"):
        assert _max_err(outs, [yt] + gt) < 1e-5


# resnet-18-at-export's tensors as the functional-zoo notebook prints them (name, shape); groups 1-3 alike
_AT_EXPORT = ["affine0.a 64", "affine0.b 64", "affine_last.a 512", "affine_last.b 512", "conv0 64,3,7,7",
              "fc.bias 1000", "fc.weight 1000,512", "group0.block0.affine1.a 64", "group0.block0.affine1.b 64",
              "group0.block0.conv0 64,64,3,3", "group0.block0.conv1 64,64,3,3"] + [
    f"group0.block1.{t}" for t in ("affine0.a 64", "affine0.b 64", "affine1.a 64", "affine1.b 64",
                                   "conv0 64,64,3,3", "conv1 64,64,3,3")] + [
    line for g, (ci, co) in enumerate(((64, 128), (128, 256), (256, 512)), 1) for line in (
        f"group{g}.block0.affine0.a {ci}", f"group{g}.block0.affine0.b {ci}", f"group{g}.block0.affine1.a {co}",
        f"group{g}.block0.affine1.b {co}", f"group{g}.block0.conv0 {co},{ci},3,3",
        f"group{g}.block0.conv1 {co},{co},3,3",
        f"group{g}.block0.conv_dim {co},{ci},1,1", f"group{g}.block1.affine0.a {co}", f"group{g}.block1.affine0.b {co}",
        f"group{g}.block1.affine1.a {co}", f"group{g}.block1.affine1.b {co}", f"group{g}.block1.conv0 {co},{co},3,3",
        f"group{g}.block1.conv1 {co},{co},3,3")]


def test_resnet18_at_export_layout(tmp_path):
    """The official AT model's file: the notebook's 57 tensors (11,687,720 values) load into the pre-activation
    twin, which computes the notebook's function."""
    size = (3, 64, 64)
    m = _random_twin("at_resnet18_preact", size, 6, global_pool="avg")
    p = reference_params(m)
    want = {line.split()[0]: tuple(int(v) for v in line.split()[1].split(",")) for line in _AT_EXPORT}
    assert {k: tuple(v.shape) for k, v in p.items()} == want
    assert sum(int(np.prod(s)) for s in want.values()) == 11_687_720
    path = tmp_path / "resnet-18-at-export.pth"
    torch.save(p, path)
    x = torch.randn(1, *size)
    with torch.no_grad():
        y, g = ref_affine(x, p)
    assert load_state("at_resnet18_preact", str(path)).layout == "functional-zoo"
    back = zoo.create_model("at_resnet18_preact", "pt", checkpoint=str(path), global_pool="avg")
    assert _max_err(_pt_outputs(back, x), [y] + g) < 1e-5


def test_write_back_to_the_reference_layout(tmp_path, capsys):
    """A zoo checkpoint (MindSpore .ckpt here) written as cifar.py's model.pt7: the reference's function on its
    'params' gives the twin's logits, and its optimizer entry loads into the SGD cifar.py builds on resume."""
    m = _random_twin("wrn_16_2", (3, 32, 32), 7)
    src = tmp_path / "zoo.pth"
    torch.save(m.state_dict(), src)
    ckpt = tmp_path / "zoo.ckpt"
    convert_file("wrn_16_2", str(src), str(ckpt))
    dst = tmp_path / "model.pt7"  # the command as docs/distillation.md gives it
    from zoo.cli import main  # the command line's entry point, in this process

    code = main(["convert", "wrn_16_2", str(ckpt), str(dst), "--to-layout", "reference"])
    out = capsys.readouterr()
    assert code == 0, out.err
    assert "reference layout" in out.out
    saved = torch.load(dst, weights_only=True)
    assert set(saved) == {"params", "optimizer", "epoch"}
    params = saved["params"]
    assert "group0.block0.convdim" in params and "group0.block0.conv0" in params and "bn.running_var" in params
    assert not any(k.endswith("num_batches_tracked") or k.endswith("conv0.weight") for k in params)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert _max_err([ref_wrn(x, params, 16)[0]], _pt_outputs(m, x)[:1]) < 1e-6
    # cifar.py --resume: SGD over the tensors that require grad, in the dict's order, then load_state_dict
    trainable = [v.requires_grad_() for k, v in params.items() if not k.endswith(("running_mean", "running_var"))]
    opt = torch.optim.SGD(trainable, 0.1, momentum=0.9, weight_decay=5e-4)
    opt.load_state_dict(saved["optimizer"])
    # the folded teachers go to the functional-zoo flat dict instead; the error names the right layout
    with pytest.raises(zoo.errors.ConversionError, match="--to-layout reference"):
        convert_file("wrn_16_2", str(ckpt), str(tmp_path / "x.pt7"), to_layout="functional-zoo")
    assert not (tmp_path / "x.pt7").exists()


# --- losses ------------------------------------------------------------------------------------------

class _LossCell(ms.nn.Cell):
    def __init__(self, kind, **kw):
        super().__init__()
        from zoo.losses import ms as LM
        self.fn = {"at": LM.at_loss, "kd": LM.kd_loss}[kind]
        self.kind, self.kw = kind, kw

    def construct(self, a, b, c):
        if self.kind == "at":
            return self.fn(a, b, **self.kw)
        return self.fn(a, b, c, **self.kw)


class _GradCell(ms.nn.Cell):
    def __init__(self, net):
        super().__init__()
        self.net, self.grad = net, ms.ops.GradOperation()

    def construct(self, a, b, c):
        return self.grad(self.net)(a, b, c)


def _loss_parity(kind, a, b, c, **kw):
    """Relative differences (value, gradient w.r.t. the student's input) of the MindSpore loss against the
    PyTorch one, per MindSpore mode."""
    from zoo.losses import pt as LP

    ta = torch.from_numpy(a).requires_grad_()
    tb, tc = torch.from_numpy(b), torch.from_numpy(c)
    want = LP.at_loss(ta, tb, **kw) if kind == "at" else LP.kd_loss(ta, tb, tc, **kw)
    want.backward()
    gw = ta.grad.numpy().astype(np.float64)
    # float32's own error here: PyTorch float32 against float64
    ta64 = torch.from_numpy(a).double().requires_grad_()
    w64 = LP.at_loss(ta64, tb.double(), **kw) if kind == "at" else LP.kd_loss(ta64, tb.double(), tc, **kw)
    w64.backward()
    floor = (abs(float(want.detach()) - float(w64.detach())) / abs(float(w64.detach())),
             float(np.linalg.norm(gw - ta64.grad.numpy()) / np.linalg.norm(ta64.grad.numpy())))
    out = {"floor": floor}
    for mode, label in ((ms.PYNATIVE_MODE, "pynative"), (ms.GRAPH_MODE, "graph")):
        ms.set_context(mode=mode)
        cell = _LossCell(kind, **kw)
        args = (ms.Tensor(a), ms.Tensor(b), ms.Tensor(c))
        v = float(cell(*args).asnumpy())
        g = _GradCell(cell)(*args).asnumpy().astype(np.float64)
        w = float(want.detach())
        out[label] = (abs(v - w) / abs(w), np.linalg.norm(g - gw) / np.linalg.norm(gw))
    ms.set_context(mode=ms.PYNATIVE_MODE)
    return float(want.detach()), out


@pytest.mark.parametrize("mode", ["code", "paper"])
@pytest.mark.parametrize("scale", [1e-3, 1.0, 30.0])
def test_at_loss_parity(mode, scale):
    """Value and gradient w.r.t. the student's map, both MindSpore modes, to 1e-6 relative; student and
    teacher maps of different widths (16 and 64 channels), 16x16 positions."""
    rng = np.random.default_rng(int(scale * 1000) + (mode == "paper"))
    s = (scale * rng.standard_normal((4, 16, 16, 16))).astype(np.float32)
    t = (scale * rng.standard_normal((4, 64, 16, 16))).astype(np.float32)
    value, errs = _loss_parity("at", s, t, np.zeros(1, np.float32), mode=mode)
    print(f"\nat_loss {mode} scale {scale}: {value:.6g}; " + "; ".join(f"{m}: value {v:.1e}, grad {g:.1e}"
                                                                   for m, (v, g) in errs.items()))
    assert value > 0
    errs.pop("floor")
    for v, g in errs.values():
        assert v <= 1e-6 and g <= 1e-6


@pytest.mark.parametrize("scale", [1e-3, 1.0, 30.0])
def test_kd_loss_parity(scale):
    """utils.distillation (T=4, alpha=0.9) on logits of each scale: value and gradient w.r.t. the student's logits."""
    rng = np.random.default_rng(7 + int(scale))
    y_s = (scale * rng.standard_normal((8, 10))).astype(np.float32)
    y_t = (scale * rng.standard_normal((8, 10))).astype(np.float32)
    labels = rng.integers(0, 10, 8).astype(np.int32)
    value, errs = _loss_parity("kd", y_s, y_t, labels, temperature=4.0, alpha=0.9)
    print(f"\nkd_loss scale {scale}: {value:.6g}; " + "; ".join(f"{m}: value {v:.1e}, grad {g:.1e}"
                                                           for m, (v, g) in errs.items()))
    # Two float32 limits, measured: at scale 1e-3 the two distributions are almost uniform, the KL term is
    # ~1e-7 of pure cancellation and PyTorch's own float32 is 1.6e-6 off float64 on the total; and MindSpore's
    # CPU exp is 4.3e-6 relative off float64 (PyTorch's 6e-8), which softmax and the T^2-scaled KL carry
    # (1.0e-6 on the value, 2.4e-6 on the gradient at scale 1). The AT loss has no exp and meets 1e-6.
    fv, fg = errs.pop("floor")
    for v, g in errs.values():
        assert v <= max(2e-6, 2 * fv) and g <= max(5e-6, 2 * fg)


def test_losses_are_the_reference_formulas():
    """Against the formulas written out (utils.at/at_loss/distillation; torchdistill's paper mode), and the
    trap the MindSpore twin avoids: ops.L2Normalize's default epsilon moves small-activation maps."""
    from zoo.losses import ms as LM
    from zoo.losses import pt as LP

    rng = np.random.default_rng(0)
    s = torch.from_numpy(rng.standard_normal((2, 8, 4, 4)).astype(np.float32)) * 1e-3
    t = torch.from_numpy(rng.standard_normal((2, 4, 4, 4)).astype(np.float32)) * 1e-3

    def at(x):
        q = (x.double() ** 2).mean(1).reshape(2, -1)
        return q / q.norm(dim=1, keepdim=True)

    assert torch.allclose(LP.at_loss(s, t).double(), ((at(s) - at(t)) ** 2).mean(), rtol=1e-5)
    assert torch.allclose(LP.at_loss(s, t, "paper").double(), (at(s) - at(t)).norm(dim=1).mean(), rtol=1e-5)
    y_s, y_t = torch.randn(4, 5), torch.randn(4, 5)
    lab = torch.tensor([0, 1, 2, 3])
    q = torch.softmax(y_t / 4, 1)
    kl = (q * (q.log() - torch.log_softmax(y_s / 4, 1))).sum() * 16 / 4
    assert torch.allclose(LP.kd_loss(y_s, y_t, lab), 0.9 * kl + 0.1 * F.cross_entropy(y_s, lab), rtol=1e-5)
    ms_map = LM.attention_map(ms.Tensor(s.numpy())).asnumpy()
    assert np.abs(ms_map - at(s).numpy()).max() < 1e-6
    q = (s.numpy() ** 2).mean(1).reshape(2, -1)
    trap = ms.ops.L2Normalize(axis=1)(ms.Tensor(q)).asnumpy()  # epsilon 1e-4 on the squared norm
    assert np.abs(trap - at(s).numpy()).max() > 0.3


def test_pool_to_parity():
    """Adaptive average pooling of the larger map (7x7 -> 4x4: overlapping windows), both frameworks and modes."""
    from zoo.losses import ms as LM
    from zoo.losses import pt as LP

    x = np.random.default_rng(0).standard_normal((2, 3, 7, 7)).astype(np.float32)
    want = LP.pool_to(torch.from_numpy(x), (4, 4)).numpy()
    for mode in (ms.PYNATIVE_MODE, ms.GRAPH_MODE):
        ms.set_context(mode=mode)
        got = LM.pool_to(ms.Tensor(x), (4, 4)).asnumpy()
        assert np.abs(got - want).max() < 1e-6
    ms.set_context(mode=ms.PYNATIVE_MODE)
