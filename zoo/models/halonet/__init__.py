"""HaloNet family (timm's halonet_h1, halonet26t, sehalonet33ts, halonet50ts, halo2botnet50ts_256;
mindcv's halonet_50t)."""
