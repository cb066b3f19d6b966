"""The one atomic writer: every file the zoo writes (checkpoints, histories, exports) goes through it.

``atomic_write(path, write)`` calls ``write(tmp)`` on a hidden temporary file in the destination's folder
(same suffix, so libraries that pick a format from the name see the right one), then renames it into
place: readers see the old file or the whole new one, never part of one, and nothing is left behind on
failure.
"""
from __future__ import annotations

import os


def atomic_write(path: str, write) -> None:
    """Write ``path`` by calling ``write(tmp)`` on a temporary file next to it, then renaming it into place."""
    folder, name = os.path.split(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    tmp = os.path.join(folder, f".{name}.partial-{os.getpid()}{os.path.splitext(name)[1]}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
