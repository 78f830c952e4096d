"""The server's settings: one frozen dataclass built by the CLI (or a test)."""

from __future__ import annotations

import dataclasses
import pathlib

from fairy import DEFAULT_MODEL
from fairy_proto.v1.settings import setting

DEFAULT_ADDRESS = "127.0.0.1:50151"


@dataclasses.dataclass(frozen=True)
class Limits:
    """Checked before anything large is allocated or read."""

    max_frames: int = 2000  # rendered frames, handles included
    max_pixels: int = 3840 * 2160  # source width * height
    max_instruction_length: int = 1000  # characters
    max_upload_bytes: int = 8 * 1024**3
    max_message_bytes: int = 4 * 1024 * 1024  # gRPC receive/send limit per message
    max_steps: int = 200
    max_anchors: int = 16
    max_long_side: int = 2048
    max_queued_jobs: int = 1000
    max_labels: int = 32
    max_label_bytes: int = 1024  # each key or value


@dataclasses.dataclass(frozen=True)
class Defaults:
    """Values for the settings a request leaves unset: the settings table's, unless the server was started
    with others (``fairy-server --steps 20``). One field per ``SERVER_DEFAULT_SETTINGS`` entry."""

    steps: int = setting("steps").default
    anchors: int = setting("anchors").default
    # None: the model's own (fairy.model_info.model_defaults: its recommended guidance, its working size).
    guidance_scale: float | None = setting("guidance_scale").default
    image_guidance_scale: float | None = setting("image_guidance_scale").default
    long_side: int | None = setting("long_side").default
    codec: str = setting("codec").default
    noise: str = setting("noise").default
    batch_size: int = setting("batch_size").default


@dataclasses.dataclass(frozen=True)
class ServerConfig:
    data_dir: pathlib.Path
    address: str = DEFAULT_ADDRESS
    model: str = DEFAULT_MODEL
    # Other models a request may name; the default model is always allowed.
    allowed_models: tuple[str, ...] = ()
    # "auto" (every CUDA device, else the CPU), "cpu", or explicit "cuda:0,cuda:1" ("cpu,cpu": two CPU workers).
    devices: str = "auto"
    # Where the workers run: "local" (processes on this machine) or "ray" (actors of a Ray cluster at
    # ray_address: "auto" finds the one started on this machine, "local" starts a private one).
    backend: str = "local"
    ray_address: str = "auto"
    ray_worker_cpus: int = 1  # cores of each CPU actor
    ray_network_gbps: float = 10.0  # between nodes, for choosing to ship or recompute an anchor cache
    media_roots: tuple[pathlib.Path, ...] = ()
    # Results go to <data_dir>/results unless configured.
    results_dir: pathlib.Path | None = None
    token: str | None = None
    tls_cert: pathlib.Path | None = None
    tls_key: pathlib.Path | None = None
    insecure: bool = False
    limits: Limits = dataclasses.field(default_factory=Limits)
    defaults: Defaults = dataclasses.field(default_factory=Defaults)
    # Each open WatchJob holds one thread; calls beyond this fail at once with RESOURCE_EXHAUSTED.
    rpc_threads: int = 128
    # Loaded pipelines a worker keeps; the least recently used goes first.
    pipelines_per_worker: int = 2

    @property
    def results_path(self) -> pathlib.Path:
        return self.results_dir if self.results_dir is not None else self.data_dir / "results"

    @property
    def uploads_path(self) -> pathlib.Path:
        return self.data_dir / "uploads"

    @property
    def database_path(self) -> pathlib.Path:
        return self.data_dir / "jobs.sqlite3"

    @property
    def models(self) -> tuple[str, ...]:
        return (self.model, *(m for m in self.allowed_models if m != self.model))
