"""Every error the server raises on purpose: one base, a flat list of subclasses.

Each carries the gRPC status code it maps to (by name, so this module needs no
grpc import) and a one-line message the plugin shows the user as is.
"""

from __future__ import annotations

__all__ = [
    "ServerError",
    "InvalidRequestError",
    "NotFoundError",
    "AlreadyExistsError",
    "PermissionDeniedError",
    "ResourceExhaustedError",
    "FailedPreconditionError",
    "UnavailableError",
    "InternalError",
]


class ServerError(Exception):
    """Base class; ``code`` is a ``grpc.StatusCode`` member name."""

    code = "INTERNAL"


class InvalidRequestError(ServerError):
    """The request is malformed or asks for something this server never does."""

    code = "INVALID_ARGUMENT"


class NotFoundError(ServerError):
    """No such job, upload or media file."""

    code = "NOT_FOUND"


class AlreadyExistsError(ServerError):
    """A job id reused with a different request."""

    code = "ALREADY_EXISTS"


class PermissionDeniedError(ServerError):
    """A media path outside the configured media roots."""

    code = "PERMISSION_DENIED"


class ResourceExhaustedError(ServerError):
    """Over a configured limit, or out of (GPU) memory even at the smallest batch."""

    code = "RESOURCE_EXHAUSTED"


class FailedPreconditionError(ServerError):
    """The job is not in a state that allows the call (e.g. download before DONE)."""

    code = "FAILED_PRECONDITION"


class UnavailableError(ServerError):
    """No worker can take jobs right now."""

    code = "UNAVAILABLE"
    # Sent when the last worker is gone and the server is about to stop (the plugin shows it as is).
    NO_WORKER = "no worker can take jobs on this server ({reason}); it is stopping, submit again once it is restarted"


class InternalError(ServerError):
    """A bug or an unexpected failure; the message says what failed."""

    code = "INTERNAL"
