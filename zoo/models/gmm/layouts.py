"""GMM family: the checkpoints of the reference's ``main.py`` (CatworldLee/Gaussian-Mixture-Mask-Attention).

``main.py`` writes ``save/<model name>/checkpoint.pth`` and ``best.pth`` during training as
``{'model_state_dict', 'epoch', 'optimizer_state_dict', 'scheduler'}``, and at the end overwrites
``checkpoint.pth`` with the bare ``model.state_dict()``. The reader takes the weights from
``model_state_dict`` and drops the epoch, the AdamW state and the scheduler state with a note; no
``module.`` prefix (the model is not wrapped). The keys are the reference's module names, which the zoo's
PyTorch twins keep (``nn.Sequential`` indices, ``fn.fn`` wrappers, the frozen base ``mask`` once per holder),
so the mapping is the identity; the copies of each shared base mask are checked to be equal on loading (the
twins hold one tensor). It is registered so that ``--layout official`` names the format explicitly.

Going back (``zoo convert ... model.pth``), the PyTorch file has the reference's layout: every holder's copy
of the base mask is written, and ``torch.load`` + ``load_state_dict(strict=True)`` on the reference's own
model takes it (that is what ``tools/check_reference.py gmm`` proves).
"""
from collections import OrderedDict

from zoo.convert.layouts import register_layout


@register_layout("gmm", "official")
def import_official(tensors):
    return OrderedDict(tensors)
