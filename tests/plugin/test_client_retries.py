"""FairyClient's waiting and retrying, done by gRPC: the channel's retry policy, wait_for_ready with a deadline,
and the mark a Fairy server puts on the errors it sends on purpose (fairy_proto.v1.status).

Real gRPC servers throughout: the session's ``fairy-server``, or a small servicer in this process whose
refusals go through the server's own translation (``fairy_server.service._translating_errors`` and
``_abort``), on a port the OS picked. real_server.Proxy (a TCP forwarder that starts refusing) stands for a
server that is not up yet or went away; real_server.closed_port for no server at all.
"""

from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import hashlib
import threading
import time

import grpc
import pytest
from fairy_proto.v1 import fairy_pb2, fairy_pb2_grpc
from fairy_proto.v1.status import ERROR_KEY, RETRY_PUSHBACK_KEY
from fairy_server import __version__ as SERVER_VERSION
from fairy_server.errors import UnavailableError
from fairy_server.service import _translating_errors

from fairy_plugin.client import FairyClient
from fairy_plugin.errors import RequestRejectedError, ServerUnavailableError
from real_server import Proxy, closed_port

NO_WORKER = UnavailableError.NO_WORKER.format(reason="no worker process is left (exit code 1)")  # the server's words
# How much later than connect_timeout "not running" may come: the probe after a deadline, and a slow CI.
SLACK_SECONDS = 2.0


class Servicer(fairy_pb2_grpc.FairyEditorServicer):
    """A small fairy.v1 server with knobs; what it refuses on purpose goes through the real server's
    translation, so it carries the real server's mark."""

    def __init__(self):
        self.calls = collections.Counter()
        self.submitted_ids: list[str] = []
        self.refusal: Exception | None = None  # every method raises this (a fairy_server ServerError)
        self.plain_unavailable = 0  # this many calls answer UNAVAILABLE without the mark (like a lost link)
        self.answer_after = 0.0  # GetJob answers only after this many seconds
        self.job = fairy_pb2.Job(job_id="j", state=fairy_pb2.JOB_STATE_FRAMES)
        self.changed = threading.Condition()
        self.result = bytes(range(256)) * 40  # 10 KiB in 10 chunks
        self.cut_downloads = 0  # this many downloads stop after two chunks until `resume` is set
        self.cut = threading.Event()
        self.resume = threading.Event()

    def _enter(self, name: str, context) -> None:
        self.calls[name] += 1
        if self.refusal is not None:
            raise self.refusal
        if self.plain_unavailable > 0:
            self.plain_unavailable -= 1
            context.abort(grpc.StatusCode.UNAVAILABLE, "connection reset by peer")

    @_translating_errors
    def GetServerInfo(self, request, context):
        self._enter("GetServerInfo", context)
        return fairy_pb2.ServerInfo(version="in-process", api_version="fairy.v1")

    @_translating_errors
    def SubmitEdit(self, request, context):
        self.submitted_ids.append(request.job_id)
        self._enter("SubmitEdit", context)
        return fairy_pb2.Job(job_id=request.job_id, state=fairy_pb2.JOB_STATE_QUEUED)

    @_translating_errors
    def GetJob(self, request, context):
        self._enter("GetJob", context)
        time.sleep(self.answer_after)
        return self.job

    @_translating_errors
    def WatchJob(self, request, context):
        self._enter("WatchJob", context)
        last = None
        while context.is_active():
            with self.changed:
                if self.job == last:
                    self.changed.wait(0.1)
                job = self.job
            if job != last:
                yield fairy_pb2.JobEvent(job=job)
                last = job
                if job.state == fairy_pb2.JOB_STATE_DONE:
                    return

    def finish(self) -> None:
        with self.changed:
            self.job = fairy_pb2.Job(job_id="j", state=fairy_pb2.JOB_STATE_DONE)
            self.changed.notify_all()

    @_translating_errors
    def DownloadResult(self, request, context):
        self._enter("DownloadResult", context)
        data, size = self.result, 1024
        cut = self.cut_downloads > 0
        self.cut_downloads -= cut
        for offset in range(0, len(data), size):
            if cut and offset == 2 * size:
                self.cut.set()
                self.resume.wait(10)
            last = offset + size >= len(data)
            yield fairy_pb2.DataChunk(data=data[offset:offset + size], offset=offset, total_size=len(data),
                                      filename="result.mp4" if offset == 0 else "",
                                      sha256=hashlib.sha256(data).hexdigest() if last else "")


