"""A server with a token, TLS and a model load held back: health, auth and TLS for real.

Health is open to everyone and says NOT_SERVING until the worker has loaded the
model; every other method needs the bearer token.
"""

from __future__ import annotations

import datetime
import ipaddress
import subprocess
import sys

import grpc
import pytest
from fairy_proto.v1 import fairy_pb2 as pb
from fairy_proto.v1 import fairy_pb2_grpc as pbg
from grpc_health.v1 import health_pb2, health_pb2_grpc

from server_testing import SERVING, ServerProcess, wait_serving

pytestmark = pytest.mark.timeout(300)
TOKEN = "s3cret-token-for-tests"


def _self_signed(tmp_path):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name).issuer_name(name).public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    (tmp_path / "cert.pem").write_bytes(cert_pem)
    (tmp_path / "key.pem").write_bytes(key_pem)
    return tmp_path / "cert.pem", tmp_path / "key.pem", cert_pem


@pytest.fixture(scope="module")
def secure_server(tmp_path_factory, media_root):
    tmp = tmp_path_factory.mktemp("secure")
    cert, key, cert_pem = _self_signed(tmp)
    (tmp / "token").write_text(TOKEN + "\n")
    hold = tmp / "release-model-load"
    server = ServerProcess(
        tmp / "data", "--token-file", str(tmp / "token"), "--tls-cert", str(cert), "--tls-key", str(key),
        "--media-root", str(media_root), faults=("--hold-load", str(hold)),
    )
    channel = grpc.secure_channel(server.address, grpc.ssl_channel_credentials(root_certificates=cert_pem))
    server.channel, server.hold = channel, hold
    yield server
    channel.close()
    server.stop()


AUTH = (("authorization", f"Bearer {TOKEN}"),)


def test_health_serving_only_once_the_model_is_loaded(secure_server):
    health = health_pb2_grpc.HealthStub(secure_server.channel)
    stub = pbg.FairyEditorStub(secure_server.channel)
    # No token needed for health.
    assert health.Check(health_pb2.HealthCheckRequest(), timeout=30).status == health_pb2.HealthCheckResponse.NOT_SERVING
    named = health_pb2.HealthCheckRequest(service="fairy.v1.FairyEditor")
    assert health.Check(named, timeout=30).status == health_pb2.HealthCheckResponse.NOT_SERVING
    assert list(stub.GetServerInfo(pb.GetServerInfoRequest(), metadata=AUTH, timeout=30).loaded_models) == []
    secure_server.hold.write_text("go")
    wait_serving(secure_server.channel)
    assert health.Check(named, timeout=30).status == SERVING
    info = stub.GetServerInfo(pb.GetServerInfoRequest(), metadata=AUTH, timeout=30)
    assert list(info.loaded_models) == ["builtin:tiny"] and info.auth_required


def test_every_method_but_health_needs_the_token(secure_server):
    stub = pbg.FairyEditorStub(secure_server.channel)
    calls = {
        "GetServerInfo": lambda md: stub.GetServerInfo(pb.GetServerInfoRequest(), metadata=md, timeout=30),
        "ListJobs": lambda md: stub.ListJobs(pb.ListJobsRequest(), metadata=md, timeout=30),
        "GetJob": lambda md: stub.GetJob(pb.GetJobRequest(job_id="x"), metadata=md, timeout=30),
        "CancelJob": lambda md: stub.CancelJob(pb.CancelJobRequest(job_id="x"), metadata=md, timeout=30),
        "SubmitEdit": lambda md: stub.SubmitEdit(pb.SubmitEditRequest(job_id="x"), metadata=md, timeout=30),
        "WatchJob": lambda md: list(stub.WatchJob(pb.WatchJobRequest(job_id="x"), metadata=md, timeout=30)),
        "DownloadResult": lambda md: list(stub.DownloadResult(pb.DownloadResultRequest(job_id="x"), metadata=md, timeout=30)),
        "UploadMedia": lambda md: stub.UploadMedia(iter([pb.UploadMediaRequest(data=b"x")]), metadata=md, timeout=30),
    }
    wrong = [None, (("authorization", "Bearer nope"),), (("authorization", TOKEN),), (("authorization", f"Bearer {TOKEN}x"),)]
    for name, call in calls.items():
        for metadata in wrong:
            with pytest.raises(grpc.RpcError) as err:
                call(metadata)
            assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED, (name, metadata, err.value.details())
    # With the token the calls go through to the service (which then judges the request itself).
    assert stub.ListJobs(pb.ListJobsRequest(), metadata=AUTH, timeout=30).jobs is not None
    with pytest.raises(grpc.RpcError) as err:
        stub.GetJob(pb.GetJobRequest(job_id="x"), metadata=AUTH, timeout=30)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


def test_reflection_needs_the_token_too(secure_server):
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    stub = reflection_pb2_grpc.ServerReflectionStub(secure_server.channel)
    request = reflection_pb2.ServerReflectionRequest(list_services="")
    with pytest.raises(grpc.RpcError) as err:
        list(stub.ServerReflectionInfo(iter([request]), timeout=30))
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    (reply,) = stub.ServerReflectionInfo(iter([request]), metadata=AUTH, timeout=30)
    assert "fairy.v1.FairyEditor" in {s.name for s in reply.list_services_response.service}


def test_plaintext_client_cannot_talk_to_a_tls_server(secure_server):
    with grpc.insecure_channel(secure_server.address) as channel:
        with pytest.raises(grpc.RpcError) as err:
            health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
    assert err.value.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)


def test_second_server_on_the_same_data_dir_is_refused(secure_server):
    result = subprocess.run(
        [sys.executable, "-m", "fairy_server", "--address", "127.0.0.1:0", "--data-dir", str(secure_server.data_dir)],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 2 and "another fairy-server is using" in result.stderr


@pytest.mark.parametrize(
    "extra, message",
    [([], "without a token"), (["--tls-cert", "c.pem"], "both"), (["--max-frames", "0"], "--max-frames")],
)
def test_cli_refuses_unsafe_or_bad_settings(tmp_path, extra, message):
    result = subprocess.run(
        [sys.executable, "-m", "fairy_server", "--address", "0.0.0.0:0", "--data-dir", str(tmp_path / "d"), *extra],
        capture_output=True, text=True, timeout=60, cwd=tmp_path,
    )
    assert result.returncode == 2, result.stderr
    assert message in result.stderr and result.stderr.count("\n") == 1
    assert not (tmp_path / "d").exists()  # nothing created
