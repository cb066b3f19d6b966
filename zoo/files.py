"""The one atomic writer: every file the zoo writes (checkpoints, histories, exports) goes through it.

``atomic_write(path, write)`` calls ``write(tmp)`` on a hidden temporary file in the destination's folder
(``.<name>.partial-<host>-<pid>-<random><suffix>``: the same suffix, so libraries that pick a format from
the name see the right one), gives it the mode a new file gets from the umask, flushes it to disk,
publishes it under ``path`` and flushes the folder: readers see the old file or the whole new one, never
part of one, also after a power loss. ``overwrite=False`` publishes with a hard link, so it fails if
``path`` appeared meanwhile (two writers racing for one name: exactly one wins). On any failure the
temporary file (and any the writing library made beside it) is removed and ``path`` is untouched; a
full disk or an unwritable folder becomes a ``WriteError`` naming the path, the free space and the space
needed. ``clean_stale_partials(folder)`` removes the temporary files of processes that were killed.
"""
from __future__ import annotations

import errno
import glob
import os
import re
import secrets
import shutil
import socket
from typing import Callable, List, Optional

from zoo.errors import WriteError, ZooError

_DISK_FULL = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}
# what libraries say when a write fails underneath them (torch: "file write failed", safetensors: an
# I/O error text, MindSpore: "Failed to save")
_IO_WORDS = ("no space", "write failed", "file write", "i/o error", "input/output error", "read-only",
             "permission denied", "quota", "failed to save", "unexpected pos", "disk")


def umask() -> int:
    """The process's umask, read without changing it where /proc allows."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def new_file_mode() -> int:
    """The mode ``open(path, 'w')`` gives a new file (0o666 less the umask)."""
    return 0o666 & ~umask()


def human(n: Optional[float]) -> str:
    if n is None:
        return "?"
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000.0
    return f"{n:.1f} TB"


def free_space(folder: str) -> Optional[int]:
    try:
        return shutil.disk_usage(folder).free
    except OSError:
        return None


_HOST = re.sub(r"[^A-Za-z0-9_.]", "_", socket.gethostname())[:40] or "host"
_PARTIAL = re.compile(r"^\.(?P<name>.+)\.partial-(?:(?P<host>[A-Za-z0-9_.]+)-)?(?P<pid>\d+)(?:-[0-9a-f]+)?(?:\..*)?$")


def partial_path(path: str) -> str:
    folder, name = os.path.split(os.path.abspath(path))
    suffix = os.path.splitext(name)[1]
    return os.path.join(folder, f".{name}.partial-{_HOST}-{os.getpid()}-{secrets.token_hex(3)}{suffix}")


def atomic_write(path: str, write: Callable[[str], None], overwrite: bool = True,
                 size_hint: Optional[int] = None) -> None:
    """Write ``path`` by calling ``write(tmp)`` on a temporary file next to it, then publishing it.

    ``overwrite=False``: fail (``WriteError``) if ``path`` exists when the file is published.
    ``size_hint``: the expected size in bytes, for the message when the disk is full.
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as err:
        raise _error(path, err, size_hint, folder) from None
    tmp = partial_path(path)
    try:
        os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    except OSError as err:
        raise _error(path, err, size_hint, folder) from None
    try:
        write(tmp)
        if not os.path.exists(tmp):
            raise WriteError(f"{path}: the writer left no file behind; nothing was written")
        os.chmod(tmp, new_file_mode())  # MindSpore makes its checkpoints read-only, mkstemp 0600
        _fsync(tmp)
        if overwrite:
            os.replace(tmp, path)
        else:
            _publish_exclusive(tmp, path)
        _fsync(folder)
    except BaseException as err:
        _remove_partial(tmp)
        if isinstance(err, ZooError) or not isinstance(err, Exception):
            raise
        translated = _translate(path, err, size_hint, folder)
        if translated is None:
            raise  # not an I/O failure: a bug keeps its traceback
        raise translated from None


def _publish_exclusive(tmp: str, path: str) -> None:
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise WriteError(f"{path}: it appeared while this file was being written (another process wrote it); "
                         "nothing was written over it") from None
    except OSError as err:
        if err.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK):
            raise
        # a file system without hard links: claim the name exclusively, then replace the empty claim
        try:
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        except FileExistsError:
            raise WriteError(f"{path}: it appeared while this file was being written (another process wrote "
                             "it); nothing was written over it") from None
        os.replace(tmp, path)
        return
    os.remove(tmp)


def _fsync(path: str) -> None:
    """Flush a file or a folder to disk (folders: the rename itself); file systems that cannot are skipped."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) if os.path.isdir(path) else os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError as err:
        if err.errno not in (errno.EINVAL, errno.EBADF, errno.ENOTSUP, errno.EROFS):
            raise
    finally:
        os.close(fd)


def _remove_partial(tmp: str) -> None:
    """The temporary file and whatever a library wrote beside it (MindSpore writes ``<tmp stem>.tmp``)."""
    stem = os.path.splitext(tmp)[0]
    for p in {tmp, *glob.glob(glob.escape(stem) + ".*")}:
        try:
            os.chmod(p, 0o600)
            os.remove(p)
        except OSError:
            pass


def _error(path: str, err: OSError, size_hint: Optional[int], folder: str) -> WriteError:
    if err.errno in _DISK_FULL:
        return disk_full(path, size_hint, folder)
    if err.errno == errno.ENOENT:
        return WriteError(f"cannot write {path}: the folder {folder} does not exist; nothing was written")
    return WriteError(f"cannot write {path}: {err.strerror or err}; nothing was written")


def disk_full(path: str, size_hint: Optional[int], folder: str) -> WriteError:
    free = free_space(folder)
    need = f"; the file needs about {human(size_hint)}" if size_hint else ""
    return WriteError(f"cannot write {path}: the disk is full ({human(free)} free in {folder}{need}); "
                      "nothing was written. Free some space or choose another folder.")


def _translate(path: str, err: Exception, size_hint: Optional[int], folder: str) -> Optional[WriteError]:
    """A WriteError for an I/O failure (also one a library reports in its own words), None for anything else."""
    if isinstance(err, OSError) and err.errno is not None:
        return _error(path, err, size_hint, folder)
    free = free_space(folder)
    text = str(err).lower()
    if free is not None and free < max(size_hint or 0, 1 << 20):
        return disk_full(path, size_hint, folder)
    if isinstance(err, OSError) or any(w in text for w in _IO_WORDS):
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        return WriteError(f"cannot write {path}: {first[:200]}; nothing was written")
    return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def clean_stale_partials(folder: str) -> List[str]:
    """Remove the temporary files that killed processes of this host left in ``folder``; returns them.

    Files of live processes, and of other hosts (a shared file system), are kept."""
    removed = []
    try:
        names = os.listdir(folder)
    except OSError:
        return removed
    for name in names:
        m = _PARTIAL.match(name)
        if not m:
            continue
        host, pid = m.group("host"), int(m.group("pid"))
        if (host is not None and host != _HOST) or pid == os.getpid() or _alive(pid):
            continue
        p = os.path.join(folder, name)
        try:
            os.remove(p)
            removed.append(p)
        except OSError:
            pass
    return removed


def write_text(path: str, text: str, overwrite: bool = True) -> None:
    """``atomic_write`` of a text file."""
    def write(tmp):
        with open(tmp, "w") as f:
            f.write(text)

    atomic_write(path, write, overwrite=overwrite, size_hint=len(text.encode()))
