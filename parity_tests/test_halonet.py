"""HaloNet: the MindSpore and PyTorch twins compute the same function, with timm's layout and sizes,
and mindcv's halonet_50t checkpoints import into both the timm-layout and the mindcv-compatible twin.

Whole networks are checked at 256 px (the smallest input these layouts take) in forward, both
MindSpore modes; every block type is checked strictly, with gradients, on small inputs (GRAPH-mode
gradients once per block type, PYNATIVE for the rest). Random HaloNets are often chaotic in eval mode
(float32 itself cannot determine their logits to 1e-4: see docs/parity.md, "HaloNet"), so each
network test uses a weight seed on which PyTorch's float32 and float64 agree to 1e-5 and asserts it.
"""
import mindspore as ms
import numpy as np
import pytest
import torch
from mindspore import nn as msnn

import zoo
from zoo import parity, registry
from zoo.bench.flops import count_gmacs
from zoo.convert import ConversionError, convert_file
from zoo.models.halonet import config as C
from zoo.models.halonet import ms as M
from zoo.models.halonet import pt as P
from conftest import to_np  # the helpers the test files share

NAMES = registry.list_models("halonet")
FLOOR_MAX = parity.FWD_BOUND / 10


@pytest.mark.parametrize("name", NAMES)
def test_parity_forward_256(name):
    """Forward (PYNATIVE and GRAPH) and the round trip of every variant at 256 px."""
    r = parity.check(name, batch=1, grads=False)  # the registry's parity_seed
    print("\n" + parity.format_table([r]))
    assert r.error is None, r.error
    assert r.input_size == (3, 256, 256) and r.roundtrip
    assert r.fwd_floor <= FLOOR_MAX, (
        f"PyTorch float32 vs float64 differ by {r.fwd_floor:.1e} on these random weights: the network is chaotic "
        f"for seed {registry.get(name).parity_seed}, so the comparison says nothing; record another parity_seed "
        f"(config.PARITY_SEEDS) with a floor below {FLOOR_MAX}")
    assert set(r.fwd) == {"pynative", "graph"} and max(r.fwd.values()) <= parity.FWD_BOUND
    assert r.passed


# (label, PyTorch block, MindSpore block, input (C, H, W), gradient mode)
def _blocks():
    halo = C.halo(8, 3, 4)
    bot = C.bottleneck_attn(4)
    return [
        ("HaloAttn", lambda m: m.HaloAttn(64, 1, 4, 8, 3), (64, 16, 24), "graph"),
        ("HaloAttn stride 2, halo 2", lambda m: m.HaloAttn(64, 2, 4, 8, 2), (64, 16, 16), "pynative"),
        ("HaloAttn window_order=mindcv", lambda m: m.HaloAttn(64, 1, 4, 8, 3, "mindcv"), (64, 16, 16), "graph"),
        ("HaloAttn block 4, halo 0", lambda m: m.HaloAttn(32, 1, 2, 4, 0), (32, 12, 8), "pynative"),
        ("HaloAttn block 4, halo 3 (window 10)", lambda m: m.HaloAttn(32, 1, 2, 4, 3), (32, 8, 12), "pynative"),
        ("BottleneckAttn stride 2", lambda m: m.BottleneckAttn(64, (8, 6), 2, 4), (64, 8, 6), "graph"),
        ("SelfAttnBlock halo, stride 2, silu", lambda m: m.SelfAttnBlock(32, 64, halo, 2, 1.0, "silu"),
         (32, 32, 16), "graph"),
        ("SelfAttnBlock bottleneck, relu", lambda m: m.SelfAttnBlock(64, 64, bot, 1, 0.5, "relu", feat_size=(8, 8)),
         (64, 8, 8), "pynative"),
        ("BottleneckBlock SE, stride 2", lambda m: m.BottleneckBlock(32, 64, 2, 0.5, True, "silu"), (32, 12, 12),
         "graph"),
        ("Stem tiered, max-pool -inf", lambda m: m.Stem(3, "tiered", True, "silu"), (3, 16, 16), "pynative"),
        ("Stem tiered, max-pool zero pad", lambda m: m.Stem(3, "tiered", True, "silu", "zero"), (3, 16, 16),
         "pynative"),
        ("Stem 7x7", lambda m: m.Stem(3, "7x7", True, "relu"), (3, 16, 16), "pynative"),
    ]


