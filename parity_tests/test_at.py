"""Attention Transfer: the MindSpore and PyTorch twins compute the same function (logits and the group outputs
the attention maps are taken from), load every file layout of the reference, and have its sizes and init;
the AT and KD losses agree across frameworks and MindSpore modes.

Cost plan (2 cores): one gradient check per architecture (WRN, ImageNet student, folded teacher, pre-activation
export), logits + group outputs in both MindSpore modes for every variant (ImageNet ones at 64 px with global
pooling, and each ImageNet architecture once at 224 px with the reference head), layouts on the smallest
networks. ``zoo parity --family at --small`` measures every variant's gradients (docs/parity.md).
"""
import os
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

NAMES = registry.list_models("at")
WRN = [n for n in NAMES if n.startswith("wrn_")]


def _show(r):
    print("\n" + parity.format_table([r]))


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
    _show(r)
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


@pytest.mark.parametrize("name,size,batch", _variant_cases(), ids=lambda v: "x".join(map(str, v)) if isinstance(v, tuple) else str(v))
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

@pytest.mark.parametrize("name", NAMES)
def test_parameter_count(name):
    """Trainable parameters (running statistics are buffers) against the published / reference-printed counts."""
    e = registry.get(name)
    with torch.device("meta"):
        n = sum(p.numel() for p in e.builder("pt")(**e.kwargs, num_classes=e.num_classes).parameters())
    if name == "wrn_28_10":
        assert round(n / 1e6, 1) == 36.5  # the WRN paper's WRN-28-10 (Zagoruyko & Komodakis, 2016)
    else:
        assert n == e.published.params


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

    def val(t):
        return t.detach().numpy() if framework == "pt" else t.asnumpy()

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
def test_classifier_arguments(framework):
    """num_classes=0 returns the pooled features; reset_classifier puts a new head on."""
    m = zoo.create_model("wrn_16_1", framework, num_classes=0)
    x = np.zeros((2, 3, 32, 32), np.float32)

    def run(mod):
        if framework == "pt":
            mod.eval()
            with torch.no_grad():
                return mod(torch.from_numpy(x)).numpy()
        mod.set_train(False)
        return mod(ms.Tensor(x)).asnumpy()

    assert run(m).shape == (2, 64) and m.num_features == 64 and m.num_classes == 0
    m.reset_classifier(7)
    assert run(m).shape == (2, 7) and m.num_classes == 7
    if framework == "ms":
        assert {p.name for p in m.fc.get_parameters()} == {"fc.weight", "fc.bias"}


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
