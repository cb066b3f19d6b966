#!/usr/bin/env python
"""Benchmark: ``python tools/bench.py triplet_resnet18 --batch 8 --threads 2`` (the same as ``zoo bench``)."""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from zoo.cli import exit_process, main as zoo_main  # noqa: E402  (importing zoo quiets MindSpore's log: GLOG_v=3)


def main(argv=None) -> int:
    """``zoo bench ARGV``."""
    return zoo_main(["bench"] + list(sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":
    exit_process(main())
