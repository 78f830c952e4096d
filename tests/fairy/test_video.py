"""fairy.video against real files written and read with PyAV (tiny clips, a few frames each)."""

from __future__ import annotations

import pathlib
from fractions import Fraction

import av
import hypothesis
import hypothesis.strategies as st
import numpy as np
import pytest

from fairy import video
from fairy.errors import EditCancelled, InvalidInputError, MediaError, OutputExistsError

NTSC = Fraction(30000, 1001)
FILM = Fraction(24000, 1001)


def bar_index(frame: np.ndarray) -> int:
    """Read back the number an ``index``-pattern frame shows (bit k = bar k, from the left)."""
    width = frame.shape[1]
    edges = np.linspace(0, width, 9)
    centres = ((edges[:-1] + edges[1:]) / 2).astype(int)
    return sum(1 << bit for bit, x in enumerate(centres) if frame[:, x].mean() > 128)


def audio_seconds(path: pathlib.Path) -> float:
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        return float(stream.duration * stream.time_base)


def decoded_audio(path: pathlib.Path) -> tuple[np.ndarray, int]:
    """First channel of the audio as float in [-1, 1], and the sample rate."""
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        chunks = []
        for frame in container.decode(stream):
            samples = frame.to_ndarray()
            if not frame.format.is_planar:
                samples = samples.reshape(-1, len(frame.layout.channels)).T
            if samples.dtype == np.int16:
                samples = samples.astype(np.float32) / 32768.0
            chunks.append(samples[0])
        return np.concatenate(chunks), stream.codec_context.sample_rate


def folder_names(folder: pathlib.Path) -> set[str]:
    return {p.name for p in folder.iterdir()}


@pytest.fixture(scope="module")
def index_clip(tmp_path_factory) -> pathlib.Path:
    # 40 frames, a keyframe every 8 to 12: ranges cross keyframes, so seeking is exercised.
    path = tmp_path_factory.mktemp("index") / "index.mp4"
    return video.make_test_clip(path, frames=40, width=96, height=48, pattern="index", audio=False)


# ---------------------------------------------------------------------------
# Probing and exact ranges


def test_probe_describes_a_test_clip(index_clip):
    info = video.probe(index_clip)
    assert (info.width, info.height, info.rotation) == (96, 48, 0)
    assert info.fps == Fraction(24) and info.frame_count == 40
    assert info.codec == "h264" and info.pix_fmt == "yuv420p"
    assert not info.variable_frame_rate and not info.has_audio and info.audio_sample_rate is None
    assert info.duration == pytest.approx(40 / 24)


@pytest.mark.parametrize("start,count", [(0, 5), (10, 7), (11, 2), (23, 17), (39, 1), (40, 0)])
def test_iter_frames_returns_exactly_the_requested_range(index_clip, start, count):
    frames = list(video.iter_frames(index_clip, start, count))
    assert [bar_index(f) for f in frames] == list(range(start, start + count))
    assert all(f.shape == (48, 96, 3) and f.dtype == np.uint8 for f in frames)


def test_read_frames_agrees_with_iter_frames(index_clip):
    everything = list(video.iter_frames(index_clip, 0, 40))
    wanted = [33, 2, 14, 14, 25, 0, 39]
    picked = video.read_frames(index_clip, wanted)
    assert sorted(picked) == sorted(set(wanted))
    for index, frame in picked.items():
        np.testing.assert_array_equal(frame, everything[index])
    assert video.read_frames(index_clip, []) == {}


def test_a_range_past_the_end_is_refused_before_decoding(index_clip):
    with pytest.raises(MediaError, match=r"index\.mp4.*past the end.*40 frames"):
        video.iter_frames(index_clip, 35, 6)  # raises here, not on the first next()
    with pytest.raises(MediaError, match="past the end"):
        video.read_frames(index_clip, [3, 40])
    with pytest.raises(InvalidInputError, match="start"):
        video.iter_frames(index_clip, -1, 2)


