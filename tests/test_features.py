"""features_only (issue 14): both twins of every family give their stage outputs, the timm/mindcv way, through
``zoo.create_model(..., features_only=True, out_indices=...)``, mindcv's and timm's ``create_model``; feature
parity (every output, PYNATIVE and GRAPH) for one model per family at its smallest (test) input."""
import copy
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

import zoo
from zoo import features, integrations, parity, registry

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# one model per family, with timm's channels / reductions of its outputs (the stem's, then every stage's)
PER_FAMILY = {
    "triplet_resnet18_cifar": ([64, 64, 128, 256, 512], [1, 1, 2, 4, 8]),  # CIFAR stem: stride 1, no max-pool
    "van_b0": ([32, 64, 160, 256], [4, 8, 16, 32]),
    "halonet26t": ([64, 256, 512, 1024, 2048], [2, 4, 8, 16, 32]),
    "wrn_16_1": ([16, 32, 64], [1, 2, 4]),
    "vit_32": ([192] * 9, [4] * 9),
}


@pytest.mark.parametrize("name", list(PER_FAMILY))
def test_feature_parity_one_model_per_family(name):
    """Every output of the feature models, both MindSpore modes (one GRAPH compile), within the parity bound and
    near float32's own error on these weights; shapes as feature_info says; the twins describe the same outputs.
    Batch 1, BatchNorm statistics calibrated on 4 random images (16 in `zoo parity`), for time."""
    e = registry.get(name)
    r = parity.check_features(name, input_size=e.test_input_size or e.input_size, batch=1, calib_batch=4)
    print("\n" + parity.format_features_table([r]))
    assert r.error is None, r.error
    assert r.passed and r.shapes_match
    chs, reds = PER_FAMILY[name]
    assert [f["num_chs"] for f in r.feature_info] == chs and [f["reduction"] for f in r.feature_info] == reds
    assert set(r.fwd) == {"pynative", "graph"}
    for mode, errs in r.fwd.items():
        assert len(errs) == len(chs)
        for j, (err, floor) in enumerate(zip(errs, r.floor)):
            assert err <= parity.FWD_BOUND and err <= max(10 * floor, 1e-6), (mode, j, err, floor)


def test_an_output_float32_cannot_determine_is_noise_limited_not_failed():
    """Deep stage outputs of some random HaloNets (halonet_h1, halonet_50t) have float32 floors near the bound
    on every input tried: such an output passes within the bound plus 10 floors (the gradient check's rule) and
    is reported as noise-limited; a determined output keeps the plain bound."""
    info = [dict(num_chs=4, reduction=2, module="a"), dict(num_chs=8, reduction=4, module="b")]
    r = parity.FeatureParityResult("m", (3, 8, 8), 1, out_indices=(0, 1), feature_info=info, floor=[1e-6, 8e-5],
                                   shapes_match=True, fwd={"graph": [5e-5, 1.6e-4]})
    assert r.passed and r.noise_limited == [1] and r.bound(0) == parity.FWD_BOUND
    table = parity.format_features_table([r]).splitlines()
    assert table[2].rstrip().endswith("ok") and "noise-limited (x2.0 floor)" in table[3]
    r.fwd["pynative"] = [1.2e-4, 1e-4]  # over the plain bound where float32 determines the output
    assert not r.passed
    r.fwd["pynative"] = [1e-6, 1e-3]  # over 1e-4 + 10 floors (9e-4)
    assert not r.passed


# --- feature_info: timm's points, the outputs' real shapes (PyTorch twins on the meta device: no compute) ------

SHAPES = {  # the stems and heads that differ: ImageNet ResNet, MobileNetV2, VAN, the three HaloNet stems
    "triplet_resnet50": [64, 256, 512, 1024, 2048],
    "triplet_mobilenetv2": [16, 24, 32, 96, 320],  # timm: features.1, 3, 6, 13, 17 (not the 1280 conv)
    "van_b1": [64, 128, 320, 512],
    "halonet_h1": [64, 64, 128, 256, 512],  # 7x7 stem: conv1
    "sehalonet33ts": [32, 256, 512, 1024, 1280],  # tiered stem without max-pool: conv2; then final_conv
    "halonet50ts": [64, 256, 512, 1024, 2048],  # tiered stem with max-pool: conv3
}


