"""FairyClient against the real ``fairy-server`` (the session's: tiny model, CPU).

What a real server does is tested on the real one: submit, idempotent job ids, watch with every state
and the previews, cancel, download with its SHA-256, upload, refusals, the token and TLS, and a real
restart. A TCP proxy in front of it (real_server.Proxy) makes the network faults: a server that is not
up yet, a dropped connection. Only the faults no server makes on demand go through the stand-in
faulty_relay.py (real answers, altered in transit).
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import os
import pathlib
import stat
import time
import uuid

import pytest
from fairy_proto.v1 import fairy_pb2
from fairy_server import __version__ as SERVER_VERSION
from fairy_server.config import ServerConfig
from fairy_server.errors import UnavailableError

from fairy_plugin.client import FairyClient, format_server_info
from fairy_plugin.errors import (AuthenticationError, DownloadError, RequestRejectedError,
                                 ServerUnavailableError)
from faulty_relay import FaultyRelay
from real_server import Proxy, ServerProcess, SessionServer, closed_port, unique_seed

TLS = pathlib.Path(__file__).with_name("tls")
TOKEN = "s3cret"
# The order a job goes through its states on the real server (some may be skipped between two events).
ORDER = [fairy_pb2.JOB_STATE_QUEUED, fairy_pb2.JOB_STATE_LOADING_MODEL, fairy_pb2.JOB_STATE_ANCHORS,
         fairy_pb2.JOB_STATE_FRAMES, fairy_pb2.JOB_STATE_ENCODING, fairy_pb2.JOB_STATE_DONE]


def _id(name: str) -> str:
    """A job id no other test of this session's server uses."""
    return f"{name}-{uuid.uuid4().hex[:8]}"


def _request(live, job_id="", instruction="make it snowy", start=0, count=12, labels=None):
    return fairy_pb2.SubmitEditRequest(
        job_id=job_id, instruction=instruction, source=fairy_pb2.MediaSource(path=str(live.clip)),
        range=fairy_pb2.FrameRange(start_frame=start, frame_count=count, rate=fairy_pb2.Rational(num=24, den=1)),
        parameters=fairy_pb2.EditParameters(seed=unique_seed()), labels=labels or {})


def _held(live, job_id=""):
    """A request the server keeps in FRAMES until it is cancelled or released."""
    return _request(live, job_id=job_id, instruction=f"make it snowy {live.HOLD}")


