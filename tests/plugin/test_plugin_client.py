"""FairyClient against a real gRPC server on a loopback port (scripted servicer)."""

from __future__ import annotations

import hashlib
import os
import pathlib
import stat
import threading
import time

import pytest
from fairy_proto.v1 import fairy_pb2

from fairy_plugin.client import FairyClient, format_server_info
from fairy_plugin.errors import (AuthenticationError, DownloadError, RequestRejectedError,
                                 ServerUnavailableError)
from scripted_server import RunningServer, ScriptedFairy, free_port


def _request(job_id="", instruction="make it snowy", start=0, count=12):
    return fairy_pb2.SubmitEditRequest(
        job_id=job_id, instruction=instruction, source=fairy_pb2.MediaSource(path="/media/a.mp4"),
        range=fairy_pb2.FrameRange(start_frame=start, frame_count=count, rate=fairy_pb2.Rational(num=24, den=1)))


def test_not_running_gives_one_clear_line():
    address = f"127.0.0.1:{free_port()}"
    with FairyClient(address, connect_timeout=0.3) as c:
        with pytest.raises(ServerUnavailableError) as info:
            c.server_info()
    message = str(info.value)
    assert message == f"Fairy server is not running at {address} (start it with `fairy-server`)"
    assert "\n" not in message


def test_submit_waits_for_a_server_that_is_starting(tmp_path):
    server = RunningServer(ScriptedFairy(tmp_path))
    timer = threading.Timer(0.6, server.start)
    timer.start()
    try:
        with FairyClient(server.address, connect_timeout=10) as c:
            job = c.submit(_request(job_id="late"))
            assert job.job_id == "late"
            assert c.watch("late").state == fairy_pb2.JOB_STATE_DONE
    finally:
        timer.join()
        server.stop()


def test_submit_fills_a_job_id_and_is_idempotent(client, scripted):
    job = client.submit(_request())
    assert len(job.job_id) == 32
    again = client.submit(_request(job_id=job.job_id))
    assert again.job_id == job.job_id
    assert len(scripted.servicer.jobs) == 1
    with pytest.raises(RequestRejectedError, match="exists with another request"):
        client.submit(_request(job_id=job.job_id, instruction="other"))


def test_watch_reports_every_state_and_previews(client):
    job = client.submit(_request(job_id="w1"))
    seen = []
    final = client.watch(job.job_id, on_update=seen.append)
    assert final.state == fairy_pb2.JOB_STATE_DONE
    states = [j.state for j in seen]
    assert states[-1] == fairy_pb2.JOB_STATE_DONE
    assert fairy_pb2.JOB_STATE_FRAMES in states
    assert any(j.anchor_previews for j in seen)
    assert all(a <= b for a, b in zip([j.progress.fraction for j in seen], [j.progress.fraction for j in seen][1:]))


def test_watch_reattaches_after_a_dropped_stream(client, scripted):
    servicer = scripted.servicer
    servicer.drop_watch_after_first_event = 2
    servicer.hold.set()  # the job stays running until both streams were dropped
    client.submit(_request(job_id="drop"))
    seen = []
    watcher = threading.Thread(target=lambda: seen.append(client.watch("drop")))
    watcher.start()
    deadline = time.monotonic() + 10
    while servicer.drop_watch_after_first_event and time.monotonic() < deadline:
        time.sleep(0.01)
    servicer.release.set()
    watcher.join(10)
    assert servicer.drop_watch_after_first_event == 0
    assert [j.state for j in seen] == [fairy_pb2.JOB_STATE_DONE]


def test_watch_survives_a_server_restart(tmp_path):
    servicer = ScriptedFairy(tmp_path)
    servicer.hold.set()
    server = RunningServer(servicer).start()
    try:
        with FairyClient(server.address, connect_timeout=0.5, reattach_timeout=20) as c:
            c.submit(_request(job_id="r"))
            seen = []
            watcher = threading.Thread(target=lambda: seen.append(c.watch("r")))
            watcher.start()
            deadline = time.monotonic() + 10
            while servicer.jobs["r"].state != fairy_pb2.JOB_STATE_FRAMES:
                assert time.monotonic() < deadline
                time.sleep(0.01)
            server.stop()
            time.sleep(1.5)  # longer than connect_timeout: only the re-attach window keeps it going
            server = RunningServer(servicer, port=server.port).start()
            servicer.release.set()
            watcher.join(20)
        assert [j.state for j in seen] == [fairy_pb2.JOB_STATE_DONE]
    finally:
        server.stop()


