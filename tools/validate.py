#!/usr/bin/env python
"""Validate: ``python tools/validate.py MODEL --checkpoint FILE --data DIR [--framework ms|pt]`` = ``zoo validate``."""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from zoo.cli import exit_process  # noqa: E402
from zoo.validate import main  # noqa: E402

if __name__ == "__main__":
    exit_process(main(sys.argv[1:]))
