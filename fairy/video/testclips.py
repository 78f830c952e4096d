"""Synthetic test clips: moving patterns with exact frame indices and a tone, in any codec PyAV has."""

from __future__ import annotations

import math
import pathlib
from fractions import Fraction

import numpy as np

from fairy_proto.v1.settings import setting

from ..errors import InvalidInputError, MediaError
from .audio import _audio_codec_for, _AudioTrack
from .encode import (_H264_OPTIONS, _PRORES_ENCODER, _PRORES_ODD_WIDTH_ENCODER, _PRORES_OPTIONS, _as_rate, _encoder_frame,
                     _muxer_for, _new_video_stream)
from .timing import _av, _reason


_TEST_CLIP_CODECS = {
    # name: (encoder, pixel format for even sizes, for odd sizes, options).
    # Short GOPs (12 frames) so tests exercise seeking to a keyframe.
    "h264": ("libx264", "yuv420p", "yuv444p", {**_H264_OPTIONS, "g": "12"}),
    "prores": (_PRORES_ENCODER, "yuv422p10le", "yuv422p10le", _PRORES_OPTIONS),
    "hevc": ("libx265", "yuv420p", "yuv444p", {"crf": "20", "x265-params": "keyint=12:min-keyint=12:log-level=error"}),
    "dnxhd": ("dnxhd", "yuv422p", "yuv422p", {"profile": "dnxhr_sq"}),
    "vp9": (
        "libvpx-vp9", "yuv420p", "yuv420p", {"crf": "30", "b": "0", "g": "12", "deadline": "realtime", "cpu-used": "8"}
    ),
    "mjpeg": ("mjpeg", "yuvj420p", "yuvj444p", {"q:v": "2"}),
}
_TEST_PATTERNS = ("moving", "index")
_TEST_AUDIO_RATE = 48000


# ---------------------------------------------------------------------------
# Synthetic clips


