"""The run's output folder (``ckpt_save_dir``): never overwrite a run, one run at a time, no litter.

- **A folder that holds a run is refused** unless the run is resumed (``--resume``): a new run would
  replace its checkpoints and history. The message names what is there and how to continue it or where
  to start a new one. (A week-long run is worth more than a retyped command: nothing is renamed or
  numbered behind the user's back, and ``--resume auto`` keeps meaning "this folder's run".)
- **A lock** (``.zoo-train.lock``, an ``flock`` held by rank 0 for the run's lifetime) keeps a second run,
  started at the same time or later, out of the folder. The kernel releases it when the process ends, even
  on SIGKILL, so a stale lock of a dead process never blocks (it is reported and taken over). Under
  msrun/torchrun only rank 0 locks: the run's own ranks share the folder, and all ranks learn rank 0's
  verdict (an all-reduce) before any of them writes.
- **Stale temporary files** of killed saves (``.<name>.partial-<host>-<pid>-...``) are removed at start.
"""
from __future__ import annotations

import glob
import os
import re
import socket
import time
from typing import List, Optional

import numpy as np

from zoo.errors import TrainingError
from zoo.files import clean_stale_partials, human


LOCK_NAME = ".zoo-train.lock"
RUN_FILES = ("args.yaml", "history.json", "result.log", "last.ckpt", "last.pth")


def run_files(folder: str) -> List[str]:
    """The files of a training run in ``folder`` (records and checkpoints), by name."""
    if not os.path.isdir(folder):
        return []
    names = set(os.listdir(folder))
    found = [n for n in RUN_FILES if n in names]
    found += sorted(n for n in names if re.search(r"(-\d+_\d+|_best)\.(ckpt|pth)$", n))
    return found


def next_free(folder: str) -> str:
    base = re.sub(r"-\d+$", "", folder.rstrip("/")) or folder
    for i in range(2, 1000):
        cand = f"{base}-{i}"
        if not run_files(cand):
            return cand
    return base + "-new"


class FolderLock:
    """An exclusive lock on a run folder, held until ``release`` or the process's end."""

    def __init__(self, folder: str):
        self.path = os.path.join(folder, LOCK_NAME)
        self.fd: Optional[int] = None
        self.stale: str = ""  # what a previous holder that died left in the file
        self.notes: List[str] = []  # what taking the folder did, for the run's log

    def acquire(self) -> "FolderLock":
        import fcntl

        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as err:
            raise TrainingError(f"ckpt_save_dir {os.path.dirname(self.path)}: cannot write there "
                                f"({err.strerror}); choose a writable --ckpt_save_dir") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read(fd)
            os.close(fd)
            raise TrainingError(f"ckpt_save_dir {os.path.dirname(self.path)} is in use by another run "
                                f"({holder or 'a running process'}): two runs in one folder would overwrite each "
                                "other's files. Wait for it to end, or pass another --ckpt_save_dir") from None
        except OSError as err:  # a file system without flock (some network mounts): the pid decides
            holder = _read(fd)
            if _held_by_live_process(holder):
                os.close(fd)
                raise TrainingError(f"ckpt_save_dir {os.path.dirname(self.path)} is in use by another run ({holder}); "
                                    "wait for it to end, or pass another --ckpt_save_dir") from None
            self.notes.append(f"ckpt_save_dir: this file system cannot lock files ({err.strerror}); the lock is a "
                              "pid file only")
        self.stale = _read(fd)
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()} on {socket.gethostname()} since {time.strftime('%Y-%m-%d %H:%M:%S')}\n"
                     .encode())
        os.fsync(fd)
        self.fd = fd
        return self

    def release(self) -> None:
        """Unlock (the file stays, empty: removing a lock file races with a process opening it)."""
        if self.fd is None:
            return
        try:
            os.ftruncate(self.fd, 0)
        except OSError:
            pass
        os.close(self.fd)
        self.fd = None


def _read(fd: int) -> str:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        return os.read(fd, 4096).decode(errors="replace").strip()
    except OSError:
        return ""


def _held_by_live_process(holder: str) -> bool:
    m = re.match(r"pid (\d+) on (\S+)", holder or "")
    if not m:
        return False
    if m.group(2) != socket.gethostname():
        return True  # another host's process: cannot tell, assume it runs
    try:
        os.kill(int(m.group(1)), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return int(m.group(1)) != os.getpid()


def _check_and_lock(cfg) -> FolderLock:
    """Rank 0's part: create the folder, lock it, refuse a run that is there, clean stale partial files."""
    folder = cfg.ckpt_save_dir
    if os.path.exists(folder) and not os.path.isdir(folder):
        raise TrainingError(f"ckpt_save_dir {folder}: is a file, not a folder")
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as err:
        raise TrainingError(f"ckpt_save_dir {folder}: cannot create it ({err.strerror}); choose a writable "
                            "--ckpt_save_dir") from None
    lock = FolderLock(folder).acquire()
    try:
        found = run_files(folder)
        if found and not cfg.resume:
            newest = max(os.path.getmtime(os.path.join(folder, n)) for n in found)
            shown = ", ".join(found[:5]) + (f", ... ({len(found) - 5} more)" if len(found) > 5 else "")
            raise TrainingError(
                f"ckpt_save_dir {folder} already holds a run ({shown}; last written "
                f"{time.strftime('%Y-%m-%d %H:%M', time.localtime(newest))}); a new run there would overwrite it. "
                f"To continue that run, add --resume auto. To start a new run, pass another --ckpt_save_dir "
                f"(e.g. --ckpt_save_dir {next_free(folder)}), or move the old run away first.")
        if lock.stale:
            lock.notes.append(f"ckpt_save_dir: the previous run ({lock.stale}) ended without releasing its lock "
                              "(killed?); taken over")
        removed = []
        subs = [d for d in glob.glob(os.path.join(glob.escape(folder), "rank*")) if os.path.isdir(d)]
        for sub in [folder, *subs]:
            sizes = {p: os.path.getsize(p) for p in glob.glob(os.path.join(glob.escape(sub), ".*.partial-*"))}
            gone = clean_stale_partials(sub)
            removed += [(p, sizes.get(p, 0)) for p in gone]
        if removed:
            lock.notes.append(f"removed {len(removed)} temporary file(s) that killed saves left "
                              f"({human(sum(s for _, s in removed))}): "
                              + ", ".join(os.path.basename(p) for p, _ in removed[:5]))
    except BaseException:
        lock.release()
        raise
    return lock


def take(cfg, backend) -> Optional[FolderLock]:
    """Take the output folder for this run (rank 0 decides, every rank learns the verdict)."""
    lock, failure = None, None
    if backend.rank == 0:
        try:
            lock = _check_and_lock(cfg)
        except TrainingError as err:
            failure = err
    if backend.world > 1:
        verdict = backend.allreduce(np.array([1.0 if failure else 0.0]))[0]
        if verdict and failure is None:
            raise TrainingError(f"rank 0 refused ckpt_save_dir {cfg.ckpt_save_dir} (its log says why)")
    if failure is not None:
        raise failure
    if backend.rank and not os.path.isdir(cfg.ckpt_save_dir):
        os.makedirs(cfg.ckpt_save_dir, exist_ok=True)
    return lock
