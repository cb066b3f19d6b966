"""Layer-level benchmarks (``zoo bench --layer halo_attn``): the MindSpore halo attention against the PyTorch
twin's, on this machine, in one run.

    zoo bench --layer halo_attn --batch 8 --repeats 20 --threads 2

For the halo layers of halonet50ts / halonet26t at a 256-px input, both twins get the same weights
and the same input; each is timed for the forward pass (inference: eval, no autograd) and for
forward + backward (gradients of every weight and the input), MindSpore in GRAPH mode (compiled
once, as training runs) and in PYNATIVE mode. PyTorch and MindSpore calls alternate, so that a change
in machine load affects both; the ratio is the median over the ``--repeats`` pairs of MindSpore time
/ PyTorch time (below 1: MindSpore is faster). Both frameworks use the same number of CPU threads.
The figures are only meaningful as ratios measured in the same run.
"""
from __future__ import annotations

import numpy as np

from zoo.bench.speed import paired_times, set_threads

LAYERS = ("halo_attn",)


# (label, HaloAttn arguments (dim, stride, heads, block, halo), input (C, H, W))
CASES = (
    ("halonet50ts stage 1 (4 heads)", (128, 1, 4, 8, 3), (128, 32, 32)),
    ("halonet50ts stage 2", (256, 1, 8, 8, 3), (256, 16, 16)),
    ("halonet50ts stage 3", (512, 1, 8, 8, 3), (512, 8, 8)),
    ("halonet26t stage 3, stride 2", (512, 2, 8, 8, 2), (512, 16, 16)),
)


def _paired(fa, fb, repeats: int):
    """Median times of a (PyTorch) and b (MindSpore), and the median per-pair time ratio b / a."""
    import statistics

    t = paired_times({"a": fa, "b": fb}, repeats, warmup=3)
    return (statistics.median(t["a"]), statistics.median(t["b"]),
            statistics.median(b / a for a, b in zip(t["a"], t["b"])))


def run(batch: int = 8, repeats: int = 20, threads: int = 2, cases=CASES) -> list:
    import mindspore as ms
    import torch
    from mindspore import nn as msnn
    from mindspore import ops

    from zoo.convert import core
    from zoo.models.halonet import ms as M
    from zoo.models.halonet import pt as P

    set_threads(threads)

    rows = []
    for label, args, shape in cases:
        torch.manual_seed(0)
        pt = torch.nn.Sequential(P.HaloAttn(*args))
        net = msnn.SequentialCell([M.HaloAttn(*args)])
        sp = core.spec_of(pt)
        core.load_into_ms(net, core.to_ms(core.pt_state(pt), sp))
        x = np.random.default_rng(0).standard_normal((batch, *shape)).astype(np.float32)
        xt, xm = torch.from_numpy(x), ms.Tensor(x)
        pt.eval()
        net.set_train(False)

        def pt_fwd():
            with torch.no_grad():
                pt(xt)

        xg = xt.clone().requires_grad_(True)

        def pt_train():
            pt.zero_grad()
            xg.grad = None
            pt(xg).sum().backward()

        weights = ms.ParameterTuple(net.trainable_params())
        grad = ops.GradOperation(get_all=True, get_by_list=True)

        class Loss(msnn.Cell):
            def __init__(self, inner):
                super().__init__(auto_prefix=False)
                self.inner = inner

            def construct(self, inp):
                return self.inner(inp).sum()

        class Grad(msnn.Cell):
            def __init__(self, loss):
                super().__init__(auto_prefix=False)
                self.loss = loss

            def construct(self, inp):
                return grad(self.loss, weights)(inp)

        grad_cell = Grad(Loss(net))
        row = dict(case=label, shape=(batch, *shape))
        for mode, key in ((ms.GRAPH_MODE, "graph"), (ms.PYNATIVE_MODE, "pynative")):
            ms.set_context(mode=mode)
            row[f"pt_fwd_{key}"], row[f"ms_{key}_fwd"], row[f"ratio_{key}_fwd"] = _paired(
                pt_fwd, lambda: net(xm).asnumpy(), repeats)
            row[f"pt_train_{key}"], row[f"ms_{key}_train"], row[f"ratio_{key}_train"] = _paired(
                pt_train, lambda: [g.asnumpy() for g in grad_cell(xm)[1]], repeats)
        ms.set_context(mode=ms.PYNATIVE_MODE)
        rows.append(row)
    return rows, threads


def format_rows(rows, threads) -> str:
    head = ("halo layer", "input", "PyTorch ms", "MS graph ms", "ratio", "PyTorch ms", "MS pynative ms", "ratio")
    lines = []
    for what, sfx in (("forward (inference)", "fwd"), ("forward + backward", "train")):
        table = [head]
        for r in rows:
            table.append((r["case"], "x".join(map(str, r["shape"])), f"{r[f'pt_{sfx}_graph'] * 1e3:.1f}",
                          f"{r[f'ms_graph_{sfx}'] * 1e3:.1f}", f"{r[f'ratio_graph_{sfx}']:.2f}",
                          f"{r[f'pt_{sfx}_pynative'] * 1e3:.1f}", f"{r[f'ms_pynative_{sfx}'] * 1e3:.1f}",
                          f"{r[f'ratio_pynative_{sfx}']:.2f}"))
        widths = [max(len(str(row[i])) for row in table) for i in range(len(head))]
        fmt = "  ".join("{:<%d}" % w for w in widths)
        lines.append(f"{what}: median time per call, {threads} CPU threads each; ratio = median over alternating "
                     "pairs of MindSpore time / PyTorch time")
        lines += [fmt.format(*table[0]), fmt.format(*("-" * w for w in widths))] + [fmt.format(*t) for t in table[1:]]
        lines.append("")
    return "\n".join(lines)
