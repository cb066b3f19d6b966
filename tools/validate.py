#!/usr/bin/env python
"""Validate: ``python tools/validate.py MODEL --checkpoint FILE --data DIR [--framework ms|pt]`` = ``zoo validate``."""
import os
import sys

os.environ.setdefault("GLOG_v", "3")  # MindSpore: errors only
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from zoo.validate import main  # noqa: E402

if __name__ == "__main__":
    code = main(sys.argv[1:])
    sys.stdout.flush()
    os._exit(code)  # skip MindSpore 2.8's noisy Cell.__del__ at interpreter shutdown
