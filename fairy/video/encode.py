"""Encoding edited frames (``VideoWriter``): H.264 or ProRes at an exact rate, written atomically."""

from __future__ import annotations

import contextlib
import os
import pathlib
from collections.abc import Iterator
from fractions import Fraction

import numpy as np
from fairy_proto.files import StagedPath
from fairy_proto.v1.settings import setting

from ..errors import InvalidInputError, MediaError, OutputExistsError
from .audio import _audio_codec_for, _AudioSpan, _AudioTrack
from .timing import _CFR_SNAP, _av, _checked_path, _reason, _snap_rate


# Which encoder, pixel format and options each output codec name uses.
_H264_OPTIONS = {"crf": "18", "preset": "medium"}
# prores_aw where it can: prores_ks gave different bytes for the same frames from run to
# run on noisy pictures at sizes that are not multiples of 16 (seen with FFmpeg in PyAV 18),
# which breaks "same settings, same result"; prores_aw is deterministic but refuses odd
# widths, which keep prores_ks.
_PRORES_ENCODER = "prores_aw"
_PRORES_ODD_WIDTH_ENCODER = "prores_ks"
_PRORES_OPTIONS = {"profile": "2", "vendor": "apl0"}
_OUTPUT_EXTENSIONS = {"h264": (".mp4", ".mov", ".mkv", ".m4v"), "prores": (".mov",)}


# ---------------------------------------------------------------------------
# Encoding


