"""The twins in mindcv's and timm's registries: listed under their family, names those libraries own offered as
``zoo_<name>``, each model's configuration where the library reads it.

timm needs torchvision, whose PyPI wheel does not import next to the CPU build of torch: the timm test runs timm's
real registry and ``create_model`` with a torchvision stand-in (timm's model code never calls torchvision), when
timm is installed; without timm, the registration is checked against a stand-in registry with timm's API.
"""
import importlib.util
import os
import subprocess
import sys
import types

import pytest

import zoo
from zoo import integrations

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(code, timeout=300):
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout,
                       env=dict(os.environ, GLOG_v="3",
                                PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")))
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    return r


def test_mindcv_lists_families_and_offers_the_zoos_halonet_50t_as_zoo_halonet_50t():
    r = _run("""
import json, os, sys
import zoo, mindcv
from mindcv.models import registry as R
out = {"modules": R.list_modules(), "by_family": {f: sorted(R.list_models(module=f)) for f in zoo.families()},
       "zoo_cls": type(mindcv.create_model("zoo_halonet_50t", num_classes=3)).__module__,
       "own_fn": R.model_entrypoint("halonet_50t").__module__,
       "cfg": R.get_pretrained_cfg("van_b0"), "cfg50t": R.get_pretrained_cfg("zoo_halonet_50t")}
print(json.dumps(out)); sys.stdout.flush(); os._exit(0)
""")
    import json
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert {"triplet", "van", "halonet"} <= set(out["modules"]) and "integrations" not in out["modules"]
    for family in zoo.families():
        names = {integrations.ALIAS_PREFIX + n if n == "halonet_50t" else n for n in zoo.list_models(family)}
        assert names <= set(out["by_family"][family]), family
    assert out["zoo_cls"] == "zoo.models.halonet.ms"  # the zoo's twin under the alias
    assert out["own_fn"] == "mindcv.models.halonet"  # mindcv's own network keeps its name
    cfg = out["cfg"]
    assert cfg["mean"] == [127.5] * 3 and cfg["interpolation"] == "bicubic" and cfg["crop_pct"] == 0.9
    assert out["cfg50t"]["input_size"] == [3, 256, 256] and out["cfg50t"]["zoo_name"] == "halonet_50t"
    assert "mindcv already has model(s) named halonet_50t" in r.stderr and "zoo_halonet_50t" in r.stderr


def test_registry_hook_off_then_explicit_registration():
    """``ZOO_NO_REGISTRY_HOOK=1``: importing zoo and mindcv registers nothing; ``zoo.register_mindcv()`` does."""
    r = subprocess.run([sys.executable, "-c", """
import json, os, sys
import zoo, mindcv
from mindcv.models import registry as R
before = R.is_model("van_b0")
zoo.register_mindcv()
print(json.dumps([before, R.is_model("van_b0")])); sys.stdout.flush(); os._exit(0)
"""], capture_output=True, text=True, timeout=300,
        env=dict(os.environ, GLOG_v="3", ZOO_NO_REGISTRY_HOOK="1",
                 PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")))
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.strip().splitlines()[-1] == "[false, true]"


class _StandInTimmRegistry(types.SimpleNamespace):
    """timm.models._registry's API as the zoo uses it: is_model, register_model (reads the entry's module)."""

    def __init__(self, owned):
        super().__init__(entries={n: None for n in owned}, modules={}, cfgs={})

    def is_model(self, name):
        return name in self.entries

    def register_model(self, fn):
        mod = sys.modules[fn.__module__]
        self.entries[fn.__name__] = fn
        self.modules[fn.__name__] = fn.__module__.split(".")[-1]
        self.cfgs[fn.__name__] = mod.default_cfgs.get(fn.__name__)
        return fn


def test_timm_registration_against_a_stand_in_registry(monkeypatch):
    monkeypatch.setattr(integrations, "_registered", {"mindcv": {}, "timm": {}})
    monkeypatch.setattr(integrations, "_skipped", {"mindcv": [], "timm": []})
    fake = _StandInTimmRegistry(owned=["halonet26t", "halonet50ts"])
    names = integrations.register_timm(fake)
    assert "zoo_halonet26t" in names and "halonet26t" not in names and "van_b0" in names
    assert fake.modules["van_b0"] == "van" and fake.modules["zoo_halonet26t"] == "halonet"
    assert fake.cfgs["van_b0"]["mean"] == (0.5, 0.5, 0.5) and fake.cfgs["van_b0"]["crop_pct"] == 0.9
    m = fake.entries["triplet_resnet18_cifar"](pretrained=False, pretrained_cfg=None, pretrained_cfg_overlay=None,
                                               cache_dir=None, num_classes=5)
    assert type(m).__module__ == "zoo.models.triplet.pt" and m.fc.out_features == 5
    assert m.pretrained_cfg["input_size"] == (3, 32, 32)
    assert m.pretrained_cfg["architecture"] == "triplet_resnet18_cifar"
    with pytest.raises(ValueError, match="downloads no weights"):
        fake.entries["van_b0"](pretrained=True)
    assert integrations.register_timm(fake) == names  # a second call registers nothing twice


TORCHVISION_STUB = '''
import importlib.abc, importlib.machinery, sys, types
try:
    import torchvision  # noqa: F401
except Exception:
    for k in [k for k in sys.modules if k.split(".")[0] == "torchvision"]:
        del sys.modules[k]

    class Placeholder(type):
        def __getattr__(cls, name):
            if name.startswith("__"):
                raise AttributeError(name)
            return Placeholder(name, (), {"__init__": lambda self, *a, **k: None})

    class Module(types.ModuleType):
        __getattr__ = Placeholder.__getattr__

    class Finder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
        def find_spec(self, fullname, path=None, target=None):
            if fullname.split(".")[0] == "torchvision":
                return importlib.machinery.ModuleSpec(fullname, self, is_package=True)
        def create_module(self, spec):
            m = Module(spec.name)
            m.__path__, m.__version__ = [], "0.0.0+stub"
            return m
        def exec_module(self, module):
            pass

    sys.meta_path.insert(0, Finder())
'''


@pytest.mark.skipif(importlib.util.find_spec("timm") is None, reason="timm is not installed")
@pytest.mark.parametrize("order", ["import zoo\nimport timm", "import timm\nimport zoo"])
def test_timm_create_model_builds_the_pytorch_twins(order, tmp_path):
    import torch

    torch.manual_seed(0)
    ref = zoo.create_model("triplet_resnet18_cifar", "pt", num_classes=5)
    ckpt = tmp_path / "r18.pth"
    torch.save(ref.state_dict(), ckpt)
    r = _run(TORCHVISION_STUB + order + f"""
import json, torch
m = timm.create_model("van_b0", num_classes=7, drop_path_rate=0.1)
own = timm.create_model("halonet26t")
alias = timm.create_model("zoo_halonet26t")
w = timm.create_model("triplet_resnet18_cifar", pretrained=True, pretrained_cfg_overlay=dict(file={str(ckpt)!r}))
data = timm.data.resolve_data_config(model=m)
print(json.dumps({{"van": type(m).__module__, "classes": m.head.out_features, "own": type(own).__module__,
                  "alias": type(alias).__module__, "modules": timm.list_modules(), "data": data,
                  "w": float(w.fc.weight.sum()), "vans": timm.list_models(module="van")}}))
""")
    import json
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["van"] == "zoo.models.van.pt" and out["classes"] == 7
    assert out["own"].startswith("timm.models.") and out["alias"] == "zoo.models.halonet.pt"
    assert {"triplet", "van", "halonet"} <= set(out["modules"])
    assert set(zoo.list_models("van")) <= set(out["vans"])
    assert out["data"]["mean"] == [0.5, 0.5, 0.5] and out["data"]["crop_pct"] == 0.9
    assert out["data"]["interpolation"] == "bicubic"
    assert abs(out["w"] - float(ref.fc.weight.detach().sum())) < 1e-6  # the checkpoint's weights, loaded by the zoo
