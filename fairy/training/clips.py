"""Moving test clips whose correct edit is known: camera moves over a photograph, and objects moving in it.

Every frame is the photograph seen through a moving virtual camera (an affine
map from frame pixels to photo pixels, sampled bilinearly), so the clip has
real texture and real motion, and its exact edit is the procedural edit
applied frame by frame. Used by the quality benchmark and by ``fairy demo``.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["MOTIONS", "camera_clip"]

MOTIONS = ("pan", "zoom", "rotate", "objects")


def _camera(motion: str, progress: float, photo_w: int, photo_h: int, width: int, height: int):
    """(centre x, centre y, photo pixels per frame pixel, rotation in radians) at ``progress`` in [0, 1]."""
    fit = 0.8 * min(photo_w / width, photo_h / height)  # the frame covers 80 % of the photo's limiting side
    cx, cy = photo_w / 2, photo_h / 2
    if motion in ("pan", "objects"):
        travel = photo_w - fit * width  # what is left of the photo's width
        return cx + (progress - 0.5) * 0.8 * travel, cy, fit, 0.0
    if motion == "zoom":
        return cx, cy, fit * (1.0 - 0.25 * progress), 0.0
    if motion == "rotate":
        return cx, cy, fit * 0.85, math.radians(8.0 * (progress - 0.5))
    raise ValueError(f"unknown motion {motion!r}: one of {', '.join(MOTIONS)}")


def camera_clip(photo: np.ndarray, motion: str, *, frames: int = 16, size: tuple[int, int] = (128, 96), seed: int = 0) -> np.ndarray:
    """``frames`` frames (``T x H x W x 3`` uint8) of ``motion`` over ``photo`` (``H x W x 3`` float in [0, 1]).

    ``objects`` is a pan with two discs crossing the frame in other directions
    (an occluding foreground moving against the background).
    """
    width, height = size
    image = torch.from_numpy(np.ascontiguousarray(photo.transpose(2, 0, 1))).float()[None]
    photo_h, photo_w = photo.shape[:2]
    ys, xs = torch.meshgrid(torch.arange(height, dtype=torch.float32) - height / 2 + 0.5,
                            torch.arange(width, dtype=torch.float32) - width / 2 + 0.5, indexing="ij")  # fmt: skip
    rng = np.random.default_rng(seed)
    discs = [(rng.uniform(0, 1, 3), rng.uniform(0.1, 0.16) * height, rng.uniform(0, 1, 2), rng.uniform(-0.6, 0.6, 2)) for _ in range(2)]
    out = []
    for t in range(frames):
        progress = t / max(frames - 1, 1)
        cx, cy, scale, angle = _camera(motion, progress, photo_w, photo_h, width, height)
        c, s = math.cos(angle), math.sin(angle)
        px = cx + scale * (c * xs - s * ys)
        py = cy + scale * (s * xs + c * ys)
        grid = torch.stack([px / photo_w * 2 - 1, py / photo_h * 2 - 1], dim=-1)[None]
        # Antialias: sample from a copy blurred to the frame's pixel size.
        frame = F.grid_sample(_prefiltered(image, scale), grid, mode="bilinear", padding_mode="reflection", align_corners=False)[0]
        frame = frame.permute(1, 2, 0).numpy()
        if motion == "objects":
            for colour, radius, start, velocity in discs:
                centre = (start + velocity * progress) * np.array([width, height])
                inside = (xs.numpy() + width / 2 - centre[0]) ** 2 + (ys.numpy() + height / 2 - centre[1]) ** 2 < radius**2
                frame = np.where(inside[..., None], colour * (0.8 + 0.2 * ((ys.numpy() + height / 2) / height))[..., None], frame)
        out.append((np.clip(frame, 0, 1) * 255).round().astype(np.uint8))
    return np.stack(out)


def _prefiltered(image: torch.Tensor, scale: float) -> torch.Tensor:
    if scale <= 1.0:
        return image
    h, w = image.shape[-2:]
    small = F.interpolate(image, size=(max(1, round(h / scale)), max(1, round(w / scale))), mode="bilinear", antialias=True)
    return F.interpolate(small, size=(h, w), mode="bilinear", align_corners=False)
