"""Classification metrics on numpy logits, shared by validation and the trainer's evaluation (no framework)."""
from __future__ import annotations

import numpy as np


def score(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """[correct@1, correct@5, cross-entropy sum, count] of a batch."""
    logits = logits.astype(np.float64)
    top5 = np.argsort(-logits, axis=1)[:, :5]
    m = logits.max(axis=1, keepdims=True)
    logp = logits - m - np.log(np.exp(logits - m).sum(axis=1, keepdims=True))
    return np.array([(top5[:, 0] == labels).sum(), (top5 == labels[:, None]).any(axis=1).sum(),
                     -logp[np.arange(len(labels)), labels].sum(), len(labels)], np.float64)


def summarize(totals: np.ndarray) -> dict:
    """top1/top5 (%), mean loss and count from summed ``score`` rows."""
    n = max(totals[3], 1)
    return {"top1": 100 * totals[0] / n, "top5": 100 * totals[1] / n, "loss": totals[2] / n, "count": int(totals[3])}