def _until(predicate, timeout=30.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_not_running_gives_one_clear_line():
    with closed_port() as address, FairyClient(address, connect_timeout=0.3) as c:
        with pytest.raises(ServerUnavailableError) as info:
            c.server_info()
    message = str(info.value)
    assert message == f"Fairy server is not running at {address} (start it with `fairy-server`)"
    assert "\n" not in message


def test_submit_waits_for_a_server_that_is_starting(live):
    job_id = _id("late")
    with Proxy() as proxy, FairyClient(proxy.address, connect_timeout=30) as c, \
            concurrent.futures.ThreadPoolExecutor(1) as pool:
        submitting = pool.submit(c.submit, _request(live, job_id=job_id))
        proxy.wait_refused(1)  # the client tried while nothing answered...
        assert not submitting.done()  # ...and is still trying
        proxy.up(live.port)
        assert submitting.result(timeout=30).job_id == job_id
        assert c.watch(job_id).state == fairy_pb2.JOB_STATE_DONE


def test_submit_fills_a_job_id_and_is_idempotent(client, live):
    label = uuid.uuid4().hex
    job = client.submit(_request(live, labels={"test": label}))
    assert len(job.job_id) == 32
    again = client.submit(job.request)  # the request as the server stored it, job id included
    assert again.job_id == job.job_id and again.created_unix == job.created_unix
    assert [j.job_id for j in client.list_jobs(limit=1000) if j.request.labels.get("test") == label] == [job.job_id]
    other = fairy_pb2.SubmitEditRequest()
    other.CopyFrom(job.request)
    other.instruction = "other"
    with pytest.raises(RequestRejectedError, match=f"{job.job_id} already exists"):
        client.submit(other)


def test_watch_reports_every_state_and_previews(client, live):
    job = client.submit(_request(live, job_id=_id("w")))
    seen = []
    final = client.watch(job.job_id, on_update=seen.append)
    assert final.state == fairy_pb2.JOB_STATE_DONE and not final.cache_hit
    states = [j.state for j in seen]
    assert states[-1] == fairy_pb2.JOB_STATE_DONE
    assert fairy_pb2.JOB_STATE_FRAMES in states
    assert [ORDER.index(s) for s in states] == sorted(ORDER.index(s) for s in states)
    assert any(j.anchor_previews for j in seen if j.state != fairy_pb2.JOB_STATE_DONE)
    fractions = [j.progress.fraction for j in seen]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0


def test_watch_reattaches_after_a_dropped_stream(live):
    with Proxy(live.port) as proxy, FairyClient(proxy.address, connect_timeout=5) as c:
        job_id = c.submit(_held(live)).job_id
        live.wait_for(job_id, {fairy_pb2.JOB_STATE_FRAMES})
        dropped = []

        def on_update(job):
            # Each attach replays the job's state first: cut the connection under the open watch
            # twice, then let the job finish.
            if len(dropped) < 2:
                dropped.append(job.state)
                proxy.drop()
            else:
                live.release(job_id)

        final = c.watch(job_id, on_update=on_update)
    assert dropped == [fairy_pb2.JOB_STATE_FRAMES] * 2
    assert proxy.accepted >= 3  # the first connection and one after each drop
    assert final.state == fairy_pb2.JOB_STATE_DONE and final.attempts == 1


def _private_server(data: pathlib.Path, live) -> ServerProcess:
    """A server of its own (listening; its worker may still be loading the model) that holds jobs as the
    session's does."""
    return ServerProcess(data, "--media-root", str(live.media_root), *SessionServer.defaults(), faults=live.faults())


def test_watch_survives_a_server_restart(tmp_path, live):
    first = _private_server(tmp_path / "data", live)
    second = None
    try:
        with Proxy(first.port) as proxy, FairyClient(proxy.address, connect_timeout=0.5, reattach_timeout=120) as c, \
                concurrent.futures.ThreadPoolExecutor(1) as pool:
            job_id = c.submit(_held(live)).job_id
            seen = []
            watching = pool.submit(c.watch, job_id, on_update=seen.append)
            _until(lambda: any(j.state == fairy_pb2.JOB_STATE_FRAMES for j in seen), timeout=120)
            proxy.down()
            down_at = time.monotonic()
            first.stop()  # the job goes back to the queue; its next attempt is not held
            live.release(job_id)
            second = _private_server(tmp_path / "data", live)
            # Away for longer than connect_timeout: only the re-attach window keeps the watch going.
            _until(lambda: time.monotonic() - down_at > 2 * c.connect_timeout and proxy.refused >= 1)
            assert not watching.done()
            proxy.up(second.port)
            final = watching.result(timeout=120)
        assert final.state == fairy_pb2.JOB_STATE_DONE and final.attempts == 2
    finally:
        first.stop()
        if second is not None:
            second.stop()


def test_watch_should_stop_returns_without_cancelling(client, live):
    job_id = client.submit(_held(live)).job_id
    live.wait_for(job_id, {fairy_pb2.JOB_STATE_FRAMES})
    seen = []
    job = client.watch(job_id, on_update=seen.append, should_stop=lambda: bool(seen))
    assert job.state == fairy_pb2.JOB_STATE_FRAMES
    on_server = client.get(job_id)
    assert on_server.state == fairy_pb2.JOB_STATE_FRAMES and not on_server.cancel_requested
    assert client.cancel(job_id).cancel_requested
    assert client.watch(job_id).state == fairy_pb2.JOB_STATE_CANCELLED


def test_a_server_without_workers_says_so_rather_than_not_running(live):
    # The real server says this only in the moment between losing its last worker and stopping: the
    # stand-in answers with the server's own error and message, through the server's own translation.
    refusal = UnavailableError(UnavailableError.NO_WORKER.format(reason="no worker process is left (exit code 1)"))
    with FaultyRelay(live.address) as relay, FairyClient(relay.address, connect_timeout=0.3) as c:
        relay.servicer.refuse_submits = refusal
        with pytest.raises(ServerUnavailableError) as info:
            c.submit(_request(live))
    assert str(info.value) == f"Fairy server at {relay.address}: {refusal}"


def test_media_outside_the_roots_is_a_rejection_not_an_auth_error(client, live, tmp_path):
    request = _request(live)
    request.source.path = str(tmp_path / "a.mp4")
    with pytest.raises(RequestRejectedError, match="outside the server's media roots"):
        client.submit(request)


def test_unknown_job_is_a_clear_rejection(client):
    with pytest.raises(RequestRejectedError, match="no job 'nope'"):
        client.get("nope")


@pytest.fixture(scope="module")
def secure_server(tmp_path_factory, fairy_server):
    """A real server with a bearer token and TLS (the certificate in tls/ is for 127.0.0.1)."""
    tmp = tmp_path_factory.mktemp("secure")
    token = tmp / "token"
    token.write_text(TOKEN + "\n")
    token.chmod(0o600)
    server = ServerProcess(tmp / "data", "--token-file", str(token), "--tls-cert", str(TLS / "server.crt"),
                           "--tls-key", str(TLS / "server.key"), "--media-root", str(fairy_server.media_root),
                           *SessionServer.defaults())
    yield server
    server.kill()  # its worker may still be loading the model: a clean stop would wait for it


def test_token_is_sent_as_bearer_metadata(secure_server, fairy_server):
    cert = (TLS / "server.crt").read_bytes()
    with FairyClient(secure_server.address, token=TOKEN, root_certificates=cert) as good:
        info = good.server_info()
        assert info.auth_required
        assert f"Fairy server {SERVER_VERSION}" in format_server_info(info)
        before = [j.job_id for j in good.list_jobs()]
        with FairyClient(secure_server.address, token="wrong", root_certificates=cert) as bad:
            with pytest.raises(AuthenticationError, match="refused the token"):
                bad.submit(_request(fairy_server))
        with FairyClient(secure_server.address, root_certificates=cert) as none:
            with pytest.raises(AuthenticationError):
                none.server_info()
            with pytest.raises(AuthenticationError):
                none.submit(_request(fairy_server))
        assert [j.job_id for j in good.list_jobs()] == before  # nothing got in


def test_tls_with_root_certificates(secure_server, fairy_server):
    cert = (TLS / "server.crt").read_bytes()
    with FairyClient(secure_server.address, token=TOKEN, root_certificates=cert) as secure:
        assert secure.server_info().version == SERVER_VERSION
        job_id = _id("tls")
        assert secure.submit(_request(fairy_server, job_id=job_id)).job_id == job_id
        assert secure.cancel(job_id).cancel_requested
    # Plain text to a TLS server never gets an answer.
    with FairyClient(secure_server.address, token=TOKEN, connect_timeout=0.3) as plain:
        with pytest.raises(ServerUnavailableError):
            plain.server_info()


def test_download_is_checked_and_atomic(client, live, tmp_path):
    job_id = client.submit(_request(live, job_id=_id("dl"))).job_id
    job = client.watch(job_id)
    assert job.state == fairy_pb2.JOB_STATE_DONE
    rendered = pathlib.Path(job.result_path).read_bytes()
    dest = tmp_path / "out"
    dest.mkdir()
    path = client.download(job_id, dest / "result.mp4")
    assert path.read_bytes() == rendered
    # A folder as destination takes the server's file name.
    named = client.download(job_id, dest)
    assert named.name == pathlib.Path(job.result_path).name and named.read_bytes() == rendered
    # Results get the mode a new file of the user gets (editors share media folders), not mkstemp's 0600.
    previous = os.umask(0o027)
    try:
        shared = client.download(job_id, dest / "shared.mp4")
    finally:
        os.umask(previous)
    assert stat.S_IMODE(shared.stat().st_mode) == 0o640
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~previous
    shared.unlink()
    # A broken transfer leaves nothing behind, not even a temp file. No server sends one: the stand-in
    # alters the real server's stream in transit.
    with FaultyRelay(live.address) as relay, FairyClient(relay.address) as through:
        assert through.download(job_id, dest / "relayed.mp4").read_bytes() == rendered
        (dest / "relayed.mp4").unlink()
        relay.servicer.corrupt_downloads = 1
        with pytest.raises(DownloadError, match="SHA-256 mismatch"):
            through.download(job_id, dest / "bad.mp4")
        relay.servicer.skip_downloads = 1
        with pytest.raises(DownloadError, match="skipped from byte 1024 to 2048"):
            through.download(job_id, dest / "bad.mp4")
        relay.servicer.truncate_downloads = 1
        with pytest.raises(DownloadError, match="ended before the last chunk"):
            through.download(job_id, dest / "bad.mp4")
    assert sorted(p.name for p in dest.iterdir()) == sorted([named.name, "result.mp4"])


def test_download_of_unfinished_job_is_rejected(client, live, tmp_path):
    job_id = client.submit(_held(live)).job_id
    live.wait_for(job_id, {fairy_pb2.JOB_STATE_FRAMES})
    with pytest.raises(RequestRejectedError, match="only a DONE job has a result"):
        client.download(job_id, tmp_path / "x.mp4")
    assert list(tmp_path.iterdir()) == []


def test_upload_sends_size_and_checksum(client, live, tmp_path):
    media = tmp_path / "clip.mp4"
    media.write_bytes(bytes(range(256)) * 9000)  # > 1 MiB: several chunks
    upload_id = client.upload(media)
    assert upload_id == hashlib.sha256(media.read_bytes()).hexdigest()
    stored = ServerConfig(data_dir=live.data_dir).uploads_path / upload_id / media.name
    assert stored.read_bytes() == media.read_bytes()
    # And the server renders what was uploaded.
    uploaded = client.upload(live.clip)
    request = _request(live)
    request.source.Clear()
    request.source.upload_id = uploaded
    job = client.submit(request)
    assert client.watch(job.job_id).state == fairy_pb2.JOB_STATE_DONE
