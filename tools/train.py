#!/usr/bin/env python
"""Train: ``python tools/train.py -c configs/<family>/<recipe>.yaml [--framework ms|pt] [--key value ...]``.

Data parallel: ``msrun --worker_num=N --local_worker_num=N tools/train.py -c ...`` (MindSpore) or
``torchrun --nproc_per_node=N tools/train.py -c ... --framework pt`` (PyTorch); see docs/training.md.
"""
import os
import sys

os.environ.setdefault("GLOG_v", "3")  # MindSpore: errors only
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from zoo.train.loop import distributed_launch, main  # noqa: E402

if __name__ == "__main__":
    code = main(sys.argv[1:])
    sys.stdout.flush()
    sys.stderr.flush()
    if distributed_launch():
        sys.exit(code)  # a normal exit: the framework finalises the cluster node, which msrun's scheduler waits for
    os._exit(code)  # skip MindSpore 2.8's noisy Cell.__del__ at interpreter shutdown
