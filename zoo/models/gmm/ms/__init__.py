"""GMM family, MindSpore twins: one module per architecture (the registry builds ``zoo.models.gmm.ms.<Class>``)."""
# ViT, CaiT (gmm-a) and Swin, PiT, T2T (gmm-b) are exported here as their modules land
