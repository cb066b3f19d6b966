"""VAN: the official checkpoints (Visual-Attention-Network/VAN-Classification).

The training script saves timm ``CheckpointSaver`` files: ``{'epoch', 'arch', 'state_dict', 'optimizer',
'version', 'args', 'metric', ...}`` with the weights under ``state_dict`` and no ``module.`` prefix; the
reader takes that entry and drops the rest. The keys are the reference's module names, which the zoo's
PyTorch twin keeps, so the mapping is the identity; it is registered so that ``--layout official`` names
the format explicitly. (mmcls/mmseg re-exports rename ``block`` -> ``blocks``, ``proj.`` -> ``projection.``
and ``head.`` -> ``head.fc.``; they are not this layout.)
"""
from collections import OrderedDict

from zoo.convert.layouts import register_layout


@register_layout("van", "official")
def import_official(tensors):
    return OrderedDict(tensors)
