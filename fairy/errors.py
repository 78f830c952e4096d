"""Every error the library raises on purpose: one base, a flat list of subclasses.

Each message is one line a user can act on; callers (the CLI, the server) show
it as is.
"""

from __future__ import annotations

__all__ = [
    "FairyError",
    "InvalidInputError",
    "MediaError",
    "OutputExistsError",
    "ModelLoadError",
    "EditCancelled",
]


class FairyError(Exception):
    """Base class of the library's errors."""


class InvalidInputError(FairyError, ValueError):
    """A parameter or request that cannot be honoured (empty instruction, bad range, ...)."""


class MediaError(FairyError):
    """A media file that is missing, unreadable, or cannot be decoded or encoded."""


class OutputExistsError(FairyError, FileExistsError):
    """The output path exists and overwriting was not asked for, or it is the input itself."""


class ModelLoadError(FairyError):
    """A model that cannot be found or loaded."""


class EditCancelled(FairyError):
    """The caller cancelled the edit; nothing was written."""
