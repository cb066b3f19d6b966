"""Shared building blocks: ``zoo.nn.pt`` (PyTorch) and ``zoo.nn.ms`` (MindSpore, PyTorch-style constructors).

Import the half you need; importing this package imports neither framework.
"""


def drop_path_rates(drop_path_rate: float, n: int) -> list:
    """Stochastic-depth rates spread linearly over ``n`` blocks (0 ... drop_path_rate), as timm does."""
    if n <= 1:
        return [0.0] * n
    return [drop_path_rate * i / (n - 1) for i in range(n)]
