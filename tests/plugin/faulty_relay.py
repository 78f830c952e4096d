"""A stand-in in front of the real server, for the faults a real ``fairy-server`` never makes.

It relays SubmitEdit and DownloadResult to a real server (the session's ``fairy_server`` fixture) and
hands back what that server answered, changed only as a test asks:

* ``refuse_submits``: SubmitEdit ends with this ``fairy_server.errors.ServerError`` instead, through
  the server's own translation (``fairy_server.service``: status code, message, trailers), for the
  answers the real server has no way to give on demand (UNAVAILABLE: no worker can take jobs);
* ``corrupt_downloads`` / ``skip_downloads`` / ``truncate_downloads``: the next N downloads arrive with
  one byte flipped, with a piece missing (a later chunk's offset jumps), or without their last chunk:
  what a broken network path or a buggy proxy does, never the server.

The bytes, file names and checksums of a download are the real server's; the relay re-chunks them
into ``_PIECE``-byte pieces so that a small result still has chunks to lose. Every other method
answers UNIMPLEMENTED: a test talks to the real server for everything else.
"""

from __future__ import annotations

import concurrent.futures

import grpc
from fairy_proto.v1 import fairy_pb2, fairy_pb2_grpc
from fairy_server.errors import ServerError
from fairy_server.service import _abort

__all__ = ["FaultyRelay"]

_PIECE = 1024


class _Relay(fairy_pb2_grpc.FairyEditorServicer):
    def __init__(self, upstream: fairy_pb2_grpc.FairyEditorStub):
        self._upstream = upstream
        self.refuse_submits: ServerError | None = None
        self.corrupt_downloads = 0
        self.skip_downloads = 0
        self.truncate_downloads = 0

    def SubmitEdit(self, request, context):
        if self.refuse_submits is not None:
            _abort(context, self.refuse_submits)
        return self._upstream.SubmitEdit(request, timeout=30)

    def DownloadResult(self, request, context):
        chunks = list(self._upstream.DownloadResult(request, timeout=60))
        data = b"".join(c.data for c in chunks)
        first, last = chunks[0], chunks[-1]
        pieces = [fairy_pb2.DataChunk(data=data[o:o + _PIECE], offset=o, total_size=first.total_size)
                  for o in range(0, len(data), _PIECE)]
        pieces[0].filename = first.filename
        pieces[-1].sha256 = last.sha256
        assert len(pieces) >= 3, "the result is too small to lose a piece of"
        if self.corrupt_downloads > 0:
            self.corrupt_downloads -= 1
            flipped = bytearray(pieces[1].data)
            flipped[0] ^= 0xFF
            pieces[1].data = bytes(flipped)
        elif self.skip_downloads > 0:
            self.skip_downloads -= 1
            del pieces[1]
        elif self.truncate_downloads > 0:
            self.truncate_downloads -= 1
            del pieces[-1]
        yield from pieces


class FaultyRelay:
    """The relay on a loopback port the server binding picked (port 0)."""

    def __init__(self, upstream_address: str):
        self._channel = grpc.insecure_channel(upstream_address)
        self.servicer = _Relay(fairy_pb2_grpc.FairyEditorStub(self._channel))
        self._server = grpc.server(concurrent.futures.ThreadPoolExecutor(max_workers=4))
        fairy_pb2_grpc.add_FairyEditorServicer_to_server(self.servicer, self._server)
        self.port = self._server.add_insecure_port("127.0.0.1:0")
        self.address = f"127.0.0.1:{self.port}"
        self._server.start()

    def close(self) -> None:
        self._server.stop(grace=None).wait(5)
        self._channel.close()

    def __enter__(self) -> "FaultyRelay":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()
