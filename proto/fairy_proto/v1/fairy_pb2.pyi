from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class OutputCodec(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    OUTPUT_CODEC_UNSPECIFIED: _ClassVar[OutputCodec]
    OUTPUT_CODEC_H264: _ClassVar[OutputCodec]
    OUTPUT_CODEC_PRORES_422: _ClassVar[OutputCodec]

class NoisePolicy(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    NOISE_POLICY_UNSPECIFIED: _ClassVar[NoisePolicy]
    NOISE_POLICY_PER_FRAME: _ClassVar[NoisePolicy]
    NOISE_POLICY_SHARED: _ClassVar[NoisePolicy]

class JobState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    JOB_STATE_UNSPECIFIED: _ClassVar[JobState]
    JOB_STATE_QUEUED: _ClassVar[JobState]
    JOB_STATE_LOADING_MODEL: _ClassVar[JobState]
    JOB_STATE_ANCHORS: _ClassVar[JobState]
    JOB_STATE_FRAMES: _ClassVar[JobState]
    JOB_STATE_ENCODING: _ClassVar[JobState]
    JOB_STATE_DONE: _ClassVar[JobState]
    JOB_STATE_FAILED: _ClassVar[JobState]
    JOB_STATE_CANCELLED: _ClassVar[JobState]

class ResultFile(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    RESULT_FILE_UNSPECIFIED: _ClassVar[ResultFile]
    RESULT_FILE_VIDEO: _ClassVar[ResultFile]
    RESULT_FILE_OTIO: _ClassVar[ResultFile]
OUTPUT_CODEC_UNSPECIFIED: OutputCodec
OUTPUT_CODEC_H264: OutputCodec
OUTPUT_CODEC_PRORES_422: OutputCodec
NOISE_POLICY_UNSPECIFIED: NoisePolicy
NOISE_POLICY_PER_FRAME: NoisePolicy
NOISE_POLICY_SHARED: NoisePolicy
JOB_STATE_UNSPECIFIED: JobState
JOB_STATE_QUEUED: JobState
JOB_STATE_LOADING_MODEL: JobState
JOB_STATE_ANCHORS: JobState
JOB_STATE_FRAMES: JobState
JOB_STATE_ENCODING: JobState
JOB_STATE_DONE: JobState
JOB_STATE_FAILED: JobState
JOB_STATE_CANCELLED: JobState
RESULT_FILE_UNSPECIFIED: ResultFile
RESULT_FILE_VIDEO: ResultFile
RESULT_FILE_OTIO: ResultFile

class Rational(_message.Message):
    __slots__ = ("num", "den")
    NUM_FIELD_NUMBER: _ClassVar[int]
    DEN_FIELD_NUMBER: _ClassVar[int]
    num: int
    den: int
    def __init__(self, num: _Optional[int] = ..., den: _Optional[int] = ...) -> None: ...

class MediaSource(_message.Message):
    __slots__ = ("path", "upload_id")
    PATH_FIELD_NUMBER: _ClassVar[int]
    UPLOAD_ID_FIELD_NUMBER: _ClassVar[int]
    path: str
    upload_id: str
    def __init__(self, path: _Optional[str] = ..., upload_id: _Optional[str] = ...) -> None: ...

class FrameRange(_message.Message):
    __slots__ = ("start_frame", "frame_count", "rate")
    START_FRAME_FIELD_NUMBER: _ClassVar[int]
    FRAME_COUNT_FIELD_NUMBER: _ClassVar[int]
    RATE_FIELD_NUMBER: _ClassVar[int]
    start_frame: int
    frame_count: int
    rate: Rational
    def __init__(self, start_frame: _Optional[int] = ..., frame_count: _Optional[int] = ..., rate: _Optional[_Union[Rational, _Mapping]] = ...) -> None: ...

class Handles(_message.Message):
    __slots__ = ("before", "after")
    BEFORE_FIELD_NUMBER: _ClassVar[int]
    AFTER_FIELD_NUMBER: _ClassVar[int]
    before: int
    after: int
    def __init__(self, before: _Optional[int] = ..., after: _Optional[int] = ...) -> None: ...

class EditParameters(_message.Message):
    __slots__ = ("model", "steps", "seed", "anchors", "guidance_scale", "image_guidance_scale", "long_side", "codec", "noise")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    ANCHORS_FIELD_NUMBER: _ClassVar[int]
    GUIDANCE_SCALE_FIELD_NUMBER: _ClassVar[int]
    IMAGE_GUIDANCE_SCALE_FIELD_NUMBER: _ClassVar[int]
    LONG_SIDE_FIELD_NUMBER: _ClassVar[int]
    CODEC_FIELD_NUMBER: _ClassVar[int]
    NOISE_FIELD_NUMBER: _ClassVar[int]
    model: str
    steps: int
    seed: int
    anchors: int
    guidance_scale: float
    image_guidance_scale: float
    long_side: int
    codec: OutputCodec
    noise: NoisePolicy
    def __init__(self, model: _Optional[str] = ..., steps: _Optional[int] = ..., seed: _Optional[int] = ..., anchors: _Optional[int] = ..., guidance_scale: _Optional[float] = ..., image_guidance_scale: _Optional[float] = ..., long_side: _Optional[int] = ..., codec: _Optional[_Union[OutputCodec, str]] = ..., noise: _Optional[_Union[NoisePolicy, str]] = ...) -> None: ...

class SubmitEditRequest(_message.Message):
    __slots__ = ("job_id", "source", "range", "handles", "instruction", "parameters", "labels")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    RANGE_FIELD_NUMBER: _ClassVar[int]
    HANDLES_FIELD_NUMBER: _ClassVar[int]
    INSTRUCTION_FIELD_NUMBER: _ClassVar[int]
    PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    source: MediaSource
    range: FrameRange
    handles: Handles
    instruction: str
    parameters: EditParameters
    labels: _containers.ScalarMap[str, str]
    def __init__(self, job_id: _Optional[str] = ..., source: _Optional[_Union[MediaSource, _Mapping]] = ..., range: _Optional[_Union[FrameRange, _Mapping]] = ..., handles: _Optional[_Union[Handles, _Mapping]] = ..., instruction: _Optional[str] = ..., parameters: _Optional[_Union[EditParameters, _Mapping]] = ..., labels: _Optional[_Mapping[str, str]] = ...) -> None: ...

class Progress(_message.Message):
    __slots__ = ("step", "total_steps", "frames_done", "total_frames", "eta_seconds", "fraction")
    STEP_FIELD_NUMBER: _ClassVar[int]
    TOTAL_STEPS_FIELD_NUMBER: _ClassVar[int]
    FRAMES_DONE_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FRAMES_FIELD_NUMBER: _ClassVar[int]
    ETA_SECONDS_FIELD_NUMBER: _ClassVar[int]
    FRACTION_FIELD_NUMBER: _ClassVar[int]
    step: int
    total_steps: int
    frames_done: int
    total_frames: int
    eta_seconds: float
    fraction: float
    def __init__(self, step: _Optional[int] = ..., total_steps: _Optional[int] = ..., frames_done: _Optional[int] = ..., total_frames: _Optional[int] = ..., eta_seconds: _Optional[float] = ..., fraction: _Optional[float] = ...) -> None: ...

class Preview(_message.Message):
    __slots__ = ("frame_index", "jpeg", "width", "height")
    FRAME_INDEX_FIELD_NUMBER: _ClassVar[int]
    JPEG_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    frame_index: int
    jpeg: bytes
    width: int
    height: int
    def __init__(self, frame_index: _Optional[int] = ..., jpeg: _Optional[bytes] = ..., width: _Optional[int] = ..., height: _Optional[int] = ...) -> None: ...

class Job(_message.Message):
    __slots__ = ("job_id", "state", "request", "progress", "error_message", "error_code", "result_path", "sidecar_path", "result_size_bytes", "cache_hit", "created_unix", "started_unix", "finished_unix", "anchor_previews", "queue_position", "model", "rendered_range", "attempts", "frame_batch_size", "cancel_requested", "render_seconds", "resolved_parameters")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    REQUEST_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    ERROR_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    ERROR_CODE_FIELD_NUMBER: _ClassVar[int]
    RESULT_PATH_FIELD_NUMBER: _ClassVar[int]
    SIDECAR_PATH_FIELD_NUMBER: _ClassVar[int]
    RESULT_SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    CACHE_HIT_FIELD_NUMBER: _ClassVar[int]
    CREATED_UNIX_FIELD_NUMBER: _ClassVar[int]
    STARTED_UNIX_FIELD_NUMBER: _ClassVar[int]
    FINISHED_UNIX_FIELD_NUMBER: _ClassVar[int]
    ANCHOR_PREVIEWS_FIELD_NUMBER: _ClassVar[int]
    QUEUE_POSITION_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    RENDERED_RANGE_FIELD_NUMBER: _ClassVar[int]
    ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    FRAME_BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    CANCEL_REQUESTED_FIELD_NUMBER: _ClassVar[int]
    RENDER_SECONDS_FIELD_NUMBER: _ClassVar[int]
    RESOLVED_PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    state: JobState
    request: SubmitEditRequest
    progress: Progress
    error_message: str
    error_code: int
    result_path: str
    sidecar_path: str
    result_size_bytes: int
    cache_hit: bool
    created_unix: float
    started_unix: float
    finished_unix: float
    anchor_previews: _containers.RepeatedCompositeFieldContainer[Preview]
    queue_position: int
    model: str
    rendered_range: FrameRange
    attempts: int
    frame_batch_size: int
    cancel_requested: bool
    render_seconds: float
    resolved_parameters: EditParameters
    def __init__(self, job_id: _Optional[str] = ..., state: _Optional[_Union[JobState, str]] = ..., request: _Optional[_Union[SubmitEditRequest, _Mapping]] = ..., progress: _Optional[_Union[Progress, _Mapping]] = ..., error_message: _Optional[str] = ..., error_code: _Optional[int] = ..., result_path: _Optional[str] = ..., sidecar_path: _Optional[str] = ..., result_size_bytes: _Optional[int] = ..., cache_hit: _Optional[bool] = ..., created_unix: _Optional[float] = ..., started_unix: _Optional[float] = ..., finished_unix: _Optional[float] = ..., anchor_previews: _Optional[_Iterable[_Union[Preview, _Mapping]]] = ..., queue_position: _Optional[int] = ..., model: _Optional[str] = ..., rendered_range: _Optional[_Union[FrameRange, _Mapping]] = ..., attempts: _Optional[int] = ..., frame_batch_size: _Optional[int] = ..., cancel_requested: _Optional[bool] = ..., render_seconds: _Optional[float] = ..., resolved_parameters: _Optional[_Union[EditParameters, _Mapping]] = ...) -> None: ...

class JobEvent(_message.Message):
    __slots__ = ("job",)
    JOB_FIELD_NUMBER: _ClassVar[int]
    job: Job
    def __init__(self, job: _Optional[_Union[Job, _Mapping]] = ...) -> None: ...

class WatchJobRequest(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...

class CancelJobRequest(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...

class GetJobRequest(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...

class ListJobsRequest(_message.Message):
    __slots__ = ("states", "limit")
    STATES_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    states: _containers.RepeatedScalarFieldContainer[JobState]
    limit: int
    def __init__(self, states: _Optional[_Iterable[_Union[JobState, str]]] = ..., limit: _Optional[int] = ...) -> None: ...

class ListJobsResponse(_message.Message):
    __slots__ = ("jobs",)
    JOBS_FIELD_NUMBER: _ClassVar[int]
    jobs: _containers.RepeatedCompositeFieldContainer[Job]
    def __init__(self, jobs: _Optional[_Iterable[_Union[Job, _Mapping]]] = ...) -> None: ...

class DownloadResultRequest(_message.Message):
    __slots__ = ("job_id", "file")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    FILE_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    file: ResultFile
    def __init__(self, job_id: _Optional[str] = ..., file: _Optional[_Union[ResultFile, str]] = ...) -> None: ...

class DataChunk(_message.Message):
    __slots__ = ("data", "offset", "total_size", "filename", "sha256")
    DATA_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    TOTAL_SIZE_FIELD_NUMBER: _ClassVar[int]
    FILENAME_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    offset: int
    total_size: int
    filename: str
    sha256: str
    def __init__(self, data: _Optional[bytes] = ..., offset: _Optional[int] = ..., total_size: _Optional[int] = ..., filename: _Optional[str] = ..., sha256: _Optional[str] = ...) -> None: ...

class UploadHeader(_message.Message):
    __slots__ = ("filename", "total_size", "sha256")
    FILENAME_FIELD_NUMBER: _ClassVar[int]
    TOTAL_SIZE_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    filename: str
    total_size: int
    sha256: str
    def __init__(self, filename: _Optional[str] = ..., total_size: _Optional[int] = ..., sha256: _Optional[str] = ...) -> None: ...

class UploadMediaRequest(_message.Message):
    __slots__ = ("header", "data")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    header: UploadHeader
    data: bytes
    def __init__(self, header: _Optional[_Union[UploadHeader, _Mapping]] = ..., data: _Optional[bytes] = ...) -> None: ...

class UploadMediaResponse(_message.Message):
    __slots__ = ("upload_id", "size", "sha256")
    UPLOAD_ID_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    upload_id: str
    size: int
    sha256: str
    def __init__(self, upload_id: _Optional[str] = ..., size: _Optional[int] = ..., sha256: _Optional[str] = ...) -> None: ...

class GetServerInfoRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Device(_message.Message):
    __slots__ = ("name", "kind", "total_memory_bytes", "free_memory_bytes", "running_job_id")
    NAME_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    TOTAL_MEMORY_BYTES_FIELD_NUMBER: _ClassVar[int]
    FREE_MEMORY_BYTES_FIELD_NUMBER: _ClassVar[int]
    RUNNING_JOB_ID_FIELD_NUMBER: _ClassVar[int]
    name: str
    kind: str
    total_memory_bytes: int
    free_memory_bytes: int
    running_job_id: str
    def __init__(self, name: _Optional[str] = ..., kind: _Optional[str] = ..., total_memory_bytes: _Optional[int] = ..., free_memory_bytes: _Optional[int] = ..., running_job_id: _Optional[str] = ...) -> None: ...

class Limits(_message.Message):
    __slots__ = ("max_frames", "max_pixels", "max_instruction_length", "max_upload_bytes", "max_message_bytes")
    MAX_FRAMES_FIELD_NUMBER: _ClassVar[int]
    MAX_PIXELS_FIELD_NUMBER: _ClassVar[int]
    MAX_INSTRUCTION_LENGTH_FIELD_NUMBER: _ClassVar[int]
    MAX_UPLOAD_BYTES_FIELD_NUMBER: _ClassVar[int]
    MAX_MESSAGE_BYTES_FIELD_NUMBER: _ClassVar[int]
    max_frames: int
    max_pixels: int
    max_instruction_length: int
    max_upload_bytes: int
    max_message_bytes: int
    def __init__(self, max_frames: _Optional[int] = ..., max_pixels: _Optional[int] = ..., max_instruction_length: _Optional[int] = ..., max_upload_bytes: _Optional[int] = ..., max_message_bytes: _Optional[int] = ...) -> None: ...

class ServerInfo(_message.Message):
    __slots__ = ("version", "api_version", "devices", "default_model", "loaded_models", "limits", "auth_required", "media_roots")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    API_VERSION_FIELD_NUMBER: _ClassVar[int]
    DEVICES_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_MODEL_FIELD_NUMBER: _ClassVar[int]
    LOADED_MODELS_FIELD_NUMBER: _ClassVar[int]
    LIMITS_FIELD_NUMBER: _ClassVar[int]
    AUTH_REQUIRED_FIELD_NUMBER: _ClassVar[int]
    MEDIA_ROOTS_FIELD_NUMBER: _ClassVar[int]
    version: str
    api_version: str
    devices: _containers.RepeatedCompositeFieldContainer[Device]
    default_model: str
    loaded_models: _containers.RepeatedScalarFieldContainer[str]
    limits: Limits
    auth_required: bool
    media_roots: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, version: _Optional[str] = ..., api_version: _Optional[str] = ..., devices: _Optional[_Iterable[_Union[Device, _Mapping]]] = ..., default_model: _Optional[str] = ..., loaded_models: _Optional[_Iterable[str]] = ..., limits: _Optional[_Union[Limits, _Mapping]] = ..., auth_required: _Optional[bool] = ..., media_roots: _Optional[_Iterable[str]] = ...) -> None: ...
