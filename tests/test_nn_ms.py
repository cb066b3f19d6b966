"""zoo.nn.ms builds MindSpore layers with PyTorch's arguments and meanings: check each against torch.nn."""
import mindspore as ms
import numpy as np
import pytest
import torch
from mindspore import nn as msnn

from zoo.convert import core
from zoo.nn import drop_path_rates
from zoo.nn import ms as L
from zoo.nn.pt import DropPath

ms.set_device("CPU")
RNG = np.random.default_rng(0)


def _copy(pt_layer, ms_layer):
    """Copy a torch layer's tensors into the MindSpore layer through the converter's name rules."""
    wrapped_pt, wrapped_ms = torch.nn.Sequential(pt_layer), msnn.SequentialCell([ms_layer])
    sp = core.spec_of(wrapped_pt)
    core.load_into_ms(wrapped_ms, core.to_ms(core.pt_state(wrapped_pt), sp))
    return wrapped_pt, wrapped_ms


def _run(pt_layer, ms_layer, x, train=False, mode=ms.PYNATIVE_MODE):
    wp, wm = _copy(pt_layer, ms_layer)
    wp.train(train)
    wm.set_train(train)
    ms.set_context(mode=mode)
    try:
        a = wp(torch.from_numpy(x)).detach().numpy()
        b = wm(ms.Tensor(x)).asnumpy()
    finally:
        ms.set_context(mode=ms.PYNATIVE_MODE)
    return a, b, wp, wm


X = RNG.standard_normal((2, 4, 9, 10)).astype(np.float32)


@pytest.mark.parametrize("mode", [ms.PYNATIVE_MODE, ms.GRAPH_MODE])
@pytest.mark.parametrize("kw", [dict(kernel_size=3, stride=2, padding=1), dict(kernel_size=(3, 5), padding=(1, 2)),
                                dict(kernel_size=3, dilation=2, padding=2, groups=4, bias=False),
                                dict(kernel_size=1, stride=2)])
def test_conv2d(kw, mode):
    a, b, _, _ = _run(torch.nn.Conv2d(4, 8, **kw), L.Conv2d(4, 8, **kw), X, mode=mode)
    assert a.shape == b.shape
    np.testing.assert_allclose(a, b, atol=2e-6)


def test_conv2d_defaults_are_pytorchs():
    c = L.Conv2d(4, 8, 3)
    assert c.has_bias and c.pad_mode == "pad" and tuple(c.padding) == (0, 0, 0, 0)
    t = torch.nn.Conv2d(64, 64, 3)
    m = L.Conv2d(64, 64, 3)
    # PyTorch's default init: kaiming-uniform(a=sqrt(5)) -> bound 1/sqrt(fan_in)
    bound = 1 / np.sqrt(64 * 9)
    assert abs(m.weight.asnumpy().std() - t.weight.detach().std().item()) < 0.1 * bound
    assert np.abs(m.bias.asnumpy()).max() <= bound


@pytest.mark.parametrize("momentum", [0.1, 0.01])
def test_batchnorm_eval_train_and_running_stats(momentum):
    pt, msl = torch.nn.BatchNorm2d(4, momentum=momentum), L.BatchNorm2d(4, momentum=momentum)
    with torch.no_grad():
        pt.weight.uniform_(0.5, 1.5), pt.bias.normal_(0, 0.1), pt.running_mean.normal_(0, 0.1)
        pt.running_var.uniform_(0.5, 1.5)
    a, b, _, _ = _run(pt, msl, X, train=False)
    np.testing.assert_allclose(a, b, atol=1e-6)
    a, b, wp, wm = _run(pt, msl, X, train=True)
    np.testing.assert_allclose(a, b, atol=1e-5)
    # one train step moves the running statistics the same way (PyTorch momentum semantics)
    np.testing.assert_allclose(wp[0].running_mean.numpy(), wm[0].moving_mean.asnumpy(), atol=1e-6)
    np.testing.assert_allclose(wp[0].running_var.numpy(), wm[0].moving_variance.asnumpy(), rtol=1e-5)


