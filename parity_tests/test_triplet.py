"""Triplet Attention: MindSpore and PyTorch twins compute the same function, with the reference's layout,
initialisation and published sizes."""
import mindspore as ms
import numpy as np
import pytest
import torch

import zoo
from zoo import parity, registry
from zoo.bench.flops import count_gmacs
from conftest import meta_pt, to_np  # the helpers the test files share

NAMES = registry.list_models("triplet")


# gradients in GRAPH mode (the training path) once per architecture, PYNATIVE for triplet_resnet18_k3 (the 3x3 gates)
GRAPH_GRADS = {"triplet_resnet18", "triplet_resnet50", "triplet_mobilenetv2", "triplet_resnet18_cifar"}
# The other variants repeat these blocks with other depths (ResNet-34, -101), the 3x3 gate (the _k3 variants) or
# the CIFAR stem on bottlenecks (ResNet-50-CIFAR): their forward (both modes, each at its full depth) and round
# trip run here; their gradients would only repeat the blocks' (checked above and block by block in
# test_block_gradients_strict) at 12-38 s each, and most of theirs are noise-limited at 64 px.
# `zoo parity --family triplet --small` has them all (docs/parity.md).
WITH_GRADS = GRAPH_GRADS | {"triplet_resnet18_k3"}


@pytest.mark.parametrize("name", NAMES)
def test_parity_small_input(name):
    """Forward (PYNATIVE and GRAPH), gradients and the round trip, at each model's test input."""
    e = registry.get(name)
    grads = name in WITH_GRADS
    r = parity.check(name, input_size=e.test_input_size or e.input_size, grads=grads,
                     grad_mode="graph" if name in GRAPH_GRADS else "pynative")
    print("\n" + parity.format_table([r]))
    assert r.error is None, r.error
    assert r.roundtrip
    assert set(r.fwd) == {"pynative", "graph"} and max(r.fwd.values()) <= parity.FWD_BOUND
    if grads:
        assert r.grad_ratio is not None and r.grad_ratio <= 1.0, r.grad_details[:3]
    assert r.passed


@pytest.mark.parametrize("name", ["triplet_resnet18", "triplet_resnet50", "triplet_mobilenetv2"])
def test_parity_full_size_forward(name):
    """Each ImageNet architecture once at 224 px with the reference head (the CIFAR ones run at full size above)."""
    r = parity.check(name, grads=False)
    print("\n" + parity.format_table([r]))
    assert r.input_size == (3, 224, 224)
    assert r.passed, r.error


@pytest.mark.parametrize("name", [n for n in NAMES if registry.get(n).published.params is None])
def test_parameter_count_of_code_only_variants(name):
    """A plain ResNet plus 3 gates of (2k^2 conv + 2 BN) parameters per block (the published counts are
    tests/test_contract.py's)."""
    e = registry.get(name)
    n = sum(p.numel() for p in meta_pt(name).parameters())
    plain = {"triplet_resnet34": 21_797_672, "triplet_resnet101": 44_549_160,  # torchvision resnet34/101
             "triplet_resnet18_cifar": 11_173_962, "triplet_resnet50_cifar": 23_520_842}
    base = plain[name.replace("_k3", "")]
    k = e.kwargs["gate_kernel"]
    assert n == base + sum(e.kwargs["layers"]) * 3 * (2 * k * k + 2)


@pytest.mark.parametrize("name", ["triplet_resnet18", "triplet_resnet18_k3", "triplet_resnet50", "triplet_resnet50_k3"])
def test_gmacs_within_one_percent_of_readme(name):
    e = registry.get(name)
    gmacs = count_gmacs(zoo.create_model(name, "pt"), e.input_size)
    assert abs(gmacs - e.published.gmacs) / e.published.gmacs < 0.01, gmacs


def test_mobilenetv2_gate_macs_match_readme():
    """torch's counter skips element-wise ops, which the README's MobileNetV2 totals include (-6%); the
    gates' own multiply-adds (the k=7 minus k=3 difference) match the README's 0.327 - 0.322."""
    g7 = count_gmacs(zoo.create_model("triplet_mobilenetv2", "pt"), (3, 224, 224))
    g3 = count_gmacs(zoo.create_model("triplet_mobilenetv2_k3", "pt"), (3, 224, 224))
    assert abs((g7 - g3) - 0.005) < 0.0005


