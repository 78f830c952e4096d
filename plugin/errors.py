"""Every error the plugin core raises on purpose: one base, a flat list of subclasses.

Each message is one line fit to show the user as is (an editor's status bar,
a dialog, the terminal); callers never need to add context.
"""

from __future__ import annotations

__all__ = [
    "PluginError",
    "ServerUnavailableError",
    "AuthenticationError",
    "RequestRejectedError",
    "JobFailedError",
    "DownloadError",
    "ClipError",
    "SelectionError",
    "OutputExistsError",
]


class PluginError(Exception):
    """Base class of the plugin's errors."""


class ServerUnavailableError(PluginError):
    """The Fairy server is not running (or not reachable) at the configured address."""


class AuthenticationError(PluginError):
    """The server refused the token (missing, wrong, or not allowed)."""


class RequestRejectedError(PluginError):
    """The server refused a request (bad range, unknown job, media outside its roots, ...)."""


class JobFailedError(PluginError):
    """A job ended FAILED; the message is the server's, fit to show as is."""


class DownloadError(PluginError):
    """A result could not be fetched whole (interrupted, wrong size or checksum)."""


class ClipError(PluginError):
    """A clip that cannot be edited: no media reference, unknown rate, time effect, ..."""


class SelectionError(PluginError):
    """A choice of clips that cannot be honoured: bad --range, unknown track or clip name."""


class OutputExistsError(PluginError, FileExistsError):
    """The output exists and overwriting was not asked for, or it is the input itself."""