@pytest.mark.parametrize("name", list(SHAPES))
def test_feature_info_describes_the_outputs(name):
    e = registry.get(name)
    size = e.test_input_size or e.input_size
    with torch.device("meta"):
        m = zoo.create_model(name, "pt", features_only=True)
    out = m(torch.empty(2, *size, device="meta"))
    assert m.feature_info.channels() == m.out_channels == SHAPES[name]
    assert [tuple(o.shape) for o in out] == [(2, c, size[1] // r, size[2] // r)
                                             for c, r in zip(m.feature_info.channels(), m.feature_info.reduction())]
    assert m.feature_info.reduction()[-1] == 32
    modules = dict(m.model.named_modules())
    assert all(module in modules for module in m.feature_info.module_name())


# --- out_indices, errors ----------------------------------------------------------------------------------

def test_out_indices_select_and_order_outputs():
    torch.manual_seed(0)
    full = zoo.create_model("triplet_resnet18_cifar", "pt").eval()
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        _, want = full.forward_intermediates(x)
        for idx, expect in [((1, 3), (1, 3)), ((-1, 0), (4, 0)), (2, (3, 4)), (None, (0, 1, 2, 3, 4))]:
            m = features.feature_model(copy.deepcopy(full), "pt", idx, classifier="fc")
            got = m.eval()(x)
            assert m.out_indices == expect and len(got) == len(expect)
            assert m.feature_info.channels() == [full.feature_info[i]["num_chs"] for i in expect]
            assert all(torch.equal(g, want[i]) for g, i in zip(got, expect))
    m = zoo.create_model("wrn_16_1", "pt", features_only=True, out_indices=[-1])
    assert m.out_indices == (2,) and m.feature_info == [dict(num_chs=64, reduction=4, module="group2")]


@pytest.mark.parametrize("idx,match", [((0, 3), r"\[3\] out of range: the model has 3 stage outputs, indices 0\.\.2"),
                                       ((-4,), r"indices 0\.\.2 \(or -3\.\.-1\)"),
                                       (4, r"must be in 1\.\.3"), ((), "empty"), ((1, -2), "twice")])
def test_out_indices_out_of_range_names_the_valid_range(idx, match):
    with pytest.raises(ValueError, match=match):
        zoo.create_model("wrn_16_1", "pt", features_only=True, out_indices=idx)


def test_out_indices_without_features_only_and_a_model_without_stage_outputs_are_clear_errors():
    with pytest.raises(ValueError, match="needs features_only=True"):
        zoo.create_model("wrn_16_1", "pt", out_indices=(0,))
    with pytest.raises(ValueError, match="has no stage outputs .*features_only is not available"):
        features.feature_model(torch.nn.Linear(2, 2), "pt")


# --- the head, checkpoints, the fixed pooling window ------------------------------------------------------

@pytest.mark.parametrize("name", ["triplet_mobilenetv2", "van_b0", "halonet26t", "vit_32"])
def test_the_classifier_is_not_part_of_the_feature_model(name):
    full = zoo.create_model(name, "pt")
    feat = zoo.create_model(name, "pt", features_only=True)
    cls = registry.get(name).classifier
    assert any(k.startswith(cls + ".") for k in full.state_dict())
    assert not any(k.startswith("model." + cls + ".") for k in feat.state_dict())
    n_cls = sum(p.numel() for k, p in full.named_parameters() if k.startswith(cls + "."))
    assert sum(p.numel() for p in feat.parameters()) == sum(p.numel() for p in full.parameters()) - n_cls > 0


def test_mindspore_feature_cell_drops_the_classifier_and_keeps_the_twins_names():
    import mindspore as ms

    full = zoo.create_model("vit_32", "ms")  # mlp_head.1: an item of a SequentialCell
    names = {p.name for p in full.get_parameters()}
    feat = features.feature_model(full, "ms", (0, 8), classifier=registry.get("vit_32").classifier)
    kept = {p.name for p in feat.get_parameters()}
    assert kept == {n for n in names if not n.startswith("mlp_head.1.")} and kept != names
    assert feat.out_channels == [192, 192] and feat.feature_info.reduction() == [4, 4]
    cells = dict(full.cells_and_names())
    assert all(m in cells for m in feat.feature_info.module_name())
    assert isinstance(feat, ms.nn.Cell)


def test_checkpoint_weights_load_before_wrapping(tmp_path):
    """A checkpoint (here the PyTorch twin's .pth) loads strictly into the model, then the model is wrapped: both
    frameworks' feature models give the model's own stage outputs."""
    import mindspore as ms

    torch.manual_seed(0)
    src = zoo.create_model("wrn_16_1", "pt")
    parity.randomize_(src, 0, (4, 3, 32, 32))
    torch.save(src.state_dict(), tmp_path / "w.pth")
    x = np.random.default_rng(0).standard_normal((2, 3, 32, 32)).astype(np.float32)
    with torch.no_grad():
        _, want = src.eval().forward_intermediates(torch.from_numpy(x))
    pt = zoo.create_model("wrn_16_1", "pt", checkpoint=str(tmp_path / "w.pth"), features_only=True, out_indices=(2,))
    with torch.no_grad():
        assert torch.equal(pt.eval()(torch.from_numpy(x))[0], want[2])
    net = zoo.create_model("wrn_16_1", "ms", checkpoint=str(tmp_path / "w.pth"), features_only=True)
    net.set_train(False)
    old = ms.get_context("mode")
    ms.set_context(mode=ms.PYNATIVE_MODE)
    try:
        got = [t.asnumpy() for t in net(ms.Tensor(x))]
    finally:
        ms.set_context(mode=old)
    assert len(got) == 3 and all(np.abs(g - w.numpy()).max() <= 1e-5 * max(1.0, w.abs().max().item())
                                 for g, w in zip(got, want))


def test_features_take_any_size_where_the_reference_head_has_a_fixed_window():
    """ResNets keep the reference's AvgPool2d(7) by default (about 224 px only); a feature model has no head, so
    it is built with global pooling and takes e.g. 64 px."""
    with torch.device("meta"):
        assert zoo.create_model("triplet_resnet18", "pt").global_pool == "fixed"
        m = zoo.create_model("triplet_resnet18", "pt", features_only=True)
        assert m.model.global_pool == "avg" and len(m(torch.empty(1, 3, 64, 64, device="meta"))) == 5


# --- mindcv and timm --------------------------------------------------------------------------------------

def test_mindcv_create_model_features_only_builds_the_zoo_feature_cell():
    """mindcv 0.3.0 passes features_only / out_indices to the model function, which is the zoo's create_model
    (in a process of its own, as the other mindcv tests)."""
    code = """
import json, os, sys
import zoo, mindcv
net = mindcv.create_model("wrn_16_1", features_only=True, out_indices=[1, 2])
try:
    mindcv.create_model("wrn_16_1", features_only=True, out_indices=[0, 3])
    err = ""
except ValueError as e:
    err = str(e)
print(json.dumps({"cls": type(net).__name__, "chs": net.out_channels, "err": err,
                  "fc": [p.name for p in net.get_parameters() if p.name.startswith("fc.")]}))
sys.stdout.flush(); os._exit(0)
"""
    env = dict(os.environ, GLOG_v="3", PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["cls"] == "FeatureListCell" and out["chs"] == [32, 64] and out["fc"] == []
    assert "out of range: the model has 3 stage outputs, indices 0..2" in out["err"]


class _StandInTimmRegistry:
    """timm.models._registry's API as the zoo uses it (timm does not import next to the CPU torch here)."""

    def __init__(self):
        self.entries = {}

    def is_model(self, name):
        return name in self.entries

    def register_model(self, fn):
        self.entries[fn.__name__] = fn
        return fn


def test_timm_entry_points_pass_features_only(monkeypatch):
    """timm's create_model passes features_only / out_indices on to the entry point, the zoo's create_model."""
    monkeypatch.setattr(integrations, "_registered", {"mindcv": {}, "timm": {}})
    monkeypatch.setattr(integrations, "_skipped", {"mindcv": [], "timm": []})
    fake = _StandInTimmRegistry()
    integrations.register_timm(fake)
    m = fake.entries["van_b0"](pretrained=False, features_only=True, out_indices=(1, 3))
    assert type(m).__name__ == "FeatureListNet" and m.feature_info.channels() == [64, 256]
    assert m.pretrained_cfg["architecture"] == "van_b0"
