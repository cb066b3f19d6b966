"""The run's record: ``history.json`` (every step's loss, each epoch's metrics) and ``result.log`` (one row
per epoch), both rewritten atomically after every epoch from the history (rank 0 only)."""
from __future__ import annotations

import json
import os

from zoo.files import write_text

RESULT_HEADER = "epoch\ttrain_loss\tval_top1\tval_top5\tval_loss\tlr\ttrain_time_s\teval_time_s\timg_per_s"


class RunLog:
    def __init__(self, cfg, rank: int):
        self.rank = rank
        self.history_path = os.path.join(cfg.ckpt_save_dir, "history.json")
        self.result_path = os.path.join(cfg.ckpt_save_dir, "result.log")
        self.history = {"steps": [], "epochs": []}

    def restore(self, start_epoch: int, global_step: int) -> None:
        """A resumed run keeps the record up to where its checkpoint was taken."""
        if not os.path.exists(self.history_path):
            return
        try:
            with open(self.history_path) as f:
                history = json.load(f)
        except (OSError, ValueError):
            return
        self.history = {"steps": [h for h in history.get("steps", []) if h[0] < global_step],
                        "epochs": [h for h in history.get("epochs", []) if h["epoch"] <= start_epoch]}

    def step(self, global_step: int, loss: float) -> None:
        self.history["steps"].append([int(global_step), float(loss)])

    def epoch(self, row: dict) -> None:
        """Record an epoch (``epoch``, ``train_loss``, ``lr``, metrics, times, ``img_per_s``) and write both files."""
        self.history["epochs"].append(row)
        if self.rank:
            return
        write_text(self.history_path, json.dumps(self.history))
        write_text(self.result_path, self.table())

    def table(self) -> str:
        """The result table; a distillation's loss terms (``train_<term>``) get a column each after train_loss."""
        rows = self.history["epochs"]
        terms = list(dict.fromkeys(k for r in rows for k in r if k.startswith("train_")
                                   and k not in ("train_loss", "train_time")))
        head = RESULT_HEADER.split("\t")
        lines = ["\t".join(head[:2] + terms + head[2:])]
        for r in rows:
            lines.append(f"{r['epoch']}\t{r['train_loss']:.4f}\t"
                         + "".join(f"{r.get(c, float('nan')):.4g}\t" for c in terms)
                         + f"{_m(r, 'top1')}\t{_m(r, 'top5')}\t{_m(r, 'loss', 4)}\t"
                         f"{r['lr']:.6g}\t{r.get('train_time', 0.0):.1f}\t{r.get('eval_time', 0.0):.1f}\t"
                         f"{r.get('img_per_s', 0.0):.1f}")
        return "\n".join(lines) + "\n"


def _m(row: dict, key: str, digits: int = 2) -> str:
    return f"{row[key]:.{digits}f}" if key in row else "-"
