"""``fairy-server``: run the editing server.

    fairy-server                                   # 127.0.0.1:50151, the library's default model
    fairy-server --model builtin:tiny --media-root ~/Videos
    fairy-server --steps 20 --anchors 5          # defaults for requests that leave them unset
    fairy-server --address 0.0.0.0:50151 --token-file token.txt --tls-cert cert.pem --tls-key key.pem
    fairy-server --backend ray --ray-address auto  # one worker per GPU of a Ray cluster
"""

from __future__ import annotations

import argparse
import logging
import os
import pathlib
import signal
import sys
import threading

from fairy_proto.files import atomic_write
from fairy_proto.v1.settings import SERVER_DEFAULT_SETTINGS, add_arguments

from . import __version__
from .config import DEFAULT_ADDRESS, DEFAULT_MODEL, Defaults, Limits, ServerConfig
from .paths import resolve_media_roots

__all__ = ["main", "build_parser", "config_from_args"]

_TOKEN_ENV = "FAIRY_SERVER_TOKEN"
_DEFAULT_NAMES = tuple(s.name for s in SERVER_DEFAULT_SETTINGS)


def _default_data_dir() -> pathlib.Path:
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return pathlib.Path(base) / "fairy-server"


def build_parser() -> argparse.ArgumentParser:
    limits, defaults = Limits(), Defaults()
    p = argparse.ArgumentParser(prog="fairy-server", description="Run the Fairy editing server (gRPC, fairy.v1).")
    p.add_argument("--version", action="version", version=f"fairy-server {__version__}")
    p.add_argument("--address", default=DEFAULT_ADDRESS, help=f"HOST:PORT to listen on (default {DEFAULT_ADDRESS}; port 0 picks a free one)")
    p.add_argument("--data-dir", type=pathlib.Path, default=_default_data_dir(), help="job database, uploads and results (default %(default)s)")
    p.add_argument("--results-dir", type=pathlib.Path, default=None, help="where results go (default DATA_DIR/results)")
    p.add_argument("--model", default=DEFAULT_MODEL, help="the model loaded at start and used when a request names none (default %(default)s)")
    p.add_argument("--allow-model", action="append", default=[], metavar="MODEL", help="another model requests may name (repeatable)")
    p.add_argument("--devices", default="auto",
                   help='"auto" (one worker per CUDA device, else the CPU), "cpu", "cuda:0,cuda:1", or "cpu,cpu" '
                        '(two CPU workers); with --backend ray, "auto" is one worker per GPU of the cluster')
    p.add_argument("--backend", choices=["local", "ray"], default="local",
                   help="workers as processes on this machine (default) or as actors of a Ray cluster")
    p.add_argument("--ray-address", default="auto", metavar="ADDRESS",
                   help='the Ray cluster (HOST:PORT of its head; "auto": the one on this machine; '
                        '"local": start a private one); default %(default)s')
    p.add_argument("--ray-worker-cpus", type=int, default=1, metavar="N",
                   help="cores each CPU worker asks Ray for (default %(default)s)")
    p.add_argument("--ray-network-gbps", type=float, default=10.0, metavar="GBPS",
                   help="bandwidth between nodes, for choosing to ship an anchor cache or recompute it "
                        "(default %(default)s)")
    p.add_argument("--media-root", action="append", default=[], type=pathlib.Path, metavar="FOLDER",
                   help="a folder whose media requests may name by path (repeatable; none: uploads only)")
    p.add_argument("--token-file", type=pathlib.Path, help=f"file holding the bearer token clients must send (or set {_TOKEN_ENV})")
    p.add_argument("--tls-cert", type=pathlib.Path, help="PEM certificate chain for TLS")
    p.add_argument("--tls-key", type=pathlib.Path, help="PEM private key for TLS")
    p.add_argument("--insecure", action="store_true", help="allow a non-loopback address without token and TLS")
    edits = p.add_argument_group("defaults for the settings a request leaves unset")
    add_arguments(edits, [s.name for s in SERVER_DEFAULT_SETTINGS],
                  defaults={name: getattr(defaults, name) for name in _DEFAULT_NAMES})
    p.add_argument("--max-frames", type=int, default=limits.max_frames,
                   help="most frames one job may render, handles included (default %(default)s)")
    p.add_argument("--max-pixels", type=int, default=limits.max_pixels,
                   help="largest source frame, width x height in pixels (default %(default)s: 3840x2160)")
    p.add_argument("--max-instruction-length", type=int, default=limits.max_instruction_length,
                   help="longest instruction, in characters (default %(default)s)")
    p.add_argument("--max-upload-bytes", type=int, default=limits.max_upload_bytes,
                   help="largest media file a client may upload, in bytes (default %(default)s: 8 GiB)")
    p.add_argument("--max-message-bytes", type=int, default=limits.max_message_bytes,
                   help="largest gRPC message either way, in bytes (default %(default)s: 4 MiB; uploads and downloads are chunked below it)")
    p.add_argument("--max-queued-jobs", type=int, default=limits.max_queued_jobs,
                   help="jobs waiting at once; more are refused with RESOURCE_EXHAUSTED (default %(default)s)")
    p.add_argument("--rpc-threads", type=int, default=128, help="concurrent calls served (each open WatchJob holds one)")
    p.add_argument("--port-file", type=pathlib.Path, help="write the bound port here once listening (for scripts using port 0)")
    p.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"],
                   help="how much the server logs to stderr (default %(default)s)")
    return p


