"""The contract every registered model keeps, in both frameworks (as timm's tests/test_models.py and
HuggingFace's tester mixins do for theirs). A new family gets all of it by registering its variants.

Per model, on its ``shallow_kwargs`` build (the registered architecture with the fewest blocks that keep every
code path) at its test input (``test_input_size`` with ``test_kwargs``, else ``input_size``), MindSpore in
PYNATIVE, each twin built once per model and process (the module-scoped ``twins`` fixture; under xdist a model's
tests may land on both workers, which then build it once each):

- ``forward_head(forward_features(x))`` gives (batch, num_classes) and ``forward_head(.., pre_logits=True)``
  (batch, num_features), with the same shapes in both twins;
- with ``num_classes=0`` (and ``in_chans=1``) the forward gives the pooled features (batch, num_features);
  ``reset_classifier(n)`` puts a new head on: the registry's ``classifier`` turns them into n logits, its
  MindSpore names are the converter's and its init agrees across the twins;
- ``drop_path_rate``: both twins give every ``drop_path`` the same rate, linear over the blocks (timm; after
  modules the reference fixes at 0) or constant (the GMM references' ViT, CaiT, PiT), reaching the rate asked for;
- the MindSpore parameters are exactly what the converter predicts from the PyTorch twin (names, shapes,
  trainable or frozen), without running anything;
- the initialisations agree in distribution, parameter by parameter (the parity harness overwrites them):
  constants exactly, random tensors by mean, standard deviation and a two-sample Kolmogorov-Smirnov test with
  bounds from the sample sizes;
- the published parameter count (PyTorch twin at full size on the meta device: nothing allocated; the
  MindSpore twin's count follows from its parameters being the converter's prediction, and the parity tests'
  round trips do that at full depth).

Per family: both twin modules define the same public classes with the same constructor signatures.
"""
from __future__ import annotations

import importlib
import inspect
import pkgutil

import mindspore as ms
import numpy as np
import pytest
import torch

from zoo import registry
from zoo.convert import core
from zoo.factory import build_kwargs

NAMES = registry.list_models()
BATCH = 1  # the smallest input: the checks are of shapes, names and draws (the parity tests use batches)
DROP_PATH = 0.3
HEADLESS = dict(num_classes=0, in_chans=1, drop_rate=0.1, drop_path_rate=DROP_PATH)
NEW_CLASSES = 7
KS_C = 2.7  # two-sample KS critical constant for alpha ~ 1e-6 per parameter (thousands are compared)
SIGMAS = 6.0  # bound of the mean and std comparisons, in standard errors
KS_SAMPLE = 20_000  # elements compared per random tensor (a fixed subsample of larger ones)




class Twins:
    """The twins of one registered model, built on first use with the contract's arguments."""

    def __init__(self, name):
        self.name, self.entry = name, registry.get(name)
        e = self.entry
        self.input_size = tuple(e.test_input_size or e.input_size)
        self.kwargs = dict(e.test_kwargs if e.test_input_size else {}, **e.shallow_kwargs)
        self._built = {}

    def build(self, framework, variant="main"):
        key = (framework, variant)
        if key not in self._built:
            extra = HEADLESS if variant == "headless" else {}
            torch.manual_seed(0)
            ms.set_seed(0)
            model = self.entry.builder(framework)(**build_kwargs(self.entry, **self.kwargs, **extra))
            if framework == "pt":
                model.eval()
            else:
                model.set_train(False)
            self._built[key] = model
        return self._built[key]

    def x(self, chans=None):
        c = self.input_size[0] if chans is None else chans
        return np.random.default_rng(0).standard_normal((BATCH, c, *self.input_size[1:])).astype(np.float32)


def run(model, fn, x):
    """``fn`` (a bound method of ``model``, or the model) on numpy/framework ``x``, eval mode; numpy out."""
    if isinstance(model, torch.nn.Module):
        with torch.no_grad():
            out = fn(torch.from_numpy(x) if isinstance(x, np.ndarray) else x)
        return out
    return fn(ms.Tensor(x) if isinstance(x, np.ndarray) else x)


def to_np(t):
    return t.detach().numpy() if isinstance(t, torch.Tensor) else t.asnumpy()


# --- forward, features, head ---------------------------------------------------------------------------

