#!/usr/bin/env python
"""Train: ``python tools/train.py -c configs/<family>/<recipe>.yaml [--framework ms|pt] [--key value ...]``.

Data parallel: ``msrun --worker_num=N --local_worker_num=N tools/train.py -c ...`` (MindSpore) or
``torchrun --nproc_per_node=N tools/train.py -c ... --framework pt`` (PyTorch); see docs/training.md.
"""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from zoo.cli import exit_process  # noqa: E402  (importing zoo quiets MindSpore's log: GLOG_v=3)
from zoo.train.loop import main  # noqa: E402

if __name__ == "__main__":
    exit_process(main(sys.argv[1:]))