@pytest.mark.parametrize("label,build,size,grad_mode", _blocks(), ids=[b[0] for b in _blocks()])
def test_block_parity_strict(label, build, size, grad_mode):
    """Each block type alone: forward in both modes and every gradient within the strict bound (no noise floor)."""
    torch.manual_seed(0)
    pt = torch.nn.Sequential(build(P))
    net = msnn.SequentialCell([build(M)])
    r = parity.check_pair(pt, net, size, grad_mode=grad_mode, label=label)
    print("\n" + parity.format_table([r]))
    assert r.error is None, r.error
    assert r.min_tie_gap >= parity.TIE_GAP
    assert max(r.fwd.values()) <= 1e-5 and r.fwd_floor <= 1e-5
    assert r.grad_noisy == [] and r.grad_ratio < 0.5, r.grad_details[:3]
    assert r.passed


def test_relative_logits_against_the_formula():
    """PosEmbedRel in both twins against the explicit sum
    q.height_rel[ky - qy + kh - 1] + q.width_rel[kx - qx + kw - 1]."""
    rng = np.random.default_rng(0)
    q_size, k_size, d = (4, 3), (7, 9), 5
    q = rng.standard_normal((2, q_size[0] * q_size[1], d)).astype(np.float32)
    hr = rng.standard_normal((2 * k_size[0] - 1, d)).astype(np.float32)
    wr = rng.standard_normal((2 * k_size[1] - 1, d)).astype(np.float32)
    want = np.zeros((2, q_size[0] * q_size[1], k_size[0] * k_size[1]), np.float64)
    for qy in range(q_size[0]):
        for qx in range(q_size[1]):
            for ky in range(k_size[0]):
                for kx in range(k_size[1]):
                    qv = q[:, qy * q_size[1] + qx].astype(np.float64)
                    want[:, qy * q_size[1] + qx, ky * k_size[1] + kx] = (
                        qv @ hr[ky - qy + k_size[0] - 1] + qv @ wr[kx - qx + k_size[1] - 1])
    pt = P.PosEmbedRel(q_size, k_size, d)
    with torch.no_grad():
        pt.height_rel.copy_(torch.from_numpy(hr))
        pt.width_rel.copy_(torch.from_numpy(wr))
        got_pt = pt(torch.from_numpy(q)).numpy()
    net = M.PosEmbedRel(q_size, k_size, d)
    net.height_rel.set_data(ms.Tensor(hr))
    net.width_rel.set_data(ms.Tensor(wr))
    got_ms = net(ms.Tensor(q)).asnumpy()
    assert np.abs(got_pt - want).max() < 1e-5 and np.abs(got_ms - want).max() < 1e-5


def test_halo_windows_against_explicit_slicing():
    """The MindSpore window gather (no unfold) against an explicit per-block slice of the padded map."""
    attn = M.HaloAttn(16, 1, 2, 4, 3)  # window 10 over blocks of 4: reaches two blocks beyond its own
    x = np.random.default_rng(1).standard_normal((2, 6, 12, 8)).astype(np.float32)
    got = attn._windows(ms.Tensor(x), 2, 3, 2).asnumpy()  # (2, 6 blocks, 100, 6)
    pad = np.pad(x, ((0, 0), (0, 0), (3, 3), (3, 3)))
    for by in range(3):
        for bx in range(2):
            win = pad[:, :, by * 4:by * 4 + 10, bx * 4:bx * 4 + 10]  # (2, 6, 10, 10)
            np.testing.assert_array_equal(got[:, by * 2 + bx], win.transpose(0, 2, 3, 1).reshape(2, 100, 6))


