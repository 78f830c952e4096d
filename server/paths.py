"""Which files a request may name: the media-root policy for path mode.

A path is accepted only when it is absolute, has no ``..`` part or NUL byte,
resolves (symlinks followed) to a regular, readable media file, and the
resolved file lies under one of the configured roots (also resolved), so a
symlink inside a root cannot lead out of it.
"""

from __future__ import annotations

import os
import pathlib
from collections.abc import Sequence

from .errors import InvalidRequestError, NotFoundError, PermissionDeniedError

__all__ = ["MEDIA_EXTENSIONS", "resolve_media_roots", "resolve_media_path", "shown"]

# Containers the decoder reads; anything else (a .txt, a key file) is refused
# before it is opened.
MEDIA_EXTENSIONS = frozenset(
    {
        ".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".mxf", ".mts", ".m2ts",
        ".ts", ".mpg", ".mpeg", ".wmv", ".flv", ".dv", ".y4m", ".gif",
    }
)
_MAX_PATH_CHARS = 4096


def shown(value: str, limit: int = 120) -> str:
    """A user-supplied string as it may appear in a one-line message."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 4] + "...'"


def resolve_media_roots(roots: Sequence[str | os.PathLike]) -> tuple[pathlib.Path, ...]:
    resolved = []
    for root in roots:
        path = pathlib.Path(root).expanduser()
        if not path.is_dir():
            raise ValueError(f"media root {str(root)!r} is not a folder")
        resolved.append(path.resolve(strict=True))
    return tuple(resolved)


def resolve_media_path(raw: str, roots: Sequence[pathlib.Path]) -> pathlib.Path:
    """The resolved media file ``raw`` names, or an error saying why not."""
    if not raw:
        raise InvalidRequestError("source.path is empty")
    if "\x00" in raw:
        raise InvalidRequestError("source.path contains a NUL byte")
    if len(raw) > _MAX_PATH_CHARS:
        raise InvalidRequestError(f"source.path is longer than {_MAX_PATH_CHARS} characters")
    given = pathlib.Path(raw)
    if not given.is_absolute():
        raise InvalidRequestError(f"source.path must be absolute: {shown(raw)}")
    if ".." in given.parts:
        raise InvalidRequestError(f"source.path must not contain '..': {shown(raw)}")
    if not roots:
        raise PermissionDeniedError(
            "this server reads no local media (start it with --media-root FOLDER) or upload the file"
        )
    try:
        resolved = given.resolve(strict=False)
    except (OSError, RuntimeError) as exc:  # symlink loops, names too long
        raise InvalidRequestError(f"source.path cannot be resolved: {shown(raw)} ({exc.__class__.__name__})") from None
    # Checked before existence so nothing is revealed about files outside the roots.
    if not any(resolved.is_relative_to(root) for root in roots):
        raise PermissionDeniedError(f"source.path is outside the server's media roots: {shown(raw)}")
    try:
        is_file = resolved.is_file()
        exists = is_file or resolved.exists()
    except OSError as exc:
        raise InvalidRequestError(f"source.path cannot be read: {shown(raw)} ({exc.__class__.__name__})") from None
    if not exists:
        raise NotFoundError(f"no such media file: {shown(raw)}")
    if not is_file:
        raise InvalidRequestError(f"source.path is not a regular file: {shown(raw)}")
    if resolved.suffix.lower() not in MEDIA_EXTENSIONS:
        raise InvalidRequestError(f"source.path is not a video file (extension {resolved.suffix or 'none'!r}): {shown(raw)}")
    if not os.access(resolved, os.R_OK):
        raise PermissionDeniedError(f"the server cannot read {shown(raw)}")
    return resolved
