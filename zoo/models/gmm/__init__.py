"""The GMM-ViT family: small-data ViT, Swin, CaiT, PiT and T2T, with and without the Gaussian mixture mask."""
