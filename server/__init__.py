"""The Fairy editing server (``fairy-server``): a gRPC front end over a durable job queue."""

from importlib import metadata as _metadata

try:
    __version__ = _metadata.version("fairy-editor")
except _metadata.PackageNotFoundError:  # running from a source tree
    __version__ = "0.0.0+unknown"