def test_watch_should_stop_returns_without_cancelling(client, scripted):
    scripted.servicer.hold.set()
    client.submit(_request(job_id="held"))
    stop_at = time.monotonic() + 0.4
    job = client.watch("held", should_stop=lambda: time.monotonic() > stop_at)
    assert job.state not in (fairy_pb2.JOB_STATE_DONE, fairy_pb2.JOB_STATE_CANCELLED)
    assert scripted.servicer.cancels == []
    assert client.cancel("held").state == fairy_pb2.JOB_STATE_CANCELLED
    assert client.watch("held").state == fairy_pb2.JOB_STATE_CANCELLED


def test_a_server_without_workers_says_so_rather_than_not_running(scripted):
    scripted.servicer.unavailable_message = "no worker can take jobs right now"
    with FairyClient(scripted.address, connect_timeout=0.3) as c:
        with pytest.raises(ServerUnavailableError) as info:
            c.submit(_request())
    assert str(info.value) == f"Fairy server at {scripted.address}: no worker can take jobs right now"


def test_media_outside_the_roots_is_a_rejection_not_an_auth_error(client):
    request = _request()
    request.source.path = "/outside/a.mp4"
    with pytest.raises(RequestRejectedError, match="outside the server's media roots"):
        client.submit(request)


def test_unknown_job_is_a_clear_rejection(client):
    with pytest.raises(RequestRejectedError, match="no job nope"):
        client.get("nope")


def test_token_is_sent_as_bearer_metadata(tmp_path):
    server = RunningServer(ScriptedFairy(tmp_path, token="s3cret")).start()
    try:
        with FairyClient(server.address, token="s3cret") as good:
            info = good.server_info()
            assert info.auth_required
            assert "Fairy server 0.0-scripted" in format_server_info(info)
        with FairyClient(server.address, token="wrong") as bad:
            with pytest.raises(AuthenticationError, match="refused the token"):
                bad.submit(_request())
        with FairyClient(server.address) as none:
            with pytest.raises(AuthenticationError):
                none.server_info()
        assert server.servicer.submits == []
    finally:
        server.stop()


def test_tls_with_root_certificates(tmp_path):
    tls = pathlib.Path(__file__).with_name("tls")
    key, cert = (tls / "server.key").read_bytes(), (tls / "server.crt").read_bytes()
    server = RunningServer(ScriptedFairy(tmp_path, token="t"), tls=(key, cert)).start()
    try:
        with FairyClient(server.address, token="t", root_certificates=cert) as secure:
            assert secure.server_info().version == "0.0-scripted"
            assert secure.submit(_request(job_id="tls")).job_id == "tls"
        # Plain text to a TLS server never gets an answer.
        with FairyClient(server.address, token="t", connect_timeout=0.3) as plain:
            with pytest.raises(ServerUnavailableError):
                plain.server_info()
    finally:
        server.stop()


def test_download_is_checked_and_atomic(client, scripted, tmp_path):
    client.submit(_request(job_id="dl"))
    job = client.watch("dl")
    dest = tmp_path / "out"
    dest.mkdir()
    path = client.download("dl", dest / "result.mp4")
    assert path.read_bytes() == open(job.result_path, "rb").read()
    # A folder as destination takes the server's file name.
    named = client.download("dl", dest)
    assert named.name == "dl.mp4"
    # Results get the mode a new file of the user gets (editors share media folders), not mkstemp's 0600.
    previous = os.umask(0o027)
    try:
        shared = client.download("dl", dest / "shared.mp4")
    finally:
        os.umask(previous)
    assert stat.S_IMODE(shared.stat().st_mode) == 0o640
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~previous
    shared.unlink()
    # A corrupt transfer leaves nothing behind, not even a temp file.
    scripted.servicer.corrupt_downloads = 1
    with pytest.raises(DownloadError, match="SHA-256 mismatch"):
        client.download("dl", dest / "bad.mp4")
    assert sorted(p.name for p in dest.iterdir()) == ["dl.mp4", "result.mp4"]


def test_download_of_unfinished_job_is_rejected(client, scripted, tmp_path):
    scripted.servicer.hold.set()
    client.submit(_request(job_id="busy"))
    with pytest.raises(RequestRejectedError, match="has no result"):
        client.download("busy", tmp_path / "x.mp4")
    assert list(tmp_path.iterdir()) == [tmp_path / "server-results"]


def test_upload_sends_size_and_checksum(client, scripted, tmp_path):
    media = tmp_path / "clip.mp4"
    media.write_bytes(bytes(range(256)) * 9000)  # > 1 MiB: several chunks
    upload_id = client.upload(media)
    assert scripted.servicer.uploads[upload_id] == media.read_bytes()
    assert upload_id == "up-" + hashlib.sha256(media.read_bytes()).hexdigest()[:12]
