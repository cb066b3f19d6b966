#!/usr/bin/env python
"""Thin wrapper: ``python tools/convert.py MODEL SRC DST [--to ms|pt] [--layout ...] [--force]`` = ``zoo convert``."""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from zoo.cli import main  # noqa: E402

if __name__ == "__main__":
    code = main(["convert", *sys.argv[1:]])
    sys.stdout.flush()
    os._exit(code)