@pytest.mark.parametrize("name", ["halonet_h1", "halonet26t", "sehalonet33ts", "halonet50ts", "halo2botnet50ts_256"])
def test_gmacs_within_two_percent_of_timm(name):
    """torch's FLOP counter / 2, counted on the meta device (shapes only)."""
    e = registry.get(name)
    with torch.device("meta"):
        gmacs = count_gmacs(zoo.create_model(name, "pt"), e.input_size)
    assert abs(gmacs - e.published.gmacs) / e.published.gmacs < 0.02, gmacs


def test_interleave_layouts_match_timm():
    """timm's interleave_blocks positions, and the resulting stage layouts of each variant (spec A3)."""
    assert [C.interleave(d) for d in (2, 3, 4, 6)] == ["BS", "BSB", "BSBS", "BSBSBS"]
    assert C.interleave(4, 4) == "BBBS" and C.interleave(3, [2]) == "BBS"
    layouts = {n: tuple(s["blocks"] for s in cfg["stages"]) for n, cfg in C.CFGS.items()}
    assert layouts == {
        "halonet_h1": ("SSS", "SSS", "S" * 10, "SSS"),
        "halonet26t": ("BB", "BB", "BS", "SS"),
        "sehalonet33ts": ("BB", "BBS", "BBS", "SS"),
        "halonet50ts": ("BBB", "BBBS", "BSBSBS", "BSB"),
        "halo2botnet50ts": ("BBB", "BSBS", "BSBSBS", "BSB"),
    }


def test_timm_checkpoint_keys_and_shapes():
    """Keys and shapes of timm's state dicts (spec A5) exist in the PyTorch twins."""
    sd = zoo.create_model("halonet50ts", "pt").state_dict()
    assert len(sd) == 347
    expected = {
        "stem.conv1.conv.weight": (24, 3, 3, 3), "stem.conv3.bn.num_batches_tracked": (),
        "stages.0.0.shortcut.conv.weight": (256, 64, 1, 1), "stages.1.0.shortcut.bn.running_var": (512,),
        "stages.1.3.conv1_1x1.conv.weight": (128, 512, 1, 1), "stages.1.3.self_attn.q.weight": (128, 128, 1, 1),
        "stages.1.3.self_attn.kv.weight": (256, 128, 1, 1), "stages.1.3.self_attn.pos_embed.height_rel": (27, 32),
        "stages.1.3.post_attn.running_mean": (128,), "stages.2.1.self_attn.kv.weight": (512, 256, 1, 1),
        "stages.3.1.self_attn.pos_embed.width_rel": (27, 64), "head.fc.weight": (1000, 2048)}
    for k, shape in expected.items():
        assert tuple(sd[k].shape) == shape, k
    se = zoo.create_model("sehalonet33ts", "pt").state_dict()
    assert tuple(se["stages.1.0.attn.fc1.weight"].shape) == (8, 128, 1, 1)
    assert tuple(se["stages.2.0.attn.fc2.bias"].shape) == (256,)
    assert tuple(se["final_conv.conv.weight"].shape) == (1280, 1536, 1, 1)
    assert tuple(se["stages.3.0.self_attn.q.weight"].shape) == (512, 512, 1, 1)  # strided query conv
    h1 = zoo.create_model("halonet_h1", "pt").state_dict()
    assert tuple(h1["stem.conv1.conv.weight"].shape) == (64, 3, 7, 7)
    assert "stages.0.0.shortcut.conv.weight" not in h1  # identity shortcut (64 -> 64, stride 1)
    bot = zoo.create_model("halo2botnet50ts_256", "pt").state_dict()
    assert tuple(bot["stages.3.1.self_attn.qkv.weight"].shape) == (1536, 512, 1, 1)
    assert tuple(bot["stages.3.1.self_attn.pos_embed.height_rel"].shape) == (15, 128)
    assert tuple(bot["stages.1.1.self_attn.kv.weight"].shape) == (256, 128, 1, 1)  # 8 heads x (16 + 16)


