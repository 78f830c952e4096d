"""Run ``fairy-server`` as a child process on a free loopback port.

For whoever needs a private server for a while: ``fairy demo``, the tests, an
editor's own launcher. The server picks the port (``--address 127.0.0.1:0``)
and writes it to a port file once it listens, so there is no race for a port.
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence

__all__ = ["LocalServerError", "local_server"]

_POLL_SECONDS = 0.1


class LocalServerError(RuntimeError):
    """The child server exited or did not listen in time; the message ends with its last log line."""


@contextlib.contextmanager
def local_server(
    data_dir: str | pathlib.Path,
    *,
    model: str,
    media_roots: Sequence[str | pathlib.Path] = (),
    devices: str | None = None,
    log_path: str | pathlib.Path | None = None,
    extra_args: Sequence[str] = (),
    start_timeout: float = 180.0,
) -> Iterator[str]:
    """Start a server on ``data_dir``; yields its address (``127.0.0.1:PORT``) and stops it on exit."""
    data_dir = pathlib.Path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    port_file = data_dir / "local-server.port"
    port_file.unlink(missing_ok=True)
    log_path = pathlib.Path(log_path) if log_path else data_dir / "local-server.log"
    command = [
        sys.executable, "-m", "fairy_server", "--address", "127.0.0.1:0", "--port-file", str(port_file),
        "--data-dir", str(data_dir), "--model", model, *extra_args,
    ]  # fmt: skip
    for root in media_roots:
        command += ["--media-root", str(root)]
    if devices:
        command += ["--devices", devices]
    with open(log_path, "a") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=os.environ.copy())
    try:
        deadline = time.monotonic() + start_timeout
        while not (port_file.exists() and port_file.read_text().strip()):
            if process.poll() is not None or time.monotonic() > deadline:
                lines = log_path.read_text(errors="replace").strip().splitlines() or ["(no output)"]
                raise LocalServerError(f"fairy-server did not start: {lines[-1]}")
            time.sleep(_POLL_SECONDS)
        yield f"127.0.0.1:{port_file.read_text().strip()}"
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
