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
