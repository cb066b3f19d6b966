"""Shared building blocks: ``zoo.nn.pt`` (PyTorch) and ``zoo.nn.ms`` (MindSpore, PyTorch-style constructors).

Import the half you need; importing this package imports neither framework.
"""


def drop_path_rates(drop_path_rate: float, n: int) -> list:
    """Stochastic-depth rates spread linearly over ``n`` blocks (0 ... drop_path_rate), as timm does."""
    if n <= 1:
        return [0.0] * n
    return [drop_path_rate * i / (n - 1) for i in range(n)]


def make_divisible(v: float, divisor: int = 8, min_value=None, round_limit: float = 0.9) -> int:
    """timm's ``make_divisible``: ``v`` rounded to the nearest multiple of ``divisor`` (not below ``min_value``,
    default ``divisor``), rounded up instead when that would lose more than ``1 - round_limit`` of ``v``."""
    min_value = min_value or divisor
    new_v = max(min_value, int(v + divisor / 2) // divisor * divisor)
    if new_v < round_limit * v:
        new_v += divisor
    return new_v
