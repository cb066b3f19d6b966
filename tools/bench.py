#!/usr/bin/env python
"""Benchmark: ``python tools/bench.py triplet_resnet18 --batch 8 --threads 2`` (the same as ``zoo bench``)."""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from zoo.cli import exit_process  # noqa: E402  (importing zoo quiets MindSpore's log: GLOG_v=3)
from zoo.bench.command import main  # noqa: E402

if __name__ == "__main__":
    exit_process(main(sys.argv[1:]))
