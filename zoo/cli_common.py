"""What every command line of the zoo shares: exit statuses, the error line, the exit tail and argument types.

A leaf below ``zoo.cli`` (it imports nothing of the zoo's but its errors), so that modules with their own command
line (``zoo.validate``) use these without importing the ``zoo`` command, which imports them.
"""
from __future__ import annotations

import argparse
import os
import sys

from zoo.errors import ZooError

EXIT_OK, EXIT_FAIL, EXIT_USAGE = 0, 1, 2


def error(command: str, err) -> int:
    """Print a zoo error once, on stderr, prefixed with the command's name; the usage exit status."""
    msg = err.message if isinstance(err, ZooError) else str(err)
    print(f"zoo {command}: error: {msg}", file=sys.stderr)
    return EXIT_USAGE


def exit_process(code: int) -> None:
    """End a command-line process with ``code`` once its output is flushed (every entry point's tail).

    MindSpore 2.8's Cell.__del__ raises at interpreter shutdown (a traceback after every run), so the process
    leaves without the teardown; under msrun or torchrun it exits normally instead, since the framework
    must finalise the cluster node that the launcher's scheduler waits for."""
    from zoo.train.common import launched_by_torchrun

    sys.stdout.flush()
    sys.stderr.flush()
    if "MS_ROLE" in os.environ or launched_by_torchrun():
        sys.exit(code)
    os._exit(code)


def positive_int(s):
    """An argparse type: a whole number >= 1."""
    try:
        v = int(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {s!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {v}")
    return v


def parse_size(s):
    """``--input-size``: 224, 224x224 or 3x224x224 (an argparse type: a bad value is a usage error)."""
    if s is None:
        return None
    try:
        parts = [int(p) for p in s.lower().replace("x", ",").split(",") if p.strip()]
    except ValueError:
        parts = []
    if parts and all(p >= 1 for p in parts) and len(parts) in (1, 2, 3):
        return {1: lambda: (3, parts[0], parts[0]), 2: lambda: (3, *parts), 3: lambda: tuple(parts)}[len(parts)]()
    raise argparse.ArgumentTypeError(f"bad --input-size {s!r}; use 224, 224x224 or 3x224x224")


def check_output_file(path: str) -> None:
    """A file the command will write at the end: its folder must exist and be writable (checked first)."""
    from zoo.errors import WriteError

    folder = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise WriteError(f"{path}: is a folder; give a file name")
    if not os.path.isdir(folder):
        raise WriteError(f"{path}: the folder {folder} does not exist")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise WriteError(f"{path}: the folder {folder} is not writable")
