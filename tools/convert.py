#!/usr/bin/env python
"""Thin wrapper: ``python tools/convert.py MODEL SRC DST [--to ms|pt] [--layout LAYOUT] [--force]``
= ``zoo convert``."""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from zoo.cli import exit_process, main  # noqa: E402

if __name__ == "__main__":
    exit_process(main(["convert", *sys.argv[1:]]))
