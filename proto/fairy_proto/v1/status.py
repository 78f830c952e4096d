"""How a fairy.v1 server marks the error statuses it sends on purpose (hand-written, not generated).

gRPC answers UNAVAILABLE by itself when no server is reached (nothing listening, a TLS handshake that fails,
a connection dropped mid-call); a Fairy server also answers UNAVAILABLE on purpose (no worker can take
jobs). A client tells them apart by this mark, never by the wording of the message: every error status the
server sends carries, in its trailing metadata,

- ``fairy-error: <reason>`` (the server's error class, e.g. ``UnavailableError``): the server itself decided
  this answer, and its message is meant for the user as is;
- ``grpc-retry-pushback-ms: -1``: gRPC's retry policy must not repeat the call (gRFC A6), the answer stands.

Plain Python with no imports of protobuf or gRPC: the server and every front end (the Blender extension
bundles this package) read it.
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["ERROR_KEY", "RETRY_PUSHBACK_KEY", "error_trailers", "error_reason"]

ERROR_KEY = "fairy-error"
RETRY_PUSHBACK_KEY = "grpc-retry-pushback-ms"


def error_trailers(reason: str) -> tuple[tuple[str, str], ...]:
    """The trailing metadata a server sets (``context.set_trailing_metadata``) before it aborts a call on purpose."""
    if not reason or not reason.isascii() or not reason.isprintable():
        raise ValueError(f"an error reason must be printable ASCII, got {reason!r}")
    return ((ERROR_KEY, reason), (RETRY_PUSHBACK_KEY, "-1"))


def error_reason(trailing_metadata: Iterable[tuple[str, str | bytes]] | None) -> str | None:
    """The server's reason when ``trailing_metadata`` (``RpcError.trailing_metadata()``) carries the mark,
    else None: the status came from gRPC, or from something between the client and a Fairy server."""
    for key, value in trailing_metadata or ():
        if key == ERROR_KEY:
            return value.decode("ascii", "replace") if isinstance(value, bytes) else value
    return None