def config_from_args(args: argparse.Namespace) -> ServerConfig:
    token = None
    if args.token_file is not None:
        token = args.token_file.read_text().strip()
        if not token:
            raise ValueError(f"{args.token_file} is empty")
        if os.name == "posix" and args.token_file.stat().st_mode & 0o077:
            logging.getLogger("fairy_server").warning(
                "%s is readable by other users; chmod 600 it", args.token_file
            )
    elif os.environ.get(_TOKEN_ENV):
        token = os.environ[_TOKEN_ENV].strip()
    for flag in ("max_frames", "max_pixels", "max_instruction_length", "max_upload_bytes", "max_message_bytes", "max_queued_jobs", "rpc_threads",
                 "ray_worker_cpus"):
        if getattr(args, flag) < 1:
            raise ValueError(f"--{flag.replace('_', '-')} must be at least 1")
    if args.ray_network_gbps <= 0:
        raise ValueError("--ray-network-gbps must be more than 0")
    limits = Limits(
        max_frames=args.max_frames,
        max_pixels=args.max_pixels,
        max_instruction_length=args.max_instruction_length,
        max_upload_bytes=args.max_upload_bytes,
        max_message_bytes=args.max_message_bytes,
        max_queued_jobs=args.max_queued_jobs,
    )
    return ServerConfig(
        data_dir=args.data_dir.expanduser().resolve(),
        address=args.address,
        model=args.model,
        allowed_models=tuple(args.allow_model),
        devices=args.devices,
        backend=args.backend,
        ray_address=args.ray_address,
        ray_worker_cpus=args.ray_worker_cpus,
        ray_network_gbps=args.ray_network_gbps,
        media_roots=resolve_media_roots(args.media_root),
        results_dir=args.results_dir.expanduser().resolve() if args.results_dir else None,
        token=token,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
        insecure=args.insecure,
        limits=limits,
        defaults=Defaults(**{name: getattr(args, name) for name in _DEFAULT_NAMES}),
        rpc_threads=args.rpc_threads,
    )


def _write_port(path: pathlib.Path, port: int) -> None:
    with atomic_write(path, "w", overwrite=True) as f:  # a reader never sees an empty or half-written port
        f.write(f"{port}\n")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    from .app import FairyServer, SecurityError

    try:
        config = config_from_args(args)
        server = FairyServer(config)
    except (ValueError, OSError, RuntimeError, SecurityError) as exc:
        print(f"fairy-server: {exc}", file=sys.stderr)
        return 2
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    server.start()
    if args.port_file:
        _write_port(args.port_file, server.port)
    code = 0
    while not stop.wait(0.5):
        if server.manager.fatal_error:
            print(f"fairy-server: {server.manager.fatal_error}", file=sys.stderr)
            code = 1
            break
    server.stop()
    return code
