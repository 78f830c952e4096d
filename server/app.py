"""Assembling the server: store, uploads, workers, manager, gRPC services, security.

``FairyServer(config).start()`` binds the port and returns at once; the
health service says NOT_SERVING until a worker has loaded the model.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import pathlib
from concurrent import futures

import grpc
from fairy_proto.v1 import fairy_pb2, fairy_pb2_grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from .auth import BearerTokenInterceptor
from .backend import LocalProcessBackend, WorkerBackend
from .config import ServerConfig
from .manager import JobManager
from .service import FairyEditorServicer
from .store import JobStore
from .uploads import UploadStore

__all__ = ["FairyServer", "is_loopback", "check_security", "SecurityError"]

_log = logging.getLogger("fairy_server")
_SERVICE_NAME = fairy_pb2.DESCRIPTOR.services_by_name["FairyEditor"].full_name


def _lock_exclusive(handle) -> bool:
    """Take a non-blocking exclusive lock on an open file; False if another process holds it."""
    try:
        if os.name == "nt":
            import msvcrt

            msvcrt.locking(handle.fileno(), msvcrt.LK_NBLCK, 1)
        else:
            import fcntl

            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return False
    return True


class SecurityError(ValueError):
    """The configuration would expose the server without protection."""


def _host_of(address: str) -> str:
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"address must be HOST:PORT, got {address!r}")
    return host.strip("[]")


def is_loopback(address: str) -> bool:
    host = _host_of(address)
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name other than localhost may resolve anywhere


def check_security(config: ServerConfig) -> None:
    """Refuse to expose the server beyond this machine without a token and TLS."""
    if (config.tls_cert is None) != (config.tls_key is None):
        raise SecurityError("TLS needs both --tls-cert and --tls-key")
    if is_loopback(config.address) or config.insecure:
        return
    missing = [what for what, ok in (("a token (--token-file)", config.token), ("TLS (--tls-cert/--tls-key)", config.tls_cert)) if not ok]
    if missing:
        raise SecurityError(
            f"refusing to listen on {config.address} (not loopback) without {' and '.join(missing)}; "
            "pass --insecure to do it anyway"
        )


def _make_backend(config: ServerConfig) -> WorkerBackend:
    log_level = logging.getLogger().getEffectiveLevel() or logging.INFO
    if config.backend == "ray":
        from .ray_backend import RayBackend  # Ray is optional: imported only when asked for

        return RayBackend(config.model, config.ray_address, config.devices,
                          pipelines_per_worker=config.pipelines_per_worker, log_level=log_level,
                          worker_cpus=config.ray_worker_cpus, network_bytes_per_second=config.ray_network_gbps * 1.25e8)
    if config.backend != "local":
        raise ValueError(f"unknown backend {config.backend!r}: use local or ray")
    return LocalProcessBackend(config.model, config.devices, pipelines_per_worker=config.pipelines_per_worker,
                               log_level=log_level)


class FairyServer:
    def __init__(self, config: ServerConfig, backend: WorkerBackend | None = None):
        check_security(config)
        self.config = config
        # Private by default: the folder holds the users' media and results.
        config.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        config.results_path.mkdir(parents=True, exist_ok=True)
        self._lock_file = open(config.data_dir / "server.lock", "a+")
        # The kernel drops the lock when this process dies, even by SIGKILL.
        if not _lock_exclusive(self._lock_file):
            self._lock_file.close()
            raise RuntimeError(f"another fairy-server is using {config.data_dir}")
        try:  # before the job store: a backend that cannot start (no Ray, no cluster) leaves no database
            self.backend = backend or _make_backend(config)
        except BaseException:
            self._lock_file.close()
            raise
        self.store = JobStore(config.database_path)
        self.uploads = UploadStore(config.uploads_path, config.limits.max_upload_bytes)
        self.manager = JobManager(config, self.store, self.backend, self.uploads)
        self.health = health.HealthServicer(experimental_non_blocking=True)
        self.port: int | None = None
        self._grpc = self._build_grpc()

    def _build_grpc(self) -> grpc.Server:
        config = self.config
        size = config.limits.max_message_bytes
        interceptors = [BearerTokenInterceptor(config.token)] if config.token else []
        server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=config.rpc_threads, thread_name_prefix="fairy-rpc"),
            interceptors=interceptors,
            options=[("grpc.max_receive_message_length", size), ("grpc.max_send_message_length", size)],
            # Beyond this, calls fail at once with RESOURCE_EXHAUSTED instead of waiting for a thread.
            maximum_concurrent_rpcs=config.rpc_threads,
        )
        fairy_pb2_grpc.add_FairyEditorServicer_to_server(FairyEditorServicer(config, self.manager, self.uploads), server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        reflection.enable_server_reflection(
            (_SERVICE_NAME, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME), server
        )
        try:
            if config.tls_cert is not None:
                credentials = grpc.ssl_server_credentials(
                    [(pathlib.Path(config.tls_key).read_bytes(), pathlib.Path(config.tls_cert).read_bytes())]
                )
                self.port = server.add_secure_port(config.address, credentials)
            else:
                self.port = server.add_insecure_port(config.address)
        except RuntimeError:
            self.port = 0
        if not self.port:
            raise RuntimeError(f"cannot listen on {config.address} (is another program using that port?)")
        return server

    def _set_health(self, serving: bool) -> None:
        status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        self.health.set("", status)
        self.health.set(_SERVICE_NAME, status)

    def start(self) -> "FairyServer":
        self.manager.on_serving_change(self._set_health)
        self._grpc.start()
        self.manager.start()
        host = self.config.address.rpartition(":")[0]
        self.manager.address = f"{host}:{self.port}"
        _log.info(
            "listening on %s:%d (%s, %s), data in %s",
            host, self.port, "TLS" if self.config.tls_cert else "no TLS",
            "token required" if self.config.token else "no token", self.config.data_dir,
        )
        return self

    def stop(self, grace: float = 2.0) -> None:
        self._set_health(False)
        self._grpc.stop(grace).wait(grace + 1)
        self.manager.stop()
        self.store.close()
        self._lock_file.close()  # releases the lock

    def wait(self, timeout: float | None = None) -> bool:
        return self._grpc.wait_for_termination(timeout)