@pytest.mark.parametrize("eps", [1e-5, 1e-6])
def test_layernorm_epsilon(eps):
    x = (RNG.standard_normal((3, 5, 8)) * 1e-3).astype(np.float32)  # small variance: epsilon matters
    pt, msl = torch.nn.LayerNorm(8, eps=eps), L.LayerNorm(8, eps=eps)
    a, b, _, _ = _run(pt, msl, x)
    np.testing.assert_allclose(a, b, atol=2e-5)


@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_gelu(approximate):
    x = RNG.standard_normal((4, 100)).astype(np.float32) * 3
    a, b, _, _ = _run(torch.nn.GELU(approximate=approximate), L.GELU(approximate), x)
    np.testing.assert_allclose(a, b, atol=2e-6)


@pytest.mark.parametrize("mode", [ms.PYNATIVE_MODE, ms.GRAPH_MODE])
def test_exact_gelu_against_float64_forward_and_gradient(mode):
    """``ExactGELU`` (erf-free, for speed on MindSpore's CPU) is the erf GELU to float32 rounding."""
    x = np.concatenate([RNG.standard_normal(2000) * 4, np.linspace(-30, 30, 601), [-1e4, 0.0, 1e4]]).astype(np.float32)
    xd = torch.from_numpy(x).double().requires_grad_(True)
    yd = torch.nn.functional.gelu(xd)
    gd = torch.autograd.grad(yd.sum(), xd)[0].numpy()
    act = L.GELU("none")
    grad = ms.ops.GradOperation()(act)
    ms.set_context(mode=mode)
    try:
        y, g = act(ms.Tensor(x)).asnumpy(), grad(ms.Tensor(x)).asnumpy()
    finally:
        ms.set_context(mode=ms.PYNATIVE_MODE)
    assert isinstance(act, ms.nn.GELU)
    assert np.all(np.abs(y - yd.detach().numpy()) <= 1e-6 * np.maximum(1, np.abs(yd.detach().numpy())))
    assert np.abs(g - gd).max() < 2e-6


def test_dropout_probability_is_the_drop_probability():
    d = L.Dropout(0.1)
    d.set_train(True)
    y = d(ms.Tensor(np.ones((200, 200), np.float32))).asnumpy()
    assert 0.08 < (y == 0).mean() < 0.12  # MindSpore's own first argument would drop 90%
    np.testing.assert_allclose(y[y != 0], 1 / 0.9, rtol=1e-6)


@pytest.mark.parametrize("mode", [ms.PYNATIVE_MODE, ms.GRAPH_MODE])
def test_pools(mode):
    for pt, msl in [(torch.nn.MaxPool2d(3, 2, 1), L.MaxPool2d(3, 2, 1)), (torch.nn.MaxPool2d(2), L.MaxPool2d(2)),
                    (torch.nn.AvgPool2d(3), L.AvgPool2d(3)),
                    (torch.nn.AvgPool2d(3, 1, 1, count_include_pad=False),
                     L.AvgPool2d(3, 1, 1, count_include_pad=False))]:
        a, b, _, _ = _run(pt, msl, X, mode=mode)
        assert a.shape == b.shape
        np.testing.assert_allclose(a, b, atol=1e-6)


def test_linear():
    x = RNG.standard_normal((3, 7)).astype(np.float32)
    a, b, _, _ = _run(torch.nn.Linear(7, 5), L.Linear(7, 5), x)
    np.testing.assert_allclose(a, b, atol=1e-6)


def test_drop_path_twins():
    x = np.ones((1000, 3, 2, 2), np.float32)
    for layer, run in [(DropPath(0.25), lambda m: m(torch.from_numpy(x)).numpy()),
                       (L.DropPath(0.25), lambda m: m(ms.Tensor(x)).asnumpy())]:
        (layer.train() if hasattr(layer, "train") and not hasattr(layer, "set_train") else layer.set_train(True))
        y = run(layer)
        per_sample = y.reshape(1000, -1)
        assert (per_sample.min(1) == per_sample.max(1)).all()  # one decision per sample
        assert 0.2 < (per_sample[:, 0] == 0).mean() < 0.3
        np.testing.assert_allclose(per_sample[per_sample[:, 0] != 0, 0], 1 / 0.75, rtol=1e-6)
    assert drop_path_rates(0.1, 3) == [0.0, 0.05, 0.1] and drop_path_rates(0.3, 1) == [0.0]
