"""Parameter counts and multiply-accumulates, counted on the PyTorch twin with torch's own counter.

``torch.utils.flop_counter`` counts 2 FLOPs per multiply-add of convolutions and matrix products
(it ignores element-wise ops, pooling and normalisation, as fvcore and the published tables do),
so GMACs = FLOPs / 2 / 1e9.
"""
from __future__ import annotations

from typing import Optional, Sequence


def count_params(model) -> int:
    return sum(p.numel() for p in model.parameters())


def count_gmacs(model, input_size: Sequence[int], batch: int = 1) -> float:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    was_training = model.training
    model.eval()
    counter = FlopCounterMode(display=False)
    try:
        with torch.no_grad(), counter:
            model(torch.zeros(batch, *input_size))
    finally:
        model.train(was_training)
    return counter.get_total_flops() / 2 / 1e9 / batch


def model_figures(name: str, input_size: Optional[Sequence[int]] = None) -> dict:
    """{'params', 'gmacs'} of a registered model's PyTorch twin at its (or the given) input size."""
    from zoo import create_model, registry

    entry = registry.get(name)
    model = create_model(name, "pt")
    return {"params": count_params(model), "gmacs": count_gmacs(model, input_size or entry.input_size)}


def count_linear_conv_gmacs(model, input_size: Sequence[int], batch: int = 1) -> float:
    """Multiply-accumulates of the ``nn.Linear`` and ``nn.Conv*`` layers only, in billions per sample.

    The convention of tables that count the layers' MACs with hooks (e.g. the GMM-ViT README): attention's
    q.k and attn.v products, norms and element-wise ops are not counted.
    """
    import torch
    from torch import nn

    total = [0]

    def linear(m, inp, out):
        total[0] += out.numel() * m.in_features

    def conv(m, inp, out):
        total[0] += out.numel() * (m.in_channels // m.groups) * int(torch.tensor(m.kernel_size).prod())

    handles = []
    for m in model.modules():
        if isinstance(m, nn.Linear):
            handles.append(m.register_forward_hook(linear))
        elif isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
            handles.append(m.register_forward_hook(conv))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros(batch, *input_size))
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return total[0] / 1e9 / batch
