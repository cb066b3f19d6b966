"""Triplet Attention: the official checkpoints (landskape-ai/triplet-attention).

The training script wraps the weights as ``{'epoch', 'arch', 'state_dict', 'best_prec1',
'optimizer'}`` with a ``module.`` prefix (removed by the reader). Over time the maintainers named
the attention module ``triplet_attention``, ``pcam`` or ``triplet``, its gates
``ChannelGateH/ChannelGateW/SpatialGate`` or ``cw/hc/hw``, and the gate's inner conv block
``spatial`` or ``conv``; all are mapped to the names the zoo (and the reference's MODELS/ code) use.
"""
import re
from collections import OrderedDict

from zoo.convert.layouts import register_layout

_GATES = {"ChannelGateH": "ChannelGateH", "cw": "ChannelGateH",
          "ChannelGateW": "ChannelGateW", "hc": "ChannelGateW",
          "SpatialGate": "SpatialGate", "hw": "SpatialGate"}
_GATE_RE = re.compile(r"(?P<lead>^|\.)(?P<attr>(?:triplet_attention|pcam|triplet)\.)?"
                      r"(?P<gate>ChannelGateH|cw|ChannelGateW|hc|SpatialGate|hw)\.(?:spatial|conv)\.(?P<leaf>conv|bn)\.")


def _rename(key: str) -> str:
    def sub(m):
        attr = "triplet_attention." if m.group("attr") else ""
        return f"{m.group('lead')}{attr}{_GATES[m.group('gate')]}.spatial.{m.group('leaf')}."
    return _GATE_RE.sub(sub, key)


@register_layout("triplet", "official")
def import_official(tensors):
    return OrderedDict((_rename(k), v) for k, v in tensors.items())