def make_test_clip(
    path,
    *,
    frames: int = 24,
    width: int = 96,
    height: int = 64,
    fps: Fraction = Fraction(24),
    codec: str = setting("codec").default,
    audio: bool = True,
    rotation: int = 0,
    pattern: str = "moving",
) -> pathlib.Path:
    """Write a synthetic clip for tests, demos and benchmarks; returns its path.

    ``width`` x ``height`` is the picture as displayed. With ``rotation`` 90,
    180 or 270 the file stores it turned the other way plus a display matrix
    saying "turn it ``rotation`` degrees clockwise", like phone footage, so a
    reader that honours rotation sees the same picture as an unrotated clip.

    Patterns: ``"moving"``, smoothly moving textured shapes over a drifting
    textured background (so optical flow is meaningful); ``"index"``, eight
    vertical bars, bar k white when bit k of the frame index is set (bit 0 on
    the left), which survives any codec. Codecs: h264, hevc, prores, dnxhd
    (DNxHR SQ: at least 256x120), vp9 (.webm), mjpeg (.avi or .mov); .ts
    files are MPEG-TS (which starts its clock at 1.4 s, not 0). Audio is a
    440 Hz sine tone at 48 kHz, as long as the video. Overwrites ``path``.
    """
    path = pathlib.Path(path)
    if codec not in _TEST_CLIP_CODECS:
        raise InvalidInputError(f"codec must be one of {sorted(_TEST_CLIP_CODECS)}, got {codec!r}")
    if pattern not in _TEST_PATTERNS:
        raise InvalidInputError(f"pattern must be one of {_TEST_PATTERNS}, got {pattern!r}")
    if rotation not in (0, 90, 180, 270):
        raise InvalidInputError(f"rotation must be 0, 90, 180 or 270, got {rotation!r}")
    if frames <= 0 or width <= 0 or height <= 0:
        raise InvalidInputError(f"frames, width and height must be positive, got {frames}, {width}, {height}")
    if codec == "dnxhd" and (width < 256 or height < 120) and (height < 256 or width < 120):
        raise InvalidInputError(f"DNxHR needs at least 256x120 pixels, got {width}x{height}")
    fps = _as_rate(fps)
    encoder, even_fmt, odd_fmt, options = _TEST_CLIP_CODECS[codec]
    stored_w, stored_h = (height, width) if rotation in (90, 270) else (width, height)
    if encoder == _PRORES_ENCODER and stored_w % 2:
        encoder = _PRORES_ODD_WIDTH_ENCODER
    pix_fmt = odd_fmt if stored_w % 2 or stored_h % 2 else even_fmt
    suffix = path.suffix.lower()
    av = _av()
    try:
        with av.open(str(path), "w", format=_muxer_for(suffix)) as container:
            stream = _new_video_stream(container, encoder, pix_fmt, options, fps, stored_w, stored_h)
            if rotation:
                # PyAV takes the counter-clockwise angle a reader will report.
                stream.set_display_rotation(-rotation)
            track = None
            if audio:
                track = _AudioTrack(container, _audio_codec_for(suffix), _TEST_AUDIO_RATE, "stereo")
            for index in range(frames):
                picture = test_pattern_frame(index, width, height, pattern)
                if rotation:
                    # Store it turned counter-clockwise; the reader turns it back clockwise.
                    picture = np.ascontiguousarray(np.rot90(picture, rotation // 90))
                frame = _encoder_frame(picture, pix_fmt)
                frame.pts = index
                for packet in stream.encode(frame):
                    container.mux(packet)
                if track is not None:
                    end = round(Fraction(index + 1) / fps * _TEST_AUDIO_RATE)
                    if end > track.samples_in:
                        track.write(_sine(track.samples_in, end - track.samples_in))
            for packet in stream.encode(None):
                container.mux(packet)
            if track is not None:
                track.close()
    except av.FFmpegError as exc:
        path.unlink(missing_ok=True)
        raise MediaError(f"{path}: cannot write a {codec} test clip ({_reason(exc)})") from None
    return path


def _sine(first_sample: int, count: int) -> np.ndarray:
    t = (np.arange(first_sample, first_sample + count) / _TEST_AUDIO_RATE).astype(np.float64)
    tone = (0.3 * np.sin(2 * np.pi * 440.0 * t)).astype(np.float32)
    return np.stack([tone, tone])


def test_pattern_frame(index: int, width: int, height: int, pattern: str = "moving") -> np.ndarray:
    """Frame ``index`` of a synthetic pattern, HxWx3 uint8 (what make_test_clip encodes)."""
    if pattern == "index":
        frame = np.zeros((height, width, 3), dtype=np.uint8)
        edges = np.linspace(0, width, 9).round().astype(int)
        for bit in range(8):
            if index >> bit & 1:
                frame[:, edges[bit] : edges[bit + 1]] = 255
        return frame
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    t = float(index)
    # Background: a diagonal gradient with a fine texture, drifting right 0.7 px a frame.
    bx = x - 0.7 * t
    background = 0.45 + 0.2 * np.sin(bx / 9.0) * np.cos(y / 7.0) + 0.15 * (y / max(height, 1))
    r = background.copy()
    g = 0.8 * background + 0.1 * np.sin((bx + y) / 4.0)
    b = 0.6 * background + 0.2
    # A checkered disc moving on a slow ellipse.
    cx = width * (0.5 + 0.25 * math.cos(t / 12.0))
    cy = height * (0.5 + 0.25 * math.sin(t / 12.0))
    radius = 0.22 * min(width, height)
    disc = ((x - cx) ** 2 + (y - cy) ** 2) <= radius**2
    checker = ((np.floor((x - cx) / 4) + np.floor((y - cy) / 4)) % 2).astype(np.float32)
    r = np.where(disc, 0.9 - 0.5 * checker, r)
    g = np.where(disc, 0.3 + 0.4 * checker, g)
    b = np.where(disc, 0.2, b)
    # A striped square sliding left to right and back.
    side = 0.3 * min(width, height)
    sx = (width - side) * (0.5 + 0.5 * math.sin(t / 9.0))
    sy = height * 0.15
    square = (x >= sx) & (x < sx + side) & (y >= sy) & (y < sy + side)
    stripes = 0.5 + 0.5 * np.sin((x - sx) / 2.0)
    r = np.where(square, 0.1, r)
    g = np.where(square, 0.2 + 0.3 * stripes, g)
    b = np.where(square, 0.5 + 0.4 * stripes, b)
    rgb = np.stack([r, g, b], axis=-1)
    return (np.clip(rgb, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


test_pattern_frame.__test__ = False  # not a pytest test, despite its name
