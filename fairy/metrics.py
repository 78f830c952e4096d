"""Temporal-consistency metrics for edited videos.

``warp_error`` is the warp error of Lai et al. 2018 ("Learning Blind Video
Temporal Consistency", eq. 6), the metric TokenFlow and Fairy report. The
papers compute flow with FlowNet2 or RAFT; here it is OpenCV's Farneback
(``cv2.calcOpticalFlowFarneback``), so absolute values differ from published
tables: use it to compare edits of the same clip, not against the papers.

OpenCV is an optional dependency: ``pip install "fairy-editor[metrics]"``.
"""

from __future__ import annotations

import numpy as np

__all__ = ["circular_std_degrees", "flow_farneback", "warp_error"]

# Farneback settings (OpenCV's documented example values); a 5-level pyramid
# follows motions of tens of pixels at 512 px.
_FARNEBACK = dict(pyr_scale=0.5, levels=5, winsize=15, iterations=3, poly_n=5, poly_sigma=1.2, flags=0)


def _cv2():
    try:
        import cv2
    except ImportError as exc:
        raise ImportError(
            'fairy.metrics needs OpenCV for optical flow: pip install "fairy-editor[metrics]"'
        ) from exc
    return cv2


def _check_frames(name: str, frames) -> np.ndarray:
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"{name} must be an NxHxWx3 uint8 array, got shape {frames.shape} of {frames.dtype}")
    return frames


def flow_farneback(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Dense optical flow from RGB frame ``a`` to ``b`` (HxWx3 uint8): HxWx2 float32 (dx, dy).

    ``a[y, x]`` shows the same point as ``b[y + dy, x + dx]``.
    """
    cv2 = _cv2()
    if a.shape != b.shape or a.ndim != 3 or a.shape[-1] != 3:
        raise ValueError(f"flow needs two HxWx3 frames of the same shape, got {a.shape} and {b.shape}")
    gray_a = cv2.cvtColor(np.ascontiguousarray(a), cv2.COLOR_RGB2GRAY)
    gray_b = cv2.cvtColor(np.ascontiguousarray(b), cv2.COLOR_RGB2GRAY)
    return cv2.calcOpticalFlowFarneback(gray_a, gray_b, None, **_FARNEBACK)


def _sample(image: np.ndarray, flow: np.ndarray) -> np.ndarray:
    """``image`` looked up at (x, y) + flow, bilinear (backward warping)."""
    cv2 = _cv2()
    height, width = flow.shape[:2]
    grid_x, grid_y = np.meshgrid(np.arange(width, dtype=np.float32), np.arange(height, dtype=np.float32))
    map_x = grid_x + flow[..., 0]
    map_y = grid_y + flow[..., 1]
    return cv2.remap(image, map_x, map_y, interpolation=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def _valid_mask(forward: np.ndarray, backward: np.ndarray) -> np.ndarray:
    """Pixels of frame t whose motion to t+1 can be trusted (Lai et al., after Ruder et al. 2016).

    A pixel is dropped when forward and backward flow disagree (occlusion),
    when it sits on a motion boundary, or when its flow leaves the frame.
    """
    backward_at_target = _sample(backward, forward)  # backward flow where each pixel lands in t+1
    round_trip = forward + backward_at_target
    occluded = (round_trip**2).sum(-1) > 0.01 * ((forward**2).sum(-1) + (backward_at_target**2).sum(-1)) + 0.5

    du_dy, du_dx = np.gradient(forward[..., 0])
    dv_dy, dv_dx = np.gradient(forward[..., 1])
    boundary = du_dx**2 + du_dy**2 + dv_dx**2 + dv_dy**2 > 0.01 * (forward**2).sum(-1) + 0.002

    height, width = forward.shape[:2]
    grid_x, grid_y = np.meshgrid(np.arange(width), np.arange(height))
    target_x = grid_x + forward[..., 0]
    target_y = grid_y + forward[..., 1]
    outside = (target_x < 0) | (target_x > width - 1) | (target_y < 0) | (target_y > height - 1)
    return ~(occluded | boundary | outside)


def warp_error(source_frames: np.ndarray, edited_frames: np.ndarray, *, flow: str = "farneback") -> float:
    """Warp error of ``edited_frames`` along the motion of ``source_frames`` (lower is steadier).

    For each consecutive pair (t, t+1) of the INPUT video: forward and backward
    Farneback flow; a mask of trusted pixels (forward-backward consistent,
    ``|fw + bw_warped|^2 <= 0.01 (|fw|^2 + |bw_warped|^2) + 0.5``, off motion
    boundaries, landing inside the frame); the edited frame t+1 warped onto t
    with ``cv2.remap``; the error is the squared RGB distance (images in
    [0, 1]) averaged over trusted pixels (Lai et al. eq. 6). The result is the
    mean over pairs; pairs with no trusted pixel are skipped, and NaN is
    returned when no pair has one.

    Both inputs are NxHxWx3 uint8 with the same shape and N >= 2.
    """
    if flow != "farneback":
        raise ValueError(f'flow must be "farneback" (the only method available), got {flow!r}')
    source = _check_frames("source_frames", source_frames)
    edited = _check_frames("edited_frames", edited_frames)
    if source.shape != edited.shape:
        raise ValueError(
            f"source_frames and edited_frames must have the same shape, got {source.shape} and {edited.shape}; "
            "resize the edit to the source size first"
        )
    if source.shape[0] < 2:
        raise ValueError(f"warp error needs at least 2 frames, got {source.shape[0]}")

    errors = []
    for t in range(source.shape[0] - 1):
        forward = flow_farneback(source[t], source[t + 1])
        backward = flow_farneback(source[t + 1], source[t])
        valid = _valid_mask(forward, backward)
        count = int(valid.sum())
        if count == 0:
            continue
        edited_t = edited[t].astype(np.float32) / 255.0
        warped = _sample(edited[t + 1].astype(np.float32) / 255.0, forward)
        squared = ((warped - edited_t) ** 2).sum(-1)
        errors.append(float(squared[valid].sum() / count))
    return float(np.mean(errors)) if errors else float("nan")


def circular_std_degrees(angles) -> float:
    """Circular standard deviation (degrees) of ``angles`` (degrees); NaN entries (no measurable angle) are left out.

    How much an ambiguous edit's answer varies over a clip: for a hue rotation, the angle each frame took.
    NaN when fewer than two angles remain.
    """
    angles = np.asarray(angles, dtype=np.float64)
    angles = angles[np.isfinite(angles)]
    if angles.size < 2:
        return float("nan")
    z = np.exp(1j * np.deg2rad(angles))
    length = min(1.0, float(np.abs(z.mean())))
    return float(np.rad2deg(np.sqrt(-2 * np.log(max(length, 1e-12)))))
