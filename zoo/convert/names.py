"""PyTorch <-> MindSpore parameter names, derived from the types of the modules that own them.

The MindSpore twin uses the PyTorch twin's attribute names; the only differences left are the
framework's own parameter names for a few layer types, listed in ``RULES``. ``num_batches_tracked``
has no MindSpore counterpart (BatchNorm momentum is never None in the zoo), so it is dropped going
to MindSpore and restored as 0 coming back. Layouts of all other tensors are identical (conv
weights are (out, in/groups, kh, kw) and linear weights (out, in) in both frameworks).
"""
from __future__ import annotations

from collections import OrderedDict

from torch import nn

RULES = (
    (nn.modules.batchnorm._BatchNorm,
     {"weight": "gamma", "bias": "beta", "running_mean": "moving_mean", "running_var": "moving_variance"}),
    ((nn.LayerNorm, nn.GroupNorm), {"weight": "gamma", "bias": "beta"}),
    (nn.Embedding, {"weight": "embedding_table"}),
)
PT_ONLY = ("num_batches_tracked",)


def is_pt_only(name: str) -> bool:
    return name.rsplit(".", 1)[-1] in PT_ONLY


def name_map(model: nn.Module) -> "OrderedDict[str, str]":
    """{PyTorch state_dict name: MindSpore parameter name} for every tensor MindSpore holds too.

    A tensor that several modules hold (the GMM family's frozen base mask: one Parameter, listed in the
    state dict once per holder) is one MindSpore parameter, named after its first holder: all its PyTorch
    names map to that one name (``to_ms`` checks the copies agree, ``from_ms`` writes every copy back).
    """
    out, first = OrderedDict(), {}
    for prefix, module in model.named_modules():
        rename = next((r for types, r in RULES if isinstance(module, types)), {})
        persistent = [n for n in module._buffers if n not in module._non_persistent_buffers_set]
        for local in list(module._parameters) + persistent:
            if getattr(module, local, None) is None or local in PT_ONLY:
                continue
            full = f"{prefix}.{local}" if prefix else local
            own = f"{prefix}.{rename.get(local, local)}" if prefix else rename.get(local, local)
            out[full] = first.setdefault(id(getattr(module, local)), own)
    return out
