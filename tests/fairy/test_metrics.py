"""fairy.metrics: warp error on synthetic moving clips (real OpenCV flow)."""

from __future__ import annotations

import builtins
import importlib

import numpy as np
import pytest

from fairy import metrics, video


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> np.ndarray:
    # Decoded from a real encode, as an edit's input would be.
    clip = video.make_test_clip(tmp_path_factory.mktemp("metrics") / "moving.mp4", frames=8, audio=False)
    return np.stack(list(video.iter_frames(clip, 0, 8)))


def smooth_texture(height: int, width: int, seed: int = 0) -> np.ndarray:
    """Blurred noise, HxW uint8: smooth enough for a polynomial-expansion flow to follow."""
    noise = np.random.default_rng(seed).normal(0, 1, (height, width))
    kernel = np.exp(-0.5 * (np.arange(-6, 7) / 2.0) ** 2)
    smooth = np.apply_along_axis(np.convolve, 0, noise, kernel, "same")
    smooth = np.apply_along_axis(np.convolve, 1, smooth, kernel, "same")
    return (128 + 50 * smooth / smooth.std()).clip(0, 255).astype(np.uint8)


def test_flow_follows_a_known_shift():
    texture = np.stack([smooth_texture(80, 120)] * 3, axis=-1)
    a = texture[10:74, 10:106]
    b = texture[10:74, 7:103]  # content moves 3 px right from a to b
    flow = metrics.flow_farneback(a, b)
    assert flow.shape == (64, 96, 2) and flow.dtype == np.float32
    centre = flow[16:-16, 16:-16]
    assert np.median(centre[..., 0]) == pytest.approx(3.0, abs=0.3)
    assert np.median(centre[..., 1]) == pytest.approx(0.0, abs=0.3)


def test_the_input_itself_has_a_small_warp_error(source):
    steady = metrics.warp_error(source, source)
    assert 0 <= steady < 0.01
    # A per-pixel colour change applied the same way to every frame stays consistent.
    inverted = metrics.warp_error(source, 255 - source)
    assert inverted == pytest.approx(steady, rel=0.2, abs=1e-3)


def test_flicker_noise_and_shuffling_raise_the_error(source):
    steady = metrics.warp_error(source, source)
    rng = np.random.default_rng(1)
    noisy = np.clip(source + rng.normal(0, 20, source.shape), 0, 255).astype(np.uint8)
    brightness = np.where(np.arange(8) % 2, 40, -40)[:, None, None, None]  # alternating frames
    flicker = np.clip(source.astype(int) + brightness, 0, 255).astype(np.uint8)
    shuffled = source[rng.permutation(8)]
    for edited in (noisy, flicker, shuffled):
        assert metrics.warp_error(source, edited) > 3 * steady


def test_pixels_hidden_in_the_next_frame_do_not_count():
    # A textured square moves 8 px right over a static background; the strip
    # of background it covers in frame 1 has no match there (occluded), so an
    # edit that paints that strip red in frame 0 is not penalised.
    background = np.stack([smooth_texture(64, 96)] * 3, axis=-1)

    def frame(x):
        image = background.copy()
        image[20:44, x : x + 24] = 255 - background[0:24, 40:64]
        return image

    source = np.stack([frame(30), frame(38)])
    painted = source.copy()
    painted[0, 20:44, 54:62] = (255, 0, 0)
    steady = metrics.warp_error(source, source)
    assert steady < 0.005
    assert metrics.warp_error(source, painted) - steady < 0.002  # unmasked, it adds ~0.03


def test_warp_error_checks_its_inputs(source):
    with pytest.raises(ValueError, match="same shape"):
        metrics.warp_error(source, source[:, :32])
    with pytest.raises(ValueError, match="same shape"):
        metrics.warp_error(source, source[:4])
    with pytest.raises(ValueError, match="NxHxWx3 uint8"):
        metrics.warp_error(source.astype(np.float32), source)
    with pytest.raises(ValueError, match="at least 2 frames"):
        metrics.warp_error(source[:1], source[:1])
    with pytest.raises(ValueError, match="farneback"):
        metrics.warp_error(source, source, flow="raft")


def test_missing_opencv_names_the_extra(monkeypatch):
    real_import = builtins.__import__

    def no_cv2(name, *args, **kwargs):
        if name == "cv2":
            raise ImportError("No module named 'cv2'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_cv2)
    fresh = importlib.reload(metrics)  # importing the module itself must not need OpenCV
    frames = np.zeros((2, 8, 8, 3), np.uint8)
    with pytest.raises(ImportError, match=r"fairy-editor\[metrics\]"):
        fresh.warp_error(frames, frames)


def test_circular_std_degrees_wraps_around_and_skips_unmeasurable_frames():
    from fairy.metrics import circular_std_degrees

    assert circular_std_degrees([120.0, 120.0, float("nan"), 120.0]) == pytest.approx(0.0, abs=1e-4)
    # 350 and 10 degrees are 20 apart across 0, not 340: the spread of +-10 degrees.
    assert circular_std_degrees([350.0, 10.0]) == pytest.approx(circular_std_degrees([170.0, 190.0]), rel=1e-9)
    assert 9.5 < circular_std_degrees([350.0, 10.0]) < 10.5
    assert np.isnan(circular_std_degrees([42.0, float("nan")]))
