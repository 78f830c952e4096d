"""Carrying a range's audio over to an output, trimmed or padded to the video's duration."""

from __future__ import annotations

import math
from collections.abc import Iterator
from fractions import Fraction

import numpy as np

from ..errors import InvalidInputError, MediaError
from .timing import _RESEEK_SECONDS, _audio_stream, _av, _checked_path, _open_input, _reason, _rewind, _timeline


# ---------------------------------------------------------------------------
# Audio: read a span of a file's audio, write it into an output


def _audio_layout(channels: int) -> str:
    return "mono" if channels == 1 else "stereo"


class _AudioSpan:
    """The audio of ``path`` from ``start`` for ``duration`` seconds, as float32 planar chunks.

    ``start`` counts from the first video frame (so frame ``i`` starts at
    ``i / fps``). Gaps the source does not cover are filled with silence, so
    exactly ``round(duration * rate)`` samples come out.
    """

    def __init__(self, path, start: float, duration: float):
        self.path = _checked_path(path)
        if not (math.isfinite(start) and math.isfinite(duration)) or start < 0 or duration < 0:
            raise InvalidInputError(
                f"audio span must have start >= 0 and duration >= 0 seconds, got ({start}, {duration})"
            )
        self._container = _open_input(self.path)
        self.stream = _audio_stream(self._container)
        if self.stream is None:
            self._container.close()
            self._container = None
            self.rate = None
            return
        self.rate = self.stream.codec_context.sample_rate
        self.layout = _audio_layout(self.stream.codec_context.channels)
        self.channels = 1 if self.layout == "mono" else 2
        self.total = round(duration * self.rate)
        video_start = float(_timeline(self.path).t0) if self._container.streams.video else 0.0
        self._start_time = video_start + start

    def close(self) -> None:
        if self._container is not None:
            self._container.close()
            self._container = None

    def chunks(self) -> Iterator[np.ndarray]:
        """float32 arrays of shape (channels, n) adding up to exactly ``total`` samples."""
        if self.stream is None:
            return
        emitted = 0
        for chunk in self._source_chunks():
            take = chunk[:, : self.total - emitted]
            if take.shape[1]:
                yield take
                emitted += take.shape[1]
            if emitted >= self.total:
                return
        if emitted < self.total:
            yield np.zeros((self.channels, self.total - emitted), dtype=np.float32)

    def _source_chunks(self) -> Iterator[np.ndarray]:
        av = _av()
        resampler = av.AudioResampler(format="fltp", layout=self.layout, rate=self.rate)
        position = None  # where the next source sample falls, in samples from the span's start
        try:
            for frame in self._frames_from_span_start():
                if position is None:
                    position = round((frame.time - self._start_time) * self.rate)
                    if position > 0:  # the audio starts after the span does
                        yield np.zeros((self.channels, position), dtype=np.float32)
                        position = 0
                for out in resampler.resample(frame):
                    position = yield from self._trimmed(out.to_ndarray(), position)
            if position is not None:
                for out in resampler.resample(None):
                    position = yield from self._trimmed(out.to_ndarray(), position)
        except av.FFmpegError as exc:
            raise MediaError(f"{self.path}: cannot decode its audio ({_reason(exc)})") from None

    def _frames_from_span_start(self):
        """Decoded audio frames, the first starting at or before the span's start."""
        container, stream = self._container, self.stream
        if self._start_time > 2 * _RESEEK_SECONDS:
            container.seek(int((self._start_time - _RESEEK_SECONDS) / stream.time_base), stream=stream, backward=True)
            frames = (frame for frame in container.decode(stream) if frame.pts is not None)
            first = next(frames, None)
            if first is not None and first.time <= self._start_time:
                yield first
                yield from frames
                return
            _rewind(container)
        yield from (frame for frame in container.decode(stream) if frame.pts is not None)

    @staticmethod
    def _trimmed(samples: np.ndarray, position: int):
        """Yield the part of `samples` at or after the span's start; return the new position."""
        samples = samples.astype(np.float32, copy=False)
        skip = max(0, -position)
        if skip < samples.shape[1]:
            yield samples[:, skip:]
        return position + samples.shape[1]


class _AudioTrack:
    """An output audio stream fed with float32 planar chunks, in encoder-sized frames."""

    def __init__(self, container, codec: str, rate: int, layout: str):
        av = _av()
        self._av = av
        self._container = container
        self.stream = container.add_stream(codec, rate=rate, layout=layout)
        self.stream.time_base = Fraction(1, rate)
        self.rate = rate
        self.layout = layout
        self.stream.codec_context.open()
        frame_size = self.stream.codec_context.frame_size or None
        self._resampler = av.AudioResampler(
            format=self.stream.codec_context.format.name, layout=layout, rate=rate, frame_size=frame_size
        )
        self.samples_in = 0
        self._samples_out = 0

    def write(self, chunk: np.ndarray) -> None:
        samples = np.ascontiguousarray(chunk, dtype=np.float32)
        frame = self._av.AudioFrame.from_ndarray(samples, format="fltp", layout=self.layout)
        frame.sample_rate = self.rate
        frame.pts = self.samples_in
        frame.time_base = Fraction(1, self.rate)
        self.samples_in += chunk.shape[1]
        for out in self._resampler.resample(frame):
            self._encode(out)

    def close(self) -> None:
        for out in self._resampler.resample(None):
            self._encode(out)
        for packet in self.stream.encode(None):
            self._container.mux(packet)

    def _encode(self, frame) -> None:
        frame.pts = self._samples_out
        frame.time_base = Fraction(1, self.rate)
        self._samples_out += frame.samples
        for packet in self.stream.encode(frame):
            self._container.mux(packet)


def _audio_codec_for(suffix: str) -> str:
    return "pcm_s16le" if suffix in (".mov", ".avi") else "libopus" if suffix == ".webm" else "aac"
