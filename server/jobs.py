"""The job's domain types: states, the validated request and the job record.

Plain dataclasses with no gRPC in them, so the store, the scheduler and the
worker can be tested without a server.
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import json
from fractions import Fraction

from fairy_proto.v1.jobs import TERMINAL_STATE_NAMES
from fairy_proto.v1.settings import REQUEST_SETTINGS, setting

__all__ = ["JobState", "RUNNING_STATES", "FINAL_STATES", "EditRequest", "EditPlan", "JobRecord", "Preview", "LiveProgress"]


class JobState(str, enum.Enum):
    QUEUED = "QUEUED"
    LOADING_MODEL = "LOADING_MODEL"
    ANCHORS = "ANCHORS"
    FRAMES = "FRAMES"
    ENCODING = "ENCODING"
    DONE = "DONE"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"

    @property
    def is_final(self) -> bool:
        return self in FINAL_STATES

    @property
    def is_running(self) -> bool:
        return self in RUNNING_STATES


RUNNING_STATES = frozenset({JobState.LOADING_MODEL, JobState.ANCHORS, JobState.FRAMES, JobState.ENCODING})
FINAL_STATES = frozenset(JobState(name) for name in TERMINAL_STATE_NAMES)  # the contract's
# The request's settings that a plan holds beside its model and seed.
PLAN_SETTING_NAMES = tuple(s.name for s in REQUEST_SETTINGS if s.name not in ("model", "seed"))


@dataclasses.dataclass(frozen=True)
class EditRequest:
    """A SubmitEditRequest as the client sent it; None means "server default"."""

    job_id: str
    source_path: str | None
    upload_id: str | None
    start_frame: int
    frame_count: int
    rate_num: int
    rate_den: int
    handles_before: int
    handles_after: int
    instruction: str
    model: str
    seed: int
    steps: int | None = None
    anchors: int | None = None
    guidance_scale: float | None = None
    image_guidance_scale: float | None = None
    long_side: int | None = None
    codec: str | None = None  # "h264" | "prores" | None: the server's default
    noise: str | None = None  # "per_frame" | "shared" | None: the server's default
    labels: dict[str, str] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class EditPlan:
    """What a worker renders: a request checked against the media and the limits."""

    source: str  # resolved path of the media
    source_sha256: str
    start_frame: int  # the requested range, in the media's frames
    frame_count: int
    rate_num: int
    rate_den: int
    render_start: int  # the range plus the handles the media has
    render_count: int
    width: int
    height: int
    instruction: str
    model: str
    seed: int
    steps: int
    anchors: int
    guidance_scale: float
    image_guidance_scale: float
    long_side: int
    codec: str
    noise: str

    @property
    def rate(self) -> Fraction:
        return Fraction(self.rate_num, self.rate_den)

    @property
    def handles_before(self) -> int:
        return self.start_frame - self.render_start

    @property
    def handles_after(self) -> int:
        return self.render_start + self.render_count - self.start_frame - self.frame_count

    def parameters(self) -> dict:
        """The settings that change the pixels (``fairy_proto.v1.settings`` names; model and seed aside)."""
        return {name: getattr(self, name) for name in PLAN_SETTING_NAMES}

    def cache_key(self) -> str:
        """Same media content, range, instruction, parameters and model: same result."""
        key = {
            "media": self.source_sha256,
            "range": [self.render_start, self.render_count, self.start_frame, self.frame_count, self.rate_num, self.rate_den],
            "instruction": self.instruction,
            "seed": self.seed,
            "parameters": self.parameters(),
            "model": self.model,
        }
        return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "EditPlan":
        fields = json.loads(text)
        if fields.get("noise") is None:  # stored before the server filled in its noise default
            fields["noise"] = setting("noise").default
        return cls(**fields)


@dataclasses.dataclass(frozen=True)
class Preview:
    frame_index: int
    jpeg: bytes
    width: int
    height: int


@dataclasses.dataclass(frozen=True)
class LiveProgress:
    """Progress as the worker last reported it (kept in memory, not in the store)."""

    step: int = 0
    total_steps: int = 0
    frames_done: int = 0
    total_frames: int = 0
    fraction: float = 0.0
    eta_seconds: float = -1.0


@dataclasses.dataclass(frozen=True)
class JobRecord:
    """One row of the jobs table."""

    seq: int
    job_id: str
    state: JobState
    request: bytes  # the SubmitEditRequest as received (job id filled in)
    fingerprint: str
    plan: EditPlan
    cache_key: str
    model: str
    created: float
    started: float | None = None
    finished: float | None = None
    error_message: str = ""
    error_code: str = ""  # grpc.StatusCode name
    result_path: str = ""
    sidecar_path: str = ""
    result_size: int = 0
    cache_hit: bool = False
    cancel_requested: bool = False
    attempts: int = 0
    batch_size: int = 0
    render_seconds: float = 0.0
