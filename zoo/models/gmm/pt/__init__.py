"""GMM family, PyTorch twins: one module per architecture (the registry builds ``zoo.models.gmm.pt.<Class>``)."""
from zoo.models.gmm.pt.vit import ViT  # noqa: F401
from zoo.models.gmm.pt.cait import CaiT  # noqa: F401
from zoo.models.gmm.pt.swin import Swin  # noqa: F401
from zoo.models.gmm.pt.pit import PiT  # noqa: F401
from zoo.models.gmm.pt.t2t import T2T  # noqa: F401
