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