class VideoWriter:
    """Write RGB frames to a video file that appears only when complete.

    Use as a context manager. Leaving the ``with`` block normally flushes the
    encoder, checks that ``expected_frames`` frames were written and renames
    the hidden temporary file onto ``path``; leaving it with an exception
    (including KeyboardInterrupt or EditCancelled) deletes the temporary file.
    """

    def __init__(
        self,
        path,
        *,
        fps: Fraction,
        width: int,
        height: int,
        codec: str = setting("codec").default,
        audio_source: tuple[str | os.PathLike, float, float] | None = None,
        overwrite: bool = False,
        expected_frames: int | None = None,
    ):
        self.path = pathlib.Path(path)
        self.fps = _as_rate(fps)
        self.width, self.height = width, height
        self.codec = codec
        self.expected_frames = expected_frames
        self.frames_written = 0
        self._check(audio_source, overwrite)
        self._overwrite = overwrite
        self._audio_source = audio_source
        self._staged: StagedPath | None = None  # the hidden temporary file beside ``path``
        self._container = None
        self._audio_span: _AudioSpan | None = None
        self._audio_chunks: Iterator[np.ndarray] | None = None
        self._audio_track: _AudioTrack | None = None

    def _check(self, audio_source, overwrite: bool) -> None:
        if self.codec not in _OUTPUT_EXTENSIONS:
            raise InvalidInputError(f"codec must be one of {sorted(_OUTPUT_EXTENSIONS)}, got {self.codec!r}")
        suffix = self.path.suffix.lower()
        if suffix not in _OUTPUT_EXTENSIONS[self.codec]:
            allowed = ", ".join(_OUTPUT_EXTENSIONS[self.codec])
            raise InvalidInputError(f"{self.path}: a {self.codec} output must end in {allowed}")
        for name, value in (("width", self.width), ("height", self.height)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
                raise InvalidInputError(f"{name} must be a positive integer, got {value!r}")
        if self.expected_frames is not None and self.expected_frames < 0:
            raise InvalidInputError(f"expected_frames must be >= 0, got {self.expected_frames}")
        if not self.path.parent.is_dir():
            raise MediaError(f"{self.path}: the folder {self.path.parent} does not exist")
        if self.path.is_dir():
            raise OutputExistsError(f"{self.path}: is a folder")
        if audio_source is not None:
            _checked_path(audio_source[0])
        if audio_source is not None and self.path.exists() and _same_file(self.path, audio_source[0]):
            raise OutputExistsError(f"{self.path}: is the input itself; choose another output")
        if self.path.exists() and not overwrite:
            raise OutputExistsError(f"{self.path}: already exists (pass overwrite to replace it)")

    def __enter__(self) -> VideoWriter:
        av = _av()
        if self._audio_source is not None:
            source, start, duration = self._audio_source
            self._audio_span = _AudioSpan(source, float(start), float(duration))
        # The checks above keep their own messages (overwrite, "appeared while encoding"), so the temporary
        # may replace the output. Made now: a folder that cannot be written fails here, not inside FFmpeg.
        self._staged = StagedPath(self.path, overwrite=True)
        try:
            self._staged.open("wb").close()
        except OSError as exc:
            self._staged.discard()
            self._staged = None
            self._close_audio_source()
            raise MediaError(f"{self.path}: cannot write in {self.path.parent} ({exc.strerror})") from None
        try:
            self._container = av.open(str(self._staged.path), "w", format=_muxer_for(self.path.suffix.lower()))
            self._video = _add_video_stream(self._container, self.codec, self.fps, self.width, self.height)
            if self._audio_span is not None and self._audio_span.rate is not None:
                span = self._audio_span
                self._audio_track = _AudioTrack(
                    self._container, _audio_codec_for(self.path.suffix.lower()), span.rate, span.layout
                )
                self._audio_chunks = span.chunks()
        except BaseException as exc:
            self._discard()
            if isinstance(exc, av.FFmpegError):
                raise MediaError(f"{self.path}: cannot start encoding ({_reason(exc)})") from None
            raise
        return self

    def write(self, frame: np.ndarray) -> None:
        """Append one HxWx3 uint8 RGB frame."""
        if self._container is None:
            raise RuntimeError("VideoWriter.write() called outside its `with` block")
        if not isinstance(frame, np.ndarray) or frame.shape != (self.height, self.width, 3) or frame.dtype != np.uint8:
            shape = getattr(frame, "shape", None)
            dtype = getattr(frame, "dtype", type(frame).__name__)
            raise InvalidInputError(
                f"frame must be a {self.height}x{self.width}x3 uint8 array, got shape {shape} of {dtype}"
            )
        av = _av()
        try:
            video_frame = _encoder_frame(frame, self._video.pix_fmt)
            video_frame.pts = self.frames_written
            for packet in self._video.encode(video_frame):
                self._container.mux(packet)
            self.frames_written += 1
            # Keep audio level with video so the file is interleaved.
            self._feed_audio(Fraction(self.frames_written) / self.fps)
        except av.FFmpegError as exc:
            raise MediaError(f"{self.path}: encoding failed ({_reason(exc)})") from None

    def _feed_audio(self, until_seconds: Fraction | None) -> None:
        if self._audio_track is None or self._audio_chunks is None:
            return
        limit = None if until_seconds is None else until_seconds * self._audio_track.rate
        while limit is None or self._audio_track.samples_in < limit:
            chunk = next(self._audio_chunks, None)
            if chunk is None:
                self._audio_chunks = None
                return
            self._audio_track.write(chunk)

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self._discard()
            return
        av = _av()
        try:
            for packet in self._video.encode(None):
                self._container.mux(packet)
            self._feed_audio(None)
            if self._audio_track is not None:
                self._audio_track.close()
            self._container.close()
            self._container = None
        except av.FFmpegError as exc:
            self._discard()
            raise MediaError(f"{self.path}: encoding failed ({_reason(exc)})") from None
        except BaseException:
            self._discard()
            raise
        if self.frames_written == 0:
            self._discard()
            raise MediaError(f"{self.path}: no frames were written; nothing was saved")
        if self.expected_frames is not None and self.frames_written != self.expected_frames:
            self._discard()
            raise MediaError(
                f"{self.path}: got {self.frames_written} frames, expected {self.expected_frames}; nothing was written"
            )
        if self.path.exists() and not self._overwrite:
            self._discard()
            raise OutputExistsError(f"{self.path}: appeared while encoding; not replaced")
        self._close_audio_source()
        staged, self._staged = self._staged, None
        staged.commit()  # with the mode any new file gets; on failure the temporary is removed

    def _close_audio_source(self) -> None:
        if self._audio_span is not None:
            self._audio_span.close()
            self._audio_span = None

    def _discard(self) -> None:
        """Drop everything written so far; leaves no file behind."""
        if self._container is not None:
            with contextlib.suppress(Exception):
                self._container.close()
            self._container = None
        self._close_audio_source()
        if self._staged is not None:
            self._staged.discard()
            self._staged = None


def _as_rate(fps) -> Fraction:
    """A frame rate as an exact Fraction; a float (29.97) means the common rate it rounds (30000/1001)."""
    try:
        if isinstance(fps, bool):
            raise TypeError
        rate = Fraction(fps) if isinstance(fps, (int, Fraction)) else _snap_rate(Fraction(fps), _CFR_SNAP)
    except (TypeError, ValueError, OverflowError):
        raise InvalidInputError(f"fps must be a positive number such as Fraction(30000, 1001), got {fps!r}") from None
    if rate <= 0:
        raise InvalidInputError(f"fps must be positive, got {fps!r}")
    return rate


def _same_file(a: pathlib.Path, b) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def _muxer_for(suffix: str) -> str:
    muxers = {
        ".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".mkv": "matroska", ".webm": "webm", ".avi": "avi", ".ts": "mpegts"
    }
    if suffix not in muxers:
        raise InvalidInputError(f"unsupported file extension {suffix!r}: use one of {', '.join(muxers)}")
    return muxers[suffix]


def _add_video_stream(container, codec: str, fps: Fraction, width: int, height: int):
    odd = width % 2 or height % 2
    if codec == "h264":
        encoder, pix_fmt, options = "libx264", "yuv444p" if odd else "yuv420p", _H264_OPTIONS
    else:
        encoder = _PRORES_ENCODER if width % 2 == 0 else _PRORES_ODD_WIDTH_ENCODER
        pix_fmt, options = "yuv422p10le", _PRORES_OPTIONS
    return _new_video_stream(container, encoder, pix_fmt, options, fps, width, height)


def _new_video_stream(container, encoder: str, pix_fmt: str, options: dict, fps: Fraction, width: int, height: int):
    stream = container.add_stream(encoder, rate=fps, options=dict(options))
    stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
    # One tick per frame: frame i has pts i, so the rate is exact (30000/1001 stays 30000/1001).
    stream.codec_context.time_base = 1 / fps
    context = stream.codec_context
    if not pix_fmt.startswith("yuvj"):
        # Tag BT.709, limited range, so every reader converts back the way we converted.
        context.colorspace, context.color_primaries, context.color_trc, context.color_range = 1, 1, 1, 1
    return stream


def _encoder_frame(rgb: np.ndarray, pix_fmt: str):
    av = _av()
    frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
    if pix_fmt.startswith("yuvj"):
        return frame.reformat(format=pix_fmt)
    return frame.reformat(format=pix_fmt, dst_colorspace="ITU709", dst_color_range="MPEG")