@contextlib.contextmanager
def serving(servicer: Servicer):
    """``servicer`` on 127.0.0.1, on a port the OS picked; yields that port."""
    server = grpc.server(concurrent.futures.ThreadPoolExecutor(max_workers=8))
    fairy_pb2_grpc.add_FairyEditorServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield port
    finally:
        servicer.resume.set()
        server.stop(grace=None)


def _not_running(address: str) -> str:
    return f"Fairy server is not running at {address} (start it with `fairy-server`)"


# -- a server that is not up yet ---------------------------------------------------------------


def test_a_call_made_before_the_real_server_is_up_succeeds_once_it_is(live):
    with Proxy() as proxy, FairyClient(proxy.address, connect_timeout=30) as client, \
            concurrent.futures.ThreadPoolExecutor(2) as pool:
        info = pool.submit(client.server_info)
        jobs = pool.submit(client.list_jobs, limit=1)
        proxy.wait_refused(2)  # both calls found nothing there, and gRPC keeps them waiting
        time.sleep(0.3)
        assert not info.done() and not jobs.done()
        proxy.up(live.port)
        assert info.result(timeout=30).version == SERVER_VERSION
        assert isinstance(jobs.result(timeout=30), list)


def test_streams_wait_for_a_server_that_is_starting(tmp_path):
    servicer = Servicer()
    servicer.job = fairy_pb2.Job(job_id="j", state=fairy_pb2.JOB_STATE_DONE)
    with serving(servicer) as port, Proxy() as proxy, FairyClient(proxy.address, connect_timeout=30) as client, \
            concurrent.futures.ThreadPoolExecutor(2) as pool:
        watched = pool.submit(client.watch, "j")
        downloaded = pool.submit(client.download, "j", tmp_path)
        proxy.wait_refused(2)
        proxy.up(port)
        assert watched.result(timeout=30).state == fairy_pb2.JOB_STATE_DONE
        assert downloaded.result(timeout=30).read_bytes() == servicer.result
    assert servicer.calls["WatchJob"] == 1 and servicer.calls["DownloadResult"] == 1


def test_a_resent_submit_carries_the_job_id_minted_before_the_first_try():
    servicer = Servicer()
    servicer.plain_unavailable = 1  # the first try "loses its answer"; gRPC's retry policy sends it again
    with serving(servicer) as port, FairyClient(f"127.0.0.1:{port}", connect_timeout=5) as client:
        job = client.submit(fairy_pb2.SubmitEditRequest(instruction="make it snowy"))
    assert len(servicer.submitted_ids) == 2
    assert servicer.submitted_ids[0] == servicer.submitted_ids[1] == job.job_id and len(job.job_id) == 32


# -- no server at all --------------------------------------------------------------------------


@pytest.mark.parametrize("call", ["server_info", "get", "cancel", "list_jobs", "submit", "watch", "download",
                                  "upload"])
def test_no_server_is_not_running_soon_after_connect_timeout(call, tmp_path):
    media = tmp_path / "clip.mov"
    media.write_bytes(b"\0" * 100)
    calls = {
        "server_info": lambda c: c.server_info(),
        "get": lambda c: c.get("j"),
        "cancel": lambda c: c.cancel("j"),
        "list_jobs": lambda c: c.list_jobs(),
        "submit": lambda c: c.submit(fairy_pb2.SubmitEditRequest(instruction="x")),
        "watch": lambda c: c.watch("j"),
        "download": lambda c: c.download("j", tmp_path),
        "upload": lambda c: c.upload(media),
    }
    with closed_port() as address, FairyClient(address, connect_timeout=0.5) as client:
        started = time.monotonic()
        with pytest.raises(ServerUnavailableError) as info:
            calls[call](client)
        elapsed = time.monotonic() - started
    assert str(info.value) == _not_running(address)
    assert 0.5 <= elapsed < 0.5 + SLACK_SECONDS
    assert {p.name for p in tmp_path.iterdir()} == {"clip.mov"}  # a download left nothing behind


def test_should_stop_ends_a_watch_that_is_waiting_for_a_server():
    with closed_port() as address, FairyClient(address, connect_timeout=30) as client:
        stop_at = time.monotonic() + 0.3
        started = time.monotonic()
        job = client.watch("j", should_stop=lambda: time.monotonic() > stop_at)
        assert time.monotonic() - started < 0.3 + SLACK_SECONDS
    assert job.job_id == "j" and job.state == fairy_pb2.JOB_STATE_UNSPECIFIED


# -- the server's own UNAVAILABLE, and gRPC's -------------------------------------------------