def check_forward_features_and_head(twins):
    """forward_features, forward_head and its pre_logits: the registered classes and num_features, the same
    shapes in both twins (the forward itself: the next test)."""
    e, x = twins.entry, twins.x()
    shapes = {}
    for fw in ("pt", "ms"):
        m = twins.build(fw)
        assert m.num_classes == e.num_classes, fw
        feats = run(m, m.forward_features, x)
        logits = run(m, m.forward_head, feats)
        pre = run(m, lambda t: m.forward_head(t, pre_logits=True), feats)
        assert tuple(logits.shape) == (BATCH, e.num_classes), fw
        assert tuple(pre.shape) == (BATCH, m.num_features), fw
        shapes[fw] = (tuple(feats.shape), tuple(pre.shape), m.num_features)
    assert shapes["pt"] == shapes["ms"]


def check_headless_pooled_features_in_chans_and_reset_classifier(twins):
    """num_classes=0 (with in_chans=1): the forward gives the pooled features, (batch, num_features);
    reset_classifier(n): the registry's classifier gives n logits from them, with the converter's MindSpore names
    and the same init in both twins."""
    x = twins.x(chans=HEADLESS["in_chans"])
    pt, net = twins.build("pt", "headless"), twins.build("ms", "headless")
    pooled = {}
    for fw, m in (("pt", pt), ("ms", net)):
        assert m.num_classes == 0, fw
        pooled[fw] = run(m, m, x)
        assert tuple(pooled[fw].shape) == (BATCH, m.num_features), fw
    assert pt.num_features == net.num_features
    for fw, m in (("pt", pt), ("ms", net)):
        torch.manual_seed(1)
        ms.set_seed(1)
        m.reset_classifier(NEW_CLASSES)
        assert m.num_classes == NEW_CLASSES, fw
        # the registry's classifier (what checkpoint head handling replaces) takes the pooled features
        cells = dict(m.named_modules()) if fw == "pt" else dict(m.cells_and_names())
        logits = run(m, cells[twins.entry.classifier], pooled[fw])
        assert tuple(logits.shape) == (BATCH, NEW_CLASSES), fw
    assert_ms_params_as_predicted(pt, net)
    classifier = twins.entry.classifier + "."
    compare_inits(pt, net, only=lambda k: k.startswith(classifier))


# --- drop path ----------------------------------------------------------------------------------------

def drop_path_rates(model):
    """{module path: drop probability} of every ``drop_path`` submodule (an Identity there: 0)."""
    if isinstance(model, torch.nn.Module):
        items = model.named_modules()
    else:
        items = model.cells_and_names()
    return {k: float(getattr(m, "drop_prob", 0.0)) for k, m in items if k.rsplit(".", 1)[-1] == "drop_path"}


def check_drop_path_spread(twins):
    got = {fw: drop_path_rates(twins.build(fw, "headless")) for fw in ("pt", "ms")}
    assert got["pt"] == pytest.approx(got["ms"], abs=1e-7) and list(got["pt"]) == list(got["ms"])
    rates = list(got["pt"].values())
    if not rates:
        pytest.skip(f"{twins.entry.cls} has no drop_path")
    constant = np.allclose(rates, DROP_PATH, atol=1e-7)
    # linear 0 .. rate over the last k >= 2 (after modules the reference fixes at 0, as T2T's token transformers)
    linear = any(np.allclose(rates[-k:], np.linspace(0, DROP_PATH, k), atol=1e-7) and not any(rates[:-k])
                 for k in range(2, len(rates) + 1))
    assert constant or linear, rates


# --- names and initialisation ---------------------------------------------------------------------------

def assert_ms_params_as_predicted(pt, net):
    """The MindSpore parameters are the converter's prediction from the PyTorch module: names, shapes, and
    trainable (requires_grad) or frozen."""
    sp = core.spec_of(pt)
    pt_tensors = dict(pt.state_dict(keep_vars=True))
    want, trainable = {}, {}
    for k, ms_name in sp.ms_names.items():
        if ms_name not in want:
            want[ms_name] = sp.shapes[k]
            t = pt_tensors[k]
            trainable[ms_name] = isinstance(t, torch.nn.Parameter) and t.requires_grad
    got = {p.name: tuple(p.shape) for _, p in net.parameters_and_names()}
    assert sorted(set(got) - set(want)) == [] and sorted(set(want) - set(got)) == []
    assert {k: v for k, v in got.items() if want[k] != v} == {}
    got_trainable = {p.name: bool(p.requires_grad) for _, p in net.parameters_and_names()}
    assert {k for k in want if trainable[k] != got_trainable[k]} == set()


