"""Shared by tests/ and parity_tests/: quiet MindSpore, one torch thread per xdist worker, the `cli` fixture."""
import os
import subprocess
import sys

import pytest

import zoo  # noqa: F401  (first: quiets MindSpore's log, GLOG_v=3, before any test imports it)

if os.environ.get("PYTEST_XDIST_WORKER"):  # two workers on two cores: one thread each
    import torch

    torch.set_num_threads(1)

ROOT = os.path.dirname(os.path.abspath(__file__))


def run_cli(*args, timeout=600):
    """Run ``python -m zoo ARGS`` in a subprocess; returns CompletedProcess (text)."""
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-m", "zoo", *args], capture_output=True, text=True, timeout=timeout,
                          env=env, cwd=ROOT)


@pytest.fixture
def cli():
    return run_cli


@pytest.fixture
def zoo_main(capsys):
    """Run ``zoo ARGS`` through the CLI's own entry point in this process (no second interpreter and framework
    start-up, ~3 s each); returns a CompletedProcess like ``cli``. For what a process adds (the exit path,
    tracebacks, signals) use ``cli``."""
    def run(*args):
        from zoo.cli import main

        capsys.readouterr()
        try:
            code = main([str(a) for a in args])
        except SystemExit as stop:  # argparse's usage errors
            code = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
        out = capsys.readouterr()
        return subprocess.CompletedProcess(["zoo", *args], code, out.out, out.err)
    return run


# --- helpers the test files share (``from conftest import to_np, ...``) ----------------------------------

def to_np(t):
    """A PyTorch tensor or a MindSpore tensor/Parameter as a numpy array."""
    return t.detach().numpy() if hasattr(t, "detach") else t.asnumpy()


def run_eval(model, framework, x, fn=None):
    """Eval-mode call of ``fn`` (default: the model) on numpy ``x``: PyTorch under no_grad, MindSpore in PYNATIVE."""
    if framework == "pt":
        import torch

        model.eval()
        with torch.no_grad():
            return (fn or model)(torch.from_numpy(x))
    import mindspore as ms

    ms.set_context(mode=ms.PYNATIVE_MODE)
    model.set_train(False)
    return (fn or model)(ms.Tensor(x))


def meta_pt(name, **kwargs):
    """The PyTorch twin of a registered model on the meta device (shapes only, nothing allocated or computed)."""
    import torch

    from zoo import registry

    e = registry.get(name)
    with torch.device("meta"):
        return e.builder("pt")(**registry.build_kwargs(e, **kwargs))


def show(result):
    """Print a parity result as zoo parity's table (pytest shows it with -s or on failure)."""
    from zoo import parity

    print("\n" + parity.format_table([result]))