def test_unusable_files_raise_media_error_naming_the_file(tmp_path):
    missing = tmp_path / "missing.mp4"
    with pytest.raises(MediaError, match=r"missing\.mp4: no such file"):
        video.probe(missing)
    with pytest.raises(MediaError, match=r"missing\.mp4"):
        video.iter_frames(missing, 0, 1)
    with pytest.raises(MediaError, match="not a file"):
        video.probe(tmp_path)
    garbage = tmp_path / "notes.mp4"
    garbage.write_bytes(b"this is not a video\n" * 50)
    with pytest.raises(MediaError, match=r"notes\.mp4: not a media file"):
        video.probe(garbage)
    with pytest.raises(MediaError, match=r"notes\.mp4"):
        video.read_frames(garbage, [0])
    sound = tmp_path / "tone.wav"
    with av.open(str(sound), "w") as container:
        stream = container.add_stream("pcm_s16le", rate=8000, layout="mono")
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 800), np.int16), format="s16", layout="mono")
        frame.sample_rate = 8000
        for packet in stream.encode(frame):
            container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    with pytest.raises(MediaError, match=r"tone\.wav: no video stream"):
        video.probe(sound)


def test_a_truncated_file_raises_media_error(tmp_path):
    # A copy cut short mid-transfer: an MP4's index (moov) is written last, so it is lost.
    clip = video.make_test_clip(tmp_path / "whole.mp4", frames=12, audio=False)
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(clip.read_bytes()[: clip.stat().st_size // 2])
    with pytest.raises(MediaError, match=r"cut\.mp4: not a media file PyAV can open"):
        video.probe(cut)


# ---------------------------------------------------------------------------
# Rotation, variable frame rate, codecs


@pytest.mark.parametrize("rotation", [90, 180, 270])
def test_rotated_files_decode_upright(tmp_path, rotation):
    path = video.make_test_clip(
        tmp_path / "phone.mp4", frames=6, width=96, height=48, pattern="index", rotation=rotation, audio=False
    )
    with av.open(str(path)) as container:  # what is stored: the picture turned sideways
        stream = container.streams.video[0]
        stored = (stream.width, stream.height)
        # PyAV reports the display matrix counter-clockwise; the player turns it clockwise.
        assert -next(container.decode(stream)).rotation % 360 == rotation
    assert stored == ((48, 96) if rotation in (90, 270) else (96, 48))

    info = video.probe(path)
    assert (info.width, info.height, info.rotation) == (96, 48, rotation)
    frames = list(video.iter_frames(path, 1, 5))
    assert all(f.shape == (48, 96, 3) for f in frames)
    # Turned the wrong way, the bars would be upside down or reversed and read wrong.
    assert [bar_index(f) for f in frames] == [1, 2, 3, 4, 5]
    assert bar_index(video.read_frames(path, [4])[4]) == 4


def write_vfr_clip(path: pathlib.Path) -> None:
    """12 frames at irregular times (ms) in 0.5 s, no B-frames; frame k shows the number k."""
    times_ms = [0, 42, 83, 167, 180, 208, 250, 292, 333, 375, 400, 417]
    ends_ms = times_ms[1:] + [500]
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", options={"bf": "0", "g": "4", "crf": "18"})
        stream.width, stream.height, stream.pix_fmt = 96, 48, "yuv420p"
        stream.codec_context.time_base = Fraction(1, 1000)
        stream.time_base = Fraction(1, 1000)
        durations = {t: end - t for t, end in zip(times_ms, ends_ms)}

        def mux(packets):
            for packet in packets:
                packet.duration = durations[packet.pts]
                container.mux(packet)

        for number, time_ms in enumerate(times_ms):
            frame = av.VideoFrame.from_ndarray(video.test_pattern_frame(number, 96, 48, "index"), format="rgb24")
            frame = frame.reformat(format="yuv420p")
            frame.pts = time_ms
            mux(stream.encode(frame))
        mux(stream.encode(None))


def test_variable_frame_rate_is_conformed_to_the_nominal_grid(tmp_path):
    path = tmp_path / "vfr.mp4"
    write_vfr_clip(path)
    info = video.probe(path)
    assert info.variable_frame_rate
    assert info.fps == Fraction(24)  # 12 frames in 0.5 s
    # Grid times i/24 s = 0, 41.7, 83.3, 125, 166.7, ... ms; frame i shows the last
    # frame stamped at or before t_i + half a frame: 125 ms repeats the 83 ms frame,
    # 167 ms is replaced by 180 ms in the same slot, 400 ms by 417 ms, and the last
    # frame is on screen until 500 ms, so it fills two slots.
    expected = [0, 1, 2, 2, 4, 5, 6, 7, 8, 9, 11, 11]
    assert info.frame_count == len(expected)
    frames = list(video.iter_frames(path, 0, info.frame_count))
    assert [bar_index(f) for f in frames] == expected
    assert frames[2] is not frames[3]  # a repeated frame is its own array
    assert [bar_index(f) for f in video.iter_frames(path, 3, 4)] == expected[3:7]
    picked = video.read_frames(path, [10, 3, 11])
    assert {i: bar_index(f) for i, f in picked.items()} == {3: 2, 10: 11, 11: 11}


@pytest.mark.parametrize(
    "codec,name,size",
    [
        ("hevc", "clip.mp4", (96, 48)),
        ("prores", "clip.mov", (96, 48)),
        ("dnxhd", "clip.mov", (256, 128)),  # DNxHR's smallest frame is 256x120
        ("vp9", "clip.webm", (96, 48)),
        ("mjpeg", "clip.avi", (96, 48)),
        ("h264", "clip.mkv", (97, 61)),
    ],
)
def test_decodes_each_codec(tmp_path, codec, name, size):
    width, height = size
    path = video.make_test_clip(tmp_path / name, frames=14, width=width, height=height, codec=codec, pattern="index")
    info = video.probe(path)
    assert info.codec == codec  # the names make_test_clip takes are FFmpeg's decoder names
    assert (info.width, info.height, info.frame_count, info.fps) == (width, height, 14, Fraction(24))
    assert info.has_audio
    assert [bar_index(f) for f in video.iter_frames(path, 9, 5)] == [9, 10, 11, 12, 13]
    assert bar_index(video.read_frames(path, [13])[13]) == 13


def test_mpeg_ts_seeks_by_decode_time_from_a_nonzero_start(tmp_path):
    # MPEG-TS starts at 1.4 s and finds keyframes by decode time, which B-frames put before presentation time.
    path = video.make_test_clip(tmp_path / "broadcast.ts", frames=40, width=96, height=48, pattern="index")
    with av.open(str(path)) as container:
        assert container.streams.video[0].start_time > 0
    info = video.probe(path)
    assert (info.frame_count, info.fps, info.has_audio) == (40, Fraction(24), True)
    assert [bar_index(f) for f in video.iter_frames(path, 0, 40)] == list(range(40))
    assert [bar_index(f) for f in video.iter_frames(path, 24, 5)] == [24, 25, 26, 27, 28]
    picked = video.read_frames(path, [36, 12, 0, 25])
    assert {i: bar_index(f) for i, f in picked.items()} == {0: 0, 12: 12, 25: 25, 36: 36}


def test_a_raw_stream_without_timestamps_is_counted(tmp_path):
    # A bare .h264 elementary stream has no container timestamps: frames are numbered as decoded.
    path = tmp_path / "camera.h264"
    with av.open(str(path), "w", format="h264") as container:
        stream = container.add_stream("libx264", rate=Fraction(25), options={"g": "10"})
        stream.width, stream.height, stream.pix_fmt = 96, 48, "yuv420p"
        for number in range(20):
            frame = av.VideoFrame.from_ndarray(video.test_pattern_frame(number, 96, 48, "index"), format="rgb24")
            frame = frame.reformat(format="yuv420p")
            frame.pts = number
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    info = video.probe(path)
    assert (info.frame_count, info.fps) == (20, Fraction(25))
    assert [bar_index(f) for f in video.iter_frames(path, 13, 5)] == [13, 14, 15, 16, 17]
    assert {i: bar_index(f) for i, f in video.read_frames(path, [19, 2]).items()} == {2: 2, 19: 19}


@pytest.mark.parametrize("fps", [NTSC, FILM])
def test_fractional_rates_stay_exact_in_a_millisecond_time_base(tmp_path, fps):
    # Matroska stores times in ms, so i * 1001/30000 s is rounded; indices must not drift.
    path = video.make_test_clip(tmp_path / "ntsc.mkv", frames=30, fps=fps, pattern="index", audio=False)
    info = video.probe(path)
    assert info.fps == fps and info.frame_count == 30 and not info.variable_frame_rate
    assert [bar_index(f) for f in video.iter_frames(path, 0, 30)] == list(range(30))


# ---------------------------------------------------------------------------
# Writing


@pytest.mark.parametrize(
    "codec,suffix,size,fps,source_suffix",
    [
        ("h264", ".mp4", (96, 64), Fraction(24), ".mp4"),
        ("prores", ".mov", (96, 64), NTSC, ".mp4"),
        ("h264", ".mp4", (97, 61), NTSC, ".mov"),
        ("prores", ".mov", (97, 61), FILM, ".mov"),
        ("h264", ".mov", (64, 48), FILM, ".mp4"),
    ],
)
def test_round_trip_keeps_count_rate_size_and_audio(tmp_path, codec, suffix, size, fps, source_suffix):
    width, height = size
    source = video.make_test_clip(
        tmp_path / f"source{source_suffix}", frames=30, width=width, height=height, fps=fps, pattern="index"
    )
    start, count = 5, 20
    frames = list(video.iter_frames(source, start, count))
    output = tmp_path / f"edit{suffix}"
    span = (source, float(start / fps), float(count / fps))
    with video.VideoWriter(
        output, fps=fps, width=width, height=height, codec=codec, audio_source=span, expected_frames=count
    ) as writer:
        for frame in frames:
            writer.write(frame)

    assert folder_names(tmp_path) == {source.name, output.name}  # no temporary file left
    assert output.stat().st_mode & 0o777 == source.stat().st_mode & 0o777  # not the temp file's 0600
    info = video.probe(output)
    assert (info.width, info.height, info.fps, info.frame_count) == (width, height, fps, count)
    assert info.codec == {"h264": "h264", "prores": "prores"}[codec]
    if codec == "prores":
        assert info.pix_fmt == "yuv422p10le"
    else:
        assert info.pix_fmt == ("yuv444p" if width % 2 or height % 2 else "yuv420p")
    assert [bar_index(f) for f in video.iter_frames(output, 0, count)] == list(range(start, start + count))

    assert info.has_audio and info.audio_sample_rate == 48000
    assert audio_seconds(output) == pytest.approx(count / fps, abs=1024 / 48000)  # one AAC frame
    # The audio is the source's 440 Hz tone from the range's start, not from 0.
    samples, rate = decoded_audio(output)
    t = np.arange(samples.size) / rate + float(start / fps)
    tone = 0.3 * np.sin(2 * np.pi * 440 * t)
    middle = slice(2048, samples.size - 2048)
    assert np.corrcoef(samples[middle], tone[middle])[0, 1] > 0.99


@pytest.mark.parametrize("start", [0.3, 2.6])  # 2.6 s: far enough in that the audio is sought, not read from 0
def test_pcm_audio_is_cut_sample_accurately(tmp_path, start):
    source = video.make_test_clip(tmp_path / "source.mov", frames=72, width=32, height=16, codec="prores")
    output = tmp_path / "edit.mov"
    duration = 0.25
    span = (source, start, duration)
    with video.VideoWriter(output, fps=Fraction(24), width=32, height=16, codec="prores", audio_source=span) as writer:
        for frame in video.iter_frames(source, round(start * 24), 6):
            writer.write(frame)
    samples, rate = decoded_audio(output)
    assert samples.size == round(duration * rate)
    tone = 0.3 * np.sin(2 * np.pi * 440 * (np.arange(samples.size) / rate + start))
    assert np.abs(samples - tone).max() < 1e-3  # 16-bit PCM: only quantisation differs


def test_audio_shorter_than_the_span_is_padded_with_silence(tmp_path):
    source = video.make_test_clip(tmp_path / "source.mov", frames=12, codec="prores")  # 0.5 s of tone
    output = tmp_path / "edit.mov"
    span = (source, 0.25, 0.5)
    with video.VideoWriter(output, fps=Fraction(24), width=96, height=64, codec="prores", audio_source=span) as writer:
        for frame in list(video.iter_frames(source, 0, 12)):
            writer.write(frame)
    samples, rate = decoded_audio(output)
    assert samples.size == rate // 2
    assert np.abs(samples[: rate // 8]).max() > 0.2  # tone while the source lasts
    assert np.abs(samples[rate // 4 + 8 :]).max() == 0  # then silence


def test_a_source_without_audio_gives_an_output_without_audio(tmp_path, index_clip):
    output = tmp_path / "silent.mp4"
    span = (index_clip, 0.0, 0.25)
    with video.VideoWriter(output, fps=Fraction(24), width=96, height=48, audio_source=span) as writer:
        for frame in video.iter_frames(index_clip, 0, 6):
            writer.write(frame)
    assert not video.probe(output).has_audio


def test_a_float_rate_means_the_common_rate(tmp_path):
    output = tmp_path / "ntsc.mov"
    with video.VideoWriter(output, fps=29.97, width=32, height=16, codec="prores", expected_frames=3) as writer:
        assert writer.fps == NTSC
        for _ in range(3):
            writer.write(np.zeros((16, 32, 3), np.uint8))
    assert video.probe(output).fps == NTSC


def test_writer_refuses_an_existing_output_unless_overwrite(tmp_path):
    output = tmp_path / "out.mp4"
    output.write_bytes(b"precious")
    with pytest.raises(OutputExistsError, match=r"out\.mp4: already exists"):
        video.VideoWriter(output, fps=Fraction(24), width=64, height=48)
    assert output.read_bytes() == b"precious"

    with video.VideoWriter(output, fps=Fraction(24), width=64, height=48, overwrite=True) as writer:
        writer.write(np.zeros((48, 64, 3), np.uint8))
    assert video.probe(output).frame_count == 1
    assert folder_names(tmp_path) == {"out.mp4"}


def test_writer_never_overwrites_its_audio_source(tmp_path):
    source = video.make_test_clip(tmp_path / "source.mp4", frames=4)
    with pytest.raises(OutputExistsError, match="is the input itself"):
        video.VideoWriter(
            source, fps=Fraction(24), width=96, height=64, overwrite=True, audio_source=(source, 0.0, 0.1)
        )


@pytest.mark.parametrize("error", [RuntimeError("model crashed"), KeyboardInterrupt(), EditCancelled("cancelled")])
def test_an_exception_inside_the_block_leaves_no_file(tmp_path, error):
    source = video.make_test_clip(tmp_path / "source.mp4", frames=6)
    output = tmp_path / "out.mp4"
    with pytest.raises(type(error)):
        span = (source, 0.0, 0.25)
        with video.VideoWriter(output, fps=Fraction(24), width=96, height=64, audio_source=span) as writer:
            for frame in video.iter_frames(source, 0, 3):
                writer.write(frame)
            assert any(name.startswith(".out.partial-") for name in folder_names(tmp_path))
            raise error
    assert folder_names(tmp_path) == {"source.mp4"}


def test_an_exception_keeps_the_old_output_when_overwriting(tmp_path):
    output = tmp_path / "out.mp4"
    output.write_bytes(b"previous render")
    with pytest.raises(RuntimeError):
        with video.VideoWriter(output, fps=Fraction(24), width=64, height=48, overwrite=True) as writer:
            writer.write(np.zeros((48, 64, 3), np.uint8))
            raise RuntimeError("boom")
    assert output.read_bytes() == b"previous render"
    assert folder_names(tmp_path) == {"out.mp4"}


def test_no_frames_at_all_leaves_no_file(tmp_path):
    with pytest.raises(MediaError, match=r"empty\.mp4: no frames were written"):
        with video.VideoWriter(tmp_path / "empty.mp4", fps=Fraction(24), width=64, height=48):
            pass
    assert folder_names(tmp_path) == set()


def test_too_few_frames_leaves_no_file(tmp_path):
    output = tmp_path / "short.mov"
    with pytest.raises(MediaError, match=r"short\.mov: got 2 frames, expected 3"):
        with video.VideoWriter(output, fps=NTSC, width=64, height=48, codec="prores", expected_frames=3) as writer:
            writer.write(np.zeros((48, 64, 3), np.uint8))
            writer.write(np.zeros((48, 64, 3), np.uint8))
    assert folder_names(tmp_path) == set()


def test_writer_rejects_bad_arguments_without_touching_the_folder(tmp_path):
    with pytest.raises(MediaError, match="does not exist"):
        video.VideoWriter(tmp_path / "no" / "such" / "out.mp4", fps=Fraction(24), width=64, height=48)
    with pytest.raises(InvalidInputError, match=r"prores output must end in \.mov"):
        video.VideoWriter(tmp_path / "out.mp4", fps=Fraction(24), width=64, height=48, codec="prores")
    with pytest.raises(InvalidInputError, match="codec"):
        video.VideoWriter(tmp_path / "out.mp4", fps=Fraction(24), width=64, height=48, codec="av1")
    for fps in (0, -24, float("nan"), None):
        with pytest.raises(InvalidInputError, match="fps must be"):
            video.VideoWriter(tmp_path / "out.mp4", fps=fps, width=64, height=48)
    with pytest.raises(InvalidInputError, match="width must be a positive integer"):
        video.VideoWriter(tmp_path / "out.mp4", fps=Fraction(24), width=0, height=48)
    with pytest.raises(MediaError, match=r"gone\.mp4: no such file"):
        span = (tmp_path / "gone.mp4", 0.0, 1.0)
        video.VideoWriter(tmp_path / "out.mp4", fps=Fraction(24), width=64, height=48, audio_source=span)
    with pytest.raises(InvalidInputError, match="48x64x3 uint8"):
        with video.VideoWriter(tmp_path / "out.mp4", fps=Fraction(24), width=64, height=48) as writer:
            writer.write(np.zeros((64, 48, 3), np.uint8))
    assert folder_names(tmp_path) == set()


# ---------------------------------------------------------------------------
# Model sizes and resizing


@pytest.mark.parametrize(
    "size,kwargs,expected",
    [
        ((1920, 1080), {}, (512, 320)),  # 288 = 4.5 x 64: halves round up
        ((1080, 1920), {}, (320, 512)),
        ((1280, 720), {}, (512, 320)),
        ((640, 480), {}, (512, 384)),
        ((512, 512), {}, (512, 512)),
        ((1000, 10), {}, (512, 64)),  # never below one multiple
        ((3, 2), {}, (512, 320)),  # tiny inputs scale up
        ((1, 1), {}, (512, 512)),
        ((1920, 1080), {"multiple": 8}, (512, 288)),
        ((1000, 333), {"multiple": 8}, (512, 168)),  # 170.5 -> 21.3 x 8 -> 168
        ((97, 61), {"long_side": 96, "multiple": 8}, (96, 64)),  # 60.4 -> 64
        ((1920, 1080), {"long_side": 500}, (512, 256)),  # long side rounds too: 500 -> 512; 281 -> 256
    ],
)
def test_model_size(size, kwargs, expected):
    assert video.model_size(*size, **kwargs) == expected


@pytest.mark.parametrize("bad", [(0, 10), (10, -1), (10.5, 10), (True, 10)])
def test_model_size_rejects_nonsense(bad):
    with pytest.raises(InvalidInputError, match="positive integer"):
        video.model_size(*bad)
    with pytest.raises(InvalidInputError, match="multiple"):
        video.model_size(640, 480, multiple=0)


@hypothesis.given(
    width=st.integers(1, 8000),
    height=st.integers(1, 8000),
    long_side=st.integers(1, 2048),
    multiple=st.sampled_from([1, 8, 16, 64]),
)
def test_model_size_rounds_to_multiples_and_keeps_aspect(width, height, long_side, multiple):
    out_w, out_h = video.model_size(width, height, long_side=long_side, multiple=multiple)
    assert out_w % multiple == 0 and out_h % multiple == 0 and out_w >= multiple and out_h >= multiple
    long_out, short_out = (out_w, out_h) if width >= height else (out_h, out_w)
    assert abs(long_out - long_side) <= multiple / 2 or long_out == multiple
    ideal_short = min(width, height) * long_side / max(width, height)
    assert abs(short_out - ideal_short) <= multiple / 2 or short_out == multiple


def test_resize_frames_antialiases_and_keeps_matching_sizes():
    checker = (np.indices((64, 96)).sum(0) % 2 * 255).astype(np.uint8)
    frames = np.repeat(np.stack([checker] * 3, axis=-1)[None], 2, axis=0)
    small = video.resize_frames(frames, (24, 16))
    assert small.shape == (2, 16, 24, 3) and small.dtype == np.uint8
    # A 1-pixel checkerboard shrunk 4x is flat grey when antialiased (aliasing gives black/white).
    assert np.abs(small.astype(int) - 128).max() <= 3
    assert video.resize_frames(frames, (96, 64)) is frames
    flat = np.full((3, 10, 15, 3), (200, 30, 90), np.uint8)
    np.testing.assert_array_equal(video.resize_frames(flat, (40, 24)), np.full((3, 24, 40, 3), (200, 30, 90), np.uint8))
    with pytest.raises(InvalidInputError, match="NxHxWx3 uint8"):
        video.resize_frames(frames[0], (24, 16))


def test_test_clips_move_smoothly(tmp_path):
    # Flow-based metrics need motion: consecutive frames differ, but only a little.
    path = video.make_test_clip(tmp_path / "moving.mp4", frames=6, audio=False)
    frames = np.stack(list(video.iter_frames(path, 0, 6))).astype(int)
    steps = np.abs(np.diff(frames, axis=0)).mean(axis=(1, 2, 3))
    assert (steps > 1).all() and (steps < 40).all()
    with pytest.raises(InvalidInputError, match="DNxHR needs at least 256x120"):
        video.make_test_clip(tmp_path / "small.mov", codec="dnxhd")