def test_reference_checkpoint_keys_and_shapes():
    """Keys of the official ResNet-50 / MobileNetV2 files (spec 1.6) exist in the PyTorch twin with these shapes."""
    sd = zoo.create_model("triplet_resnet50", "pt").state_dict()
    expected = {
        "conv1.weight": (64, 3, 7, 7), "bn1.running_var": (64,), "layer1.0.conv1.weight": (64, 64, 1, 1),
        "layer1.0.conv2.weight": (64, 64, 3, 3), "layer1.0.conv3.weight": (256, 64, 1, 1),
        "layer1.0.downsample.0.weight": (256, 64, 1, 1), "layer1.0.downsample.1.weight": (256,),
        "layer1.0.triplet_attention.ChannelGateH.spatial.conv.weight": (1, 2, 7, 7),
        "layer1.0.triplet_attention.ChannelGateW.spatial.bn.running_mean": (1,),
        "layer1.0.triplet_attention.SpatialGate.spatial.bn.num_batches_tracked": (),
        "fc.weight": (1000, 2048), "fc.bias": (1000,)}
    for k, shape in expected.items():
        assert tuple(sd[k].shape) == shape, k
    mb = zoo.create_model("triplet_mobilenetv2", "pt").state_dict()
    expected = {"features.0.0.weight": (32, 3, 3, 3), "features.1.conv.0.0.weight": (32, 1, 3, 3),
                "features.1.conv.1.weight": (16, 32, 1, 1),
                "features.1.conv.3.SpatialGate.spatial.conv.weight": (1, 2, 7, 7),
                "features.2.conv.0.0.weight": (96, 16, 1, 1), "features.2.conv.1.0.weight": (96, 1, 3, 3),
                "features.2.conv.4.ChannelGateH.spatial.bn.weight": (1,), "features.18.0.weight": (1280, 320, 1, 1),
                "classifier.1.weight": (1000, 1280)}
    for k, shape in expected.items():
        assert tuple(mb[k].shape) == shape, k


@pytest.mark.parametrize("framework", ["pt", "ms"])
def test_reference_init(framework):
    """The spatial gate's BN gamma starts at 0, the channel gates' at 1; convs are kaiming-normal (fan_out)."""
    m = zoo.create_model("triplet_resnet18_cifar", framework)
    ta = m.layer2[1].triplet_attention
    val = to_np
    bn = "weight" if framework == "pt" else "gamma"
    assert val(getattr(ta.SpatialGate.spatial.bn, bn)).tolist() == [0.0]
    assert val(getattr(ta.ChannelGateH.spatial.bn, bn)).tolist() == [1.0]
    w = val(m.layer3[0].conv2.weight)  # (256, 256, 3, 3): std sqrt(2 / (256 * 9))
    assert abs(w.std() / np.sqrt(2 / (256 * 9)) - 1) < 0.05
    gate = val(ta.SpatialGate.spatial.conv.weight)  # (1, 2, 7, 7): fan_out 49, std 0.2
    assert abs(gate.std() / np.sqrt(2 / 49) - 1) < 0.35
    assert np.abs(val(m.fc.bias)).max() == 0


@pytest.mark.parametrize("framework", ["pt", "ms"])
def test_unsupported_input_size_is_a_clear_error(framework):
    m = zoo.create_model("triplet_resnet18", framework)
    x = np.zeros((1, 3, 160, 160), np.float32)
    modes = [None] if framework == "pt" else [ms.PYNATIVE_MODE, ms.GRAPH_MODE]
    for mode in modes:
        if mode is not None:
            ms.set_context(mode=mode)
        with pytest.raises((ValueError, RuntimeError), match="AvgPool2d|7x7 average pool|global_pool='avg'"):
            m(torch.from_numpy(x)) if framework == "pt" else m(ms.Tensor(x))
    ms.set_context(mode=ms.PYNATIVE_MODE)
    small = zoo.create_model("triplet_resnet18", framework, global_pool="avg")
    out = small(torch.from_numpy(x)) if framework == "pt" else small(ms.Tensor(x))
    assert tuple(out.shape) == (1, 1000)


@pytest.mark.parametrize("block", ["BasicBlock", "Bottleneck", "InvertedResidual"])
def test_block_gradients_strict(block):
    """One block on an input without near-tied maxes: every gradient within the strict bound, no noise floor.

    (Whole networks contain thousands of channel-pool maxes, some near-tied, where float32 differences
    route a gradient differently; the network tests account for that, this one shows the blocks match
    exactly where the maths is well determined.)"""
    from mindspore import nn as msnn

    from zoo.models.triplet import ms as M
    from zoo.models.triplet import pt as P

    args = {"BasicBlock": ((64, 64), (64, 16, 16)), "Bottleneck": ((256, 64), (256, 12, 12)),
            "InvertedResidual": ((32, 32, 1, 6), (32, 16, 16))}[block]
    torch.manual_seed(0)
    pt = torch.nn.Sequential(getattr(P, block)(*args[0]))
    net = msnn.SequentialCell([getattr(M, block)(*args[0])])
    r = parity.check_pair(pt, net, args[1], label=block)
    print("\n" + parity.format_table([r]))
    assert r.error is None, r.error
    assert r.min_tie_gap >= parity.TIE_GAP
    assert r.grad_noisy == [] and r.grad_ratio < 0.5, r.grad_details[:3]
    assert r.passed