@pytest.mark.parametrize("framework", ["pt", "ms"])
def test_timm_init(framework):
    """timm's init: last BN of every residual branch zero, attention projections trunc-normal(fan_in^-0.5),
    relative tables trunc-normal(dim_head^-0.5), convs normal(sqrt(2 / fan_out))."""
    m = zoo.create_model("halonet50ts", framework)
    blk = m.stages[2][1]
    val = to_np
    assert np.abs(val(getattr(blk.conv3_1x1.bn, "weight" if framework == "pt" else "gamma"))).max() == 0
    assert abs(val(blk.self_attn.kv.weight).std() * 256 ** 0.5 - 1) < 0.05
    assert abs(val(blk.self_attn.pos_embed.height_rel).std() * 32 ** 0.5 - 1) < 0.15
    w = val(m.stages[2][0].conv2_kxk.conv.weight)  # (256, 256, 3, 3)
    assert abs(w.std() / np.sqrt(2 / (9 * 256)) - 1) < 0.05


@pytest.mark.parametrize("framework", ["pt", "ms"])
def test_unsupported_input_size_is_a_clear_error(framework):
    def run(model, size):
        x = np.zeros((1, 3, *size), np.float32)
        return model(torch.from_numpy(x)) if framework == "pt" else model(ms.Tensor(x))

    modes = [None] if framework == "pt" else [ms.PYNATIVE_MODE, ms.GRAPH_MODE]
    m = zoo.create_model("halonet26t", framework)
    bot = zoo.create_model("halo2botnet50ts_256", framework)
    try:
        for mode in modes:
            if mode is not None:
                ms.set_context(mode=mode)
            with pytest.raises((ValueError, RuntimeError), match="multiples of 256"):
                run(m, (224, 224))
            with pytest.raises((ValueError, RuntimeError), match="multiples of 256"):
                run(m, (256, 384))
            with pytest.raises((ValueError, RuntimeError), match="256x256 inputs only"):
                run(bot, (512, 512))
    finally:
        ms.set_context(mode=ms.PYNATIVE_MODE)
    if framework == "pt":  # a size the layout takes
        assert tuple(run(m.eval(), (256, 512)).shape) == (1, 1000)


# --- mindcv's halonet_50t -------------------------------------------------------------------

def _mindcv_checkpoint(path, seed=0):
    """A checkpoint of mindcv's own halonet_50t network (built, never run: its unfold has no CPU kernel)
    with distinct random values in every Parameter, saved as mindcv's trainer saves it (TrainStep with
    AdamW, loss scale and EMA: optimizer moments, 'ema.*' copies and counters next to the weights)."""
    from mindcv.models.halonet import halonet_50t
    from mindcv.optim import create_optimizer
    from mindcv.utils.train_step import TrainStep

    net = halonet_50t()
    rng = np.random.default_rng(seed)
    values = {}
    for p in net.get_parameters():
        v = rng.standard_normal(p.shape).astype(np.float32)
        if p.name.endswith("moving_variance"):
            v = np.abs(v) + 0.5
        p.set_data(ms.Tensor(v))
        values[p.name] = v
    opt = create_optimizer(net.trainable_params(), opt="adamw", lr=1e-3, weight_decay=0.04)
    step = TrainStep(msnn.WithLossCell(net, msnn.SoftmaxCrossEntropyWithLogits(sparse=True)), opt,
                     scale_sense=ms.Tensor(1024.0), ema=True)
    ms.save_checkpoint(step, str(path))
    return values


