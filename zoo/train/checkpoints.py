"""The trainer's checkpoint policy (what timm's CheckpointSaver does) and resume.

``CheckpointSaver`` writes ``last<suffix>`` (what ``--resume auto`` continues from; every epoch end and
every ``ckpt_save_steps`` steps), ``<model>-<epoch>_<steps><suffix>`` every ``ckpt_save_interval`` epochs
(the newest ``keep_checkpoint_max`` kept), and ``<model>_best<suffix>`` (the best validation top-1).
Every checkpoint holds the weights, the optimizer state and the training position (``position``), and is
written atomically by the backend. ``resume`` restores a run from one.
"""
from __future__ import annotations

import glob
import logging
import os
import re
from typing import Optional, Tuple

from zoo.errors import Diverged, TrainingError, WriteError
from zoo.train.common import Backend, describe_position

log = logging.getLogger("zoo.train")


class CheckpointSaver:
    def __init__(self, backend: Backend, cfg, steps_per_epoch: int, classes=None):
        self.backend, self.cfg, self.steps = backend, cfg, steps_per_epoch
        self.rank, self.world, self.suffix = backend.rank, backend.world, backend.suffix
        self.dir = cfg.ckpt_save_dir
        self.last_path = os.path.join(self.dir, "last" + self.suffix)
        self.best_path = os.path.join(self.dir, f"{cfg.model}_best{self.suffix}")
        self.classes = list(classes) if classes is not None else None
        self.best = {"top1": -1.0, "epoch": -1}

    # --- what a checkpoint records --------------------------------------------------------------

    def position(self, epoch: int, step: int) -> dict:
        """The training position: ``epoch`` epochs done, ``step`` steps into the next (plain Python numbers,
        since a .pth is read back with weights_only=True)."""
        return {"epoch": int(epoch), "step": int(step), "global_step": int(epoch * self.steps + step),
                "best_top1": float(self.best["top1"]), "best_epoch": int(self.best["epoch"]),
                "world": int(self.world), "batch_size": int(self.cfg.batch_size), "seed": int(self.cfg.seed),
                "model": str(self.cfg.model)}

    def last_good(self) -> Optional[str]:
        return self.last_path if os.path.exists(self.last_path) else None

    def diverged(self, what: str) -> Diverged:
        good = self.last_good()
        return Diverged(what + (f" The last good checkpoint is {good}." if good else " No checkpoint was saved yet.")
                        + " Lower the learning rate, check the data, or use a loss scale with AMP.")

    # --- saving ---------------------------------------------------------------------------------

    def save(self, path: str, epoch: int, step: int) -> None:
        try:
            self.backend.save(path, self.position(epoch, step))
        except Diverged as err:
            raise self.diverged(str(err)) from None
        except WriteError as err:
            good = self.last_good()
            raise TrainingError(f"{err.message} The run stopped at {describe_position(self.position(epoch, step))}"
                                + (f"; the last good checkpoint is {good}: free space, then continue it with "
                                   "--resume auto" if good else "; no checkpoint was saved yet") + ".") from None

    def save_last(self, epoch: int, step: int) -> None:
        """``last`` on rank 0 (and under rank<N>/ on every rank with ``ckpt_save_all_ranks``)."""
        if self.rank == 0:
            self.save(self.last_path, epoch, step)
        if self.cfg.ckpt_save_all_ranks and self.rank:
            self.save(os.path.join(self.dir, f"rank{self.rank}", "last" + self.suffix), epoch, step)

    def end_epoch(self, epoch: int, metrics: dict) -> None:
        """After epoch ``epoch`` (1-based) and its validation: last, the per-epoch file and pruning, best."""
        if metrics and metrics["top1"] > self.best["top1"]:
            self.best = {"top1": float(metrics["top1"]), "epoch": int(epoch)}
        self.save_last(epoch, 0)
        if self.rank:
            return
        if epoch % self.cfg.ckpt_save_interval == 0 or epoch == self.cfg.epoch_size:
            self.save(self.epoch_path(epoch), epoch, 0)
            self.prune()
        if metrics and self.best["epoch"] == epoch:
            self.save(self.best_path, epoch, 0)

    def epoch_path(self, epoch: int) -> str:
        return os.path.join(self.dir, f"{self.cfg.model}-{epoch}_{self.steps}{self.suffix}")

    def epoch_files(self):
        """This run's per-epoch checkpoints, oldest first."""
        pattern = re.compile(re.escape(self.cfg.model) + r"-(\d+)_(\d+)" + re.escape(self.suffix) + "$")
        found = []
        for p in glob.glob(os.path.join(glob.escape(self.dir), f"{glob.escape(self.cfg.model)}-*_*{self.suffix}")):
            m = pattern.match(os.path.basename(p))
            if m:
                found.append((int(m.group(1)), p))
        return [p for _, p in sorted(found)]

    def prune(self) -> None:
        keep = self.cfg.keep_checkpoint_max
        files = self.epoch_files()
        for old in files[:-keep] if keep > 0 else files:
            os.remove(old)


def resume(backend: Backend, cfg, saver: CheckpointSaver) -> Tuple[int, int]:
    """Restore weights, optimizer state and position from ``cfg.resume``; (epochs done, step in the next)."""
    path = saver.last_path if cfg.resume == "auto" else cfg.resume
    saved = backend.load(path)
    start_epoch, start_step = int(saved["epoch"]), int(saved["step"])
    saver.best = {"top1": float(saved.get("best_top1", -1.0)), "epoch": int(saved.get("best_epoch", -1))}
    world, batch = backend.world, cfg.batch_size
    if int(saved.get("world", world)) != world or int(saved.get("batch_size", batch)) != batch:
        log.warning("resuming with %d rank(s) x batch %d, the run had %d x %d: the data order changes from here",
                    world, batch, int(saved.get("world", 0)), int(saved.get("batch_size", 0)))
    log.info("resumed from %s: epoch %d, step %d", path, start_epoch + 1, start_step)
    return start_epoch, start_step
