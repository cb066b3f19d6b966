"""HaloNet: mindcv's ``halonet_50t`` checkpoints (mindspore-lab/mindcv, ``mindcv/models/halonet.py``).

mindcv's network has timm ``halonet50ts``'s parameters one to one under other names:
``stage{i+1}.blocks.{j}`` for ``stages.{i}.{j}``, ``creat_shortcut`` for ``shortcut``, a ``post_attn.bn``
cell for timm's ``post_attn`` norm, ``pos_embed.rel_height/rel_width`` for ``height_rel/width_rel``,
``classifier.1`` for ``head.fc``, and MindSpore's BatchNorm names (``gamma, beta, moving_mean,
moving_variance``; the moving statistics become ``running_mean/running_var``). No tensor changes
shape or layout. Optimizer and training state saved next to the weights by mindcv's trainer
(``adam_m.*``, ``global_step``, ``scale_sense``, ...) is dropped by the reader (``zoo.convert.io``).
"""
import re
from collections import OrderedDict

from zoo.errors import ConversionError
from zoo.convert.layouts import register_layout

_BN = {"gamma": "weight", "beta": "bias", "moving_mean": "running_mean", "moving_variance": "running_var"}
_RULES = (
    (re.compile(r"^stage(\d+)\.blocks\.(\d+)\."), lambda m: f"stages.{int(m.group(1)) - 1}.{m.group(2)}."),
    (re.compile(r"\.creat_shortcut\."), lambda m: ".shortcut."),
    (re.compile(r"\.post_attn\.bn\."), lambda m: ".post_attn."),
    (re.compile(r"\.pos_embed\.rel_(height|width)$"), lambda m: f".pos_embed.{m.group(1)}_rel"),
    (re.compile(r"^classifier\.1\."), lambda m: "head.fc."),
    (re.compile(r"\.(gamma|beta|moving_mean|moving_variance)$"), lambda m: f".{_BN[m.group(1)]}"),
)
_SIGNATURE = ("stem.conv1.conv.weight", "stage1.blocks.0.conv1_1x1.conv.weight", "classifier.1.weight")


def _rename(key: str) -> str:
    for pattern, repl in _RULES:
        key = pattern.sub(repl, key)
    return key


@register_layout("halonet", "mindcv")
def import_mindcv(tensors):
    ms_style = any(k.endswith((".moving_mean", ".gamma")) for k in tensors)
    missing = [k for k in _SIGNATURE if k not in tensors]
    if ms_style and missing and not any(k.startswith("stages.") for k in tensors):
        shown = ", ".join(list(tensors)[:5])
        raise ConversionError(
            f"not a mindcv halonet_50t checkpoint: it lacks {', '.join(missing)} (its first names: {shown}, ...); "
            "is it a mindcv checkpoint of another model?")
    return OrderedDict((_rename(k), v) for k, v in tensors.items())