def check_ms_parameters_are_the_converters_prediction(twins):
    assert_ms_params_as_predicted(twins.build("pt"), twins.build("ms"))


def _moments_ok(a, b):
    """Mean and std of two samples agree within SIGMAS standard errors (the std's error from the kurtosis)."""
    na, nb = a.size, b.size
    sigma = max(a.std(), b.std())
    pooled = np.concatenate([a, b]).astype(np.float64)
    c = pooled - pooled.mean()
    kurt = (c ** 4).mean() / max((c ** 2).mean() ** 2, 1e-300)
    se_mean = sigma * np.sqrt(1 / na + 1 / nb)
    se_std = sigma * np.sqrt(max(kurt - 1, 0.0) / 4 * (1 / na + 1 / nb))
    return (abs(a.mean() - b.mean()) <= SIGMAS * se_mean + 1e-12, abs(a.std() - b.std()) <= SIGMAS * se_std + 1e-12)


def _ks(a, b):
    a, b = np.sort(a), np.sort(b)
    v = np.concatenate([a, b])
    return float(np.abs(np.searchsorted(a, v, "right") / a.size - np.searchsorted(b, v, "right") / b.size).max())


def init_differences(pt_vals, ms_vals):
    """{name: what differs} between two initialisations given as {name: array} (the same names)."""
    rng = np.random.default_rng(0)
    bad = {}
    for k, a in pt_vals.items():
        b = ms_vals[k]
        a, b = a.astype(np.float64).ravel(), b.astype(np.float64).ravel()
        const_a, const_b = bool((a == a[0]).all()), bool((b == b[0]).all())
        if const_a or const_b:
            if not (const_a and const_b and a[0] == b[0]):
                bad[k] = (f"PyTorch {'constant %r' % a[0] if const_a else 'random'}, "
                          f"MindSpore {'constant %r' % b[0] if const_b else 'random'}")
            continue
        if np.array_equal(a, b):  # the same deterministic table
            continue
        if a.size > KS_SAMPLE:
            a = rng.choice(a, KS_SAMPLE, replace=False)
        if b.size > KS_SAMPLE:
            b = rng.choice(b, KS_SAMPLE, replace=False)
        mean_ok, std_ok = _moments_ok(a, b)
        d, crit = _ks(a, b), KS_C * np.sqrt((a.size + b.size) / (a.size * b.size))
        if not (mean_ok and std_ok and d <= crit):
            bad[k] = (f"n={a.size}: mean {a.mean():.3g} vs {b.mean():.3g}, std {a.std():.3g} vs {b.std():.3g}, "
                      f"max|.| {np.abs(a).max():.3g} vs {np.abs(b).max():.3g}, KS {d:.3f} (bound {crit:.3f})")
    return bad


def compare_inits(pt, net, only=lambda k: True):
    sp = core.spec_of(pt)
    state = core.pt_state(pt)
    params = core.ms_params(net)
    pt_vals = {k: state[k] for k in sp.ms_names if only(k) and k not in sp.aliases}
    ms_vals = {k: params[sp.ms_names[k]] for k in pt_vals}
    bad = init_differences(pt_vals, ms_vals)
    assert bad == {}, "\n".join(f"{k}: {v}" for k, v in bad.items())


def check_initialisations_agree_in_distribution(twins):
    compare_inits(twins.build("pt"), twins.build("ms"))


def test_init_comparison_can_fail():
    """The comparison itself tells different draws apart (and passes two draws of one distribution)."""
    rng = np.random.default_rng(1)
    normal = rng.standard_normal(KS_SAMPLE).astype(np.float32)
    same = rng.standard_normal(KS_SAMPLE).astype(np.float32)
    uniform = rng.uniform(-np.sqrt(3), np.sqrt(3), KS_SAMPLE).astype(np.float32)  # the same mean and std
    assert init_differences({"w": normal}, {"w": same}) == {}
    assert "KS" in init_differences({"w": normal}, {"w": uniform})["w"]
    assert init_differences({"w": normal}, {"w": 1.1 * same})  # std 10% off
    assert init_differences({"w": normal[:100]}, {"w": 0.1 + same[:100]}) == {}  # within 100 draws' error
    assert init_differences({"w": normal}, {"w": 0.1 + same})
    assert init_differences({"b": np.zeros(8)}, {"b": np.full(8, 1e-6)})  # constants exactly
    assert init_differences({"g": np.ones(8)}, {"g": same[:8]})


