"""GMM family, MindSpore twins: one module per architecture (the registry builds ``zoo.models.gmm.ms.<Class>``)."""
from zoo.models.gmm.ms.vit import ViT  # noqa: F401
from zoo.models.gmm.ms.cait import CaiT  # noqa: F401
from zoo.models.gmm.ms.swin import Swin  # noqa: F401
from zoo.models.gmm.ms.pit import PiT  # noqa: F401
from zoo.models.gmm.ms.t2t import T2T  # noqa: F401
