"""GMM family, PyTorch twins: one module per architecture (the registry builds ``zoo.models.gmm.pt.<Class>``)."""
from zoo.models.gmm.pt.vit import ViT  # noqa: F401
from zoo.models.gmm.pt.cait import CaiT  # noqa: F401
# Swin, PiT, T2T: gmm-b's modules (swin.py, pit.py, t2t.py) add their exports here