@pytest.mark.parametrize("call", ["server_info", "submit", "watch", "download"])
def test_an_unavailable_the_server_sent_is_its_message_at_once(call, tmp_path):
    servicer = Servicer()
    servicer.refusal = UnavailableError(NO_WORKER)
    calls = {
        "server_info": (lambda c: c.server_info(), "GetServerInfo"),
        "submit": (lambda c: c.submit(fairy_pb2.SubmitEditRequest(instruction="x")), "SubmitEdit"),
        "watch": (lambda c: c.watch("j"), "WatchJob"),
        "download": (lambda c: c.download("j", tmp_path), "DownloadResult"),
    }
    run, method = calls[call]
    with serving(servicer) as port, FairyClient(f"127.0.0.1:{port}", connect_timeout=5) as client:
        started = time.monotonic()
        with pytest.raises(ServerUnavailableError) as info:
            run(client)
        elapsed = time.monotonic() - started
    assert str(info.value) == f"Fairy server at 127.0.0.1:{port}: {NO_WORKER}"
    assert servicer.calls[method] == 1  # the server's pushback: gRPC did not repeat it, nor did the client
    assert elapsed < 2.0  # not waited out to connect_timeout


def test_an_unmarked_unavailable_is_retried_by_grpc_and_else_taken_for_no_server():
    servicer = Servicer()
    with serving(servicer) as port, FairyClient(f"127.0.0.1:{port}", connect_timeout=10) as client:
        servicer.plain_unavailable = 2
        assert client.get("j").job_id == "j"
        assert servicer.calls["GetJob"] == 3  # two retries, with backoff, by gRPC's retry policy
        servicer.plain_unavailable = 100
        with pytest.raises(ServerUnavailableError) as info:
            client.get("j")
        assert servicer.calls["GetJob"] == 3 + 5  # the policy's maxAttempts
    assert str(info.value) == _not_running(f"127.0.0.1:{port}")


def test_a_server_that_does_not_answer_in_time_is_not_called_not_running():
    servicer = Servicer()
    servicer.answer_after = 2.0
    with serving(servicer) as port, FairyClient(f"127.0.0.1:{port}", connect_timeout=0.5) as client:
        with pytest.raises(ServerUnavailableError) as info:
            client.get("j")
    assert str(info.value) == f"Fairy server at 127.0.0.1:{port} did not answer in time"


def test_the_real_server_marks_its_refusals(live):
    with grpc.insecure_channel(live.address) as channel:
        with pytest.raises(grpc.RpcError) as info:
            fairy_pb2_grpc.FairyEditorStub(channel).GetJob(fairy_pb2.GetJobRequest(job_id="no-such-job"), timeout=30)
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    trailers = dict(info.value.trailing_metadata())
    assert trailers[ERROR_KEY] == "NotFoundError" and trailers[RETRY_PUSHBACK_KEY] == "-1"
    with FairyClient(live.address, connect_timeout=5) as client:
        with pytest.raises(RequestRejectedError, match="no-such-job"):
            client.get("no-such-job")


# -- long streams across a lost connection -----------------------------------------------------


def test_watch_reattaches_after_the_server_was_gone_longer_than_connect_timeout():
    servicer = Servicer()
    with serving(servicer) as port, Proxy(port) as proxy, \
            FairyClient(proxy.address, connect_timeout=0.5, reattach_timeout=20) as client, \
            concurrent.futures.ThreadPoolExecutor(1) as pool:
        seen = []
        watched = pool.submit(client.watch, "j", on_update=seen.append)
        deadline = time.monotonic() + 10
        while not seen:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        proxy.down()  # the connection is cut, and new ones are refused...
        proxy.wait_refused(1)
        time.sleep(1.5)  # ...for longer than connect_timeout: only the re-attach window keeps it going
        servicer.finish()
        proxy.up()
        assert watched.result(timeout=20).state == fairy_pb2.JOB_STATE_DONE
    assert servicer.calls["WatchJob"] >= 2


def test_a_download_cut_midway_is_started_over_from_scratch(tmp_path):
    servicer = Servicer()
    servicer.cut_downloads = 1
    with serving(servicer) as port, Proxy(port) as proxy, \
            FairyClient(proxy.address, connect_timeout=5) as client, \
            concurrent.futures.ThreadPoolExecutor(1) as pool:
        downloading = pool.submit(client.download, "j", tmp_path / "edit.mp4")
        assert servicer.cut.wait(10)
        time.sleep(0.2)  # the first chunks reached the client
        proxy.drop()  # the network goes away mid-file; the server stays
        servicer.resume.set()
        path = downloading.result(timeout=30)
    assert path == tmp_path / "edit.mp4" and path.read_bytes() == servicer.result
    assert servicer.calls["DownloadResult"] == 2
    assert {p.name for p in tmp_path.iterdir()} == {"edit.mp4"}  # no temporary of the cut attempt
