#!/usr/bin/env python
"""``python tools/run_mindcv.py [--mindcv-dir DIR] train.py|validate.py ARGS``: mindcv's own scripts on the zoo's
models.

The same runner as ``python -m zoo.mindcv`` (see its docstring and docs/training.md), as a file for launchers that
take a script path.
"""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from zoo.mindcv import main  # noqa: E402

if __name__ == "__main__":
    main()
