"""Attention Transfer: CIFAR wide ResNets, ImageNet students and teachers (see config.py)."""