# --- sizes ------------------------------------------------------------------------------------------------

def _precision(n: int) -> int:
    """The unit of a published figure's last significant digit (2_700_000 -> 100_000; 11_691_912 -> 1)."""
    p = 1
    while n % (p * 10) == 0:
        p *= 10
    return p


@pytest.mark.parametrize("name", [n for n in NAMES if registry.get(n).published.params is not None])
def test_published_parameter_count(name):
    """Parameters of the full-size PyTorch twin (the trainable ones where the reference counted those) = the
    published figure, to the figure's own precision (exact counts exactly; a README's '2.7M' to +-50,000)."""
    e = registry.get(name)
    with torch.device("meta"):
        model = e.builder("pt")(**build_kwargs(e))
    n = sum(p.numel() for p in model.parameters() if p.requires_grad or not e.published.params_trainable)
    want = e.published.params
    assert abs(n - want) <= _precision(want) // 2, (n, want)


# --- the twin modules -------------------------------------------------------------------------------------

def public_classes(family, framework):
    """{(module path below the twin, class name): constructor signature} of the twin's public classes."""
    root = importlib.import_module(f"zoo.models.{family}.{framework}")
    mods = [root]
    if hasattr(root, "__path__"):  # a package (gmm): its submodules
        mods += [importlib.import_module(f"{root.__name__}.{m.name}") for m in pkgutil.iter_modules(root.__path__)]
    out = {}
    for mod in mods:
        rel = mod.__name__[len(root.__name__):]
        for cname, cls in vars(mod).items():
            if inspect.isclass(cls) and cls.__module__ == mod.__name__ and not cname.startswith("_"):
                out[(rel, cname)] = constructor_signature(cls)
    return out


def constructor_signature(cls):
    """[(name, kind, default)] of the class's own constructor, or "inherited" when it has none of the zoo's
    (nn.Module's and Cell's constructors differ, and are not the twin's)."""
    owner = next(k for k in cls.__mro__ if "__init__" in vars(k))
    if not owner.__module__.startswith("zoo."):
        return "inherited"
    sig = inspect.signature(owner.__init__)
    return [(p.name, p.kind.name, repr(p.default)) for p in sig.parameters.values()]


# Constructor arguments one twin has alone, by design. GMM: the PyTorch twin hands the one frozen base-mask
# Parameter down to every holder, so that its state dict lists it under each as the reference's does; the
# MindSpore twin keeps one Parameter and passes the mask at call time (construct(x, base)).
ONE_TWIN_ARGS = {("gmm", "pt"): {"mask"}}


@pytest.mark.parametrize("family", registry.families())
def test_twins_define_the_same_classes_and_constructors(family):
    pt, net = public_classes(family, "pt"), public_classes(family, "ms")
    for fw, classes in (("pt", pt), ("ms", net)):
        alone = ONE_TWIN_ARGS.get((family, fw), set())
        for k, sig in classes.items():
            if sig != "inherited":
                classes[k] = [a for a in sig if a[0] not in alone]
    assert sorted(set(pt) - set(net)) == [] and sorted(set(net) - set(pt)) == []
    assert {k: (pt[k], net[k]) for k in pt if pt[k] != net[k]} == {}
    for e in registry.entries().values():
        if e.family == family:
            assert ("", e.cls) in pt or any(c == e.cls for _, c in pt), e.name


CHECKS = (
    check_forward_features_and_head,
    check_headless_pooled_features_in_chans_and_reset_classifier,
    check_drop_path_spread,
    check_ms_parameters_are_the_converters_prediction,
    check_initialisations_agree_in_distribution,
)


@pytest.mark.parametrize("name", NAMES)
def test_model_contract(name):
    """Every check above on one model's twins, each twin built once for all of them (one test per model, so that
    xdist's workers never build the same model twice); every check runs and every failure is reported."""
    ms.set_context(mode=ms.PYNATIVE_MODE)
    twins, failures = Twins(name), []
    for check in CHECKS:
        try:
            check(twins)
        except AssertionError as err:
            failures.append(f"{check.__name__}: {err}")
    assert not failures, "\n".join(failures)
