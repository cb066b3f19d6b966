"""The zoo's own errors: one base class, so the command-line tools catch exactly these (a bug keeps its traceback).

Each message says what is wrong and what to do. ``UnknownModelError`` is also a ``KeyError`` (a registry
lookup that fails), ``ConfigError`` also a ``ValueError`` (a value out of range).
"""
from __future__ import annotations


class ZooError(Exception):
    """Base class of every error the zoo raises on purpose."""

    @property
    def message(self) -> str:
        return str(self.args[0]) if self.args else type(self).__name__


class UnknownModelError(ZooError, KeyError):
    """A model or family name that is not registered (the message suggests close names)."""

    def __str__(self) -> str:  # KeyError would quote the message
        return self.message


class ConversionError(ZooError):
    """A checkpoint cannot be read, does not fit the model, or cannot be written."""


class ConfigError(ZooError, ValueError):
    """A recipe or an override is wrong; the message says which key and why."""


class DatasetError(ZooError):
    """The dataset is missing or does not have the expected layout."""


class TrainingError(ZooError):
    """The run cannot start or continue; the message says why and what to do."""


class Diverged(TrainingError):
    """The loss or the weights became non-finite."""


class ExportError(ZooError):
    """A deployment export cannot be made, or the exported model does not give the twins' outputs."""


class WriteError(ZooError):
    """A file cannot be written (full disk, read-only or missing folder, a destination that appeared
    meanwhile); the message names the path and, for a full disk, the free space and the space needed.
    Nothing is left behind: the destination keeps its old content, the temporary file is removed."""