def test_mindcv_checkpoint_imports_into_both_twins(tmp_path):
    ckpt = tmp_path / "halonet_50t-189_2502.ckpt"
    values = _mindcv_checkpoint(ckpt)
    assert any(k.startswith("adam_m.") for k in ms.load_checkpoint(str(ckpt)))  # the file carries optimizer state
    # hand-written correspondences (spec A5), independent of the importer's rules
    pairs = {
        "stem.conv1.bn.moving_variance": ("stem.conv1.bn.running_var", "stem.conv1.bn.moving_variance"),
        "stage1.blocks.0.creat_shortcut.conv.weight": ("stages.0.0.shortcut.conv.weight",) * 2,
        "stage2.blocks.3.self_attn.pos_embed.rel_height": ("stages.1.3.self_attn.pos_embed.height_rel",) * 2,
        "stage3.blocks.5.self_attn.pos_embed.rel_width": ("stages.2.5.self_attn.pos_embed.width_rel",) * 2,
        "stage4.blocks.1.post_attn.bn.gamma": ("stages.3.1.post_attn.weight", "stages.3.1.post_attn.gamma"),
        "stage4.blocks.1.self_attn.kv.weight": ("stages.3.1.self_attn.kv.weight",) * 2,
        "stage4.blocks.2.conv3_1x1.bn.moving_mean": ("stages.3.2.conv3_1x1.bn.running_mean",
                                                     "stages.3.2.conv3_1x1.bn.moving_mean"),
        "classifier.1.weight": ("head.fc.weight",) * 2, "classifier.1.bias": ("head.fc.bias",) * 2,
    }
    for name in ("halonet_50t", "halonet50ts"):
        pt = zoo.create_model(name, "pt", checkpoint=str(ckpt)).state_dict()
        net = zoo.create_model(name, "ms", checkpoint=str(ckpt))
        msp = {p.name: p.asnumpy() for p in net.get_parameters()}
        for src, (pt_name, ms_name) in pairs.items():
            np.testing.assert_array_equal(pt[pt_name].numpy(), values[src])
            np.testing.assert_array_equal(msp[ms_name], values[src])
        # every one of the 292 mindcv tensors landed in a distinct zoo tensor with the same values
        zoo_vals = sorted(float(v.reshape(-1)[0]) for k, v in pt.items() if not k.endswith("num_batches_tracked"))
        assert zoo_vals == sorted(float(v.reshape(-1)[0]) for v in values.values())
        assert len(msp) == len(values) == 292
    loaded = convert_file("halonet_50t", str(ckpt), str(tmp_path / "out.ckpt"))
    assert loaded.layout == "mindcv"
    assert any("optimizer/training-state" in n for n in loaded.notes)


def test_mindcv_checkpoint_of_another_model_is_a_clear_error(tmp_path):
    from mindcv.models import create_model

    ms.save_checkpoint(create_model("resnet18"), str(tmp_path / "resnet18.ckpt"))
    with pytest.raises(ConversionError, match="not a mindcv halonet_50t checkpoint"):
        zoo.create_model("halonet_50t", "ms", checkpoint=str(tmp_path / "resnet18.ckpt"))


def test_mindcv_and_timm_functions_differ_with_the_same_weights():
    """halonet_50t and halonet50ts share every parameter but not the function (docs/halonet.md): the halo
    layer reads other window entries, and the zero-padded stem pool differs on the border only."""
    torch.manual_seed(0)
    timm_attn, mindcv_attn = P.HaloAttn(64, 1, 4, 8, 3), P.HaloAttn(64, 1, 4, 8, 3, "mindcv")
    mindcv_attn.load_state_dict(timm_attn.state_dict(), strict=True)
    x = torch.randn(1, 64, 16, 16)
    with torch.no_grad():
        assert not torch.allclose(timm_attn(x), mindcv_attn(x), atol=1e-2)
    timm_stem, mindcv_stem = P.Stem(3, "tiered", True, "silu"), P.Stem(3, "tiered", True, "silu", "zero")
    mindcv_stem.load_state_dict(timm_stem.state_dict(), strict=True)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        a, b = timm_stem.eval()(x), mindcv_stem.eval()(x)
    # output row/column 0 are the only pooling windows that reach into the padding
    assert torch.equal(a[:, :, 1:, 1:], b[:, :, 1:, 1:]) and not torch.equal(a, b)
    assert bool((b >= a).all())  # a zero pad can only raise a max
