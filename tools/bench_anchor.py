"""The anchor of docs/benchmarks.md: mindcv's own ResNet-18 against the zoo's plain ResNet-18 twins.

``at_resnet18`` (the Attention Transfer family's ImageNet ResNet-18: no attention, torchvision's layout) is a
plain convnet in both twins, built from MindSpore's ``nn.Conv2d``/``nn.BatchNorm2d``/``nn.ReLU``/``nn.MaxPool2d``
exactly as mindcv builds its ``resnet18``. This script times mindcv's ``resnet18`` (MindSpore GRAPH), the zoo's
MindSpore ``at_resnet18`` (GRAPH) and its PyTorch twin, alternating their calls in one run as ``zoo bench`` does
(``zoo.bench.speed.paired_times``), for inference and for one SGD-momentum training step with cross-entropy. If
mindcv's network runs no faster than the zoo's MindSpore twin, the MindSpore/PyTorch gap on plain convnets is
MindSpore's CPU kernels, not the zoo's code.

    python tools/bench_anchor.py [--batch 8] [--threads 2] [--repeats 10]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=10)
    args = p.parse_args(argv)

    import mindcv
    import mindspore as ms
    import torch
    from mindspore import nn as msnn

    import zoo
    from zoo.bench.speed import pair_ratio, paired_times, set_threads

    set_threads(args.threads)
    ms.set_context(mode=ms.GRAPH_MODE)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((args.batch, 3, 224, 224)).astype(np.float32)
    y = rng.integers(0, 1000, args.batch).astype(np.int32)
    xm, ym, xt, yt = ms.Tensor(x), ms.Tensor(y), torch.from_numpy(x), torch.from_numpy(y.astype(np.int64))

    nets = {"mindcv resnet18": mindcv.create_model("resnet18", num_classes=1000),
            "zoo at_resnet18 (MS)": zoo.create_model("at_resnet18", "ms")}
    pt = zoo.create_model("at_resnet18", "pt")

    def ms_infer(net):
        net.set_train(False)
        return lambda: net(xm).asnumpy()

    def ms_train(net):
        loss = msnn.WithLossCell(net, msnn.CrossEntropyLoss())
        step = msnn.TrainOneStepCell(loss, msnn.Momentum(net.trainable_params(), 0.01, 0.9, weight_decay=1e-4))
        step.set_train(True)
        return lambda: step(xm, ym).asnumpy()

    def pt_infer():
        pt.eval()

        def call():
            with torch.no_grad():
                return pt(xt)
        return call

    def pt_train():
        pt.train()
        opt = torch.optim.SGD(pt.parameters(), 0.01, momentum=0.9, weight_decay=1e-4)

        def call():
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(pt(xt), yt)
            loss.backward()
            opt.step()
            return loss.item()
        return call

    print(f"batch {args.batch}, 224 px, {args.threads} threads per framework, {args.repeats} rounds; "
          f"MindSpore {ms.__version__}, torch {torch.__version__}, mindcv {mindcv.__version__}")
    for mode, ms_make, pt_make in (("infer", ms_infer, pt_infer), ("train", ms_train, pt_train)):
        calls = {"zoo at_resnet18 (PT)": pt_make()}
        for name, net in nets.items():
            calls[name] = ms_make(net)
            calls[name]()  # GRAPH compile, untimed
        times = paired_times(calls, args.repeats, warmup=1)
        base = times["zoo at_resnet18 (PT)"]
        for name, t in times.items():
            ratio = "" if t is base else f"  x{pair_ratio(base, t):.2f} of PyTorch's throughput"
            print(f"{mode:5s}  {name:22s} {args.batch / statistics.median(t):7.2f} img/s{ratio}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
