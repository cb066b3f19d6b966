"""Registry and create_model: names, metadata, both frameworks, constructor arguments, mindcv registration."""
import subprocess
import sys

import pytest

import zoo
from zoo import registry


def test_names_families_and_lookup_errors():
    names = zoo.list_models()
    assert "triplet_resnet50" in names and "triplet" in zoo.families()
    assert set(zoo.list_models("triplet")) <= set(names)
    with pytest.raises(KeyError, match="Did you mean: triplet_resnet50"):
        registry.get("triplet_resnet05")
    with pytest.raises(KeyError, match="unknown family"):
        zoo.list_models("nope")


def test_entries_carry_sizes_figures_and_preprocessing():
    e = registry.get("triplet_resnet50")
    assert e.input_size == (3, 224, 224) and e.num_classes == 1000 and e.classifier == "fc"
    assert e.published.params == 25_561_832 and e.published.gmacs == 4.169 and e.published.top1 == 77.48
    assert e.preprocess.interpolation == "bilinear" and e.preprocess.crop_pct == 0.875
    assert "official" in e.layouts
    assert registry.get("triplet_resnet18_cifar").input_size == (3, 32, 32)


@pytest.mark.parametrize("framework", ["ms", "pt"])
def test_create_model_both_frameworks(framework):
    m = zoo.create_model("triplet_resnet18_cifar", framework, num_classes=100, in_chans=1)
    w = m.fc.weight
    assert tuple(w.shape) == (100, 512)
    assert tuple(m.conv1.weight.shape) == (64, 1, 3, 3)
    with pytest.raises(ValueError, match="framework"):
        zoo.create_model("triplet_resnet18_cifar", "tf")


def _run(code):
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("order", ["import zoo\nimport mindcv", "import mindcv\nimport zoo"])
def test_registered_into_mindcv_in_either_import_order(order):
    r = _run(order + """
names = [n for n in mindcv.list_models() if n.startswith("triplet")]
net = mindcv.create_model("triplet_resnet18_cifar", num_classes=10)
print(len(names), type(net).__module__, tuple(net.fc.weight.shape))
import os, sys; sys.stdout.flush(); os._exit(0)
""")
    assert r.returncode == 0, r.stderr[-2000:]
    n, module, shape = r.stdout.split(maxsplit=2)
    assert int(n) == len(zoo.list_models("triplet")) and module == "zoo.models.triplet.ms"
    assert shape.strip() == "(10, 512)"


def test_importing_zoo_imports_no_framework():
    r = _run("import sys, zoo; zoo.list_models(); "
             "print(sorted(m for m in ('torch', 'mindspore', 'mindcv') if m in sys.modules))")
    assert r.returncode == 0 and r.stdout.strip() == "[]", r.stdout + r.stderr
