"""GMM family, MindSpore twins: one module per architecture (the registry builds ``zoo.models.gmm.ms.<Class>``)."""
from zoo.models.gmm.ms.vit import ViT  # noqa: F401
from zoo.models.gmm.ms.cait import CaiT  # noqa: F401
# Swin, PiT, T2T: gmm-b's modules (swin.py, pit.py, t2t.py) add their exports here
