"""Fairy's equivariant augmentation: one random affine transform for a source and its edit.

The paper finetunes the editor on pairs ``(g(source), g(target))`` for a random
affine ``g`` (rotation within 5 degrees, translation within 5 % of each side,
scale 0.95 to 1.05, shear within 5 degrees on both axes), then resizes (to 288)
and random-crops (256): the editor learns that transforming its input
transforms its output the same way, which is what a moving camera does to a
clip. Here the pair is stacked on one tensor before anything random is drawn,
so both images always get the same transform (as diffusers' InstructPix2Pix
training script does for its crops and flips).

Pixels the transform pulls in from outside the image are reflected from inside
it, so every procedural edit still maps the transformed source exactly to the
transformed target (a black fill would not: the negative of black is white).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["AffineRanges", "AffineParams", "sample_affine", "affine_matrix", "apply_affine", "augment_pair", "resize_for_crops", "RESIZE_RATIO"]

# The paper resizes to 288 and crops 256: the crop is this fraction of the resized side.
RESIZE_RATIO = 288 / 256


@dataclasses.dataclass(frozen=True)
class AffineRanges:
    """The paper's ranges (all symmetric about the identity)."""

    rotation_degrees: float = 5.0
    translation_fraction: float = 0.05
    scale: tuple[float, float] = (0.95, 1.05)
    shear_degrees: float = 5.0


@dataclasses.dataclass(frozen=True)
class AffineParams:
    rotation: float  # degrees, counter-clockwise
    translate_x: float  # fraction of the width
    translate_y: float  # fraction of the height
    scale: float
    shear_x: float  # degrees
    shear_y: float  # degrees


def sample_affine(rng: np.random.Generator, ranges: AffineRanges = AffineRanges()) -> AffineParams:
    """Draw one transform uniformly within ``ranges``."""
    return AffineParams(
        rotation=float(rng.uniform(-ranges.rotation_degrees, ranges.rotation_degrees)),
        translate_x=float(rng.uniform(-ranges.translation_fraction, ranges.translation_fraction)),
        translate_y=float(rng.uniform(-ranges.translation_fraction, ranges.translation_fraction)),
        scale=float(rng.uniform(*ranges.scale)),
        shear_x=float(rng.uniform(-ranges.shear_degrees, ranges.shear_degrees)),
        shear_y=float(rng.uniform(-ranges.shear_degrees, ranges.shear_degrees)),
    )


def affine_matrix(params: AffineParams, width: int, height: int) -> np.ndarray:
    """The 3x3 map from input pixel coordinates (x right, y down, origin at the centre) to output ones."""
    r = math.radians(params.rotation)
    rotation = np.array([[math.cos(r), math.sin(r), 0], [-math.sin(r), math.cos(r), 0], [0, 0, 1]])
    shear = np.array([[1, math.tan(math.radians(params.shear_x)), 0], [math.tan(math.radians(params.shear_y)), 1, 0], [0, 0, 1]])
    scale = np.diag([params.scale, params.scale, 1.0])
    translate = np.array([[1, 0, params.translate_x * width], [0, 1, params.translate_y * height], [0, 0, 1]])
    return translate @ rotation @ shear @ scale


def apply_affine(images: torch.Tensor, params: AffineParams) -> torch.Tensor:
    """Warp ``N x C x H x W`` images, all by the same transform (bilinear, reflected borders)."""
    n, _, height, width = images.shape
    forward = affine_matrix(params, width, height)
    inverse = np.linalg.inv(forward)  # grid_sample looks up, for each output pixel, where it came from
    # grid_sample works in normalised coordinates ([-1, 1] across each side, align_corners=False).
    to_pixels = np.diag([width / 2, height / 2, 1.0])
    to_normalised = np.diag([2 / width, 2 / height, 1.0])
    theta = (to_normalised @ inverse @ to_pixels)[:2]
    theta = torch.as_tensor(theta, dtype=images.dtype).unsqueeze(0).expand(n, 2, 3)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


def resize_for_crops(images: torch.Tensor, resolution: int, ratio: float = RESIZE_RATIO) -> torch.Tensor:
    """``images`` (``N x C x H x W``) resized together, shorter side to ``resolution x ratio`` (by default
    288/256, the paper's 288 for 256 crops), so that a ``resolution``-square crop has room to move."""
    resized = round(resolution * ratio)
    height, width = images.shape[-2:]
    factor = resized / min(height, width)
    size = (max(resized, round(height * factor)), max(resized, round(width * factor)))
    if size == (height, width):
        return images
    return F.interpolate(images, size=size, mode="bilinear", antialias=factor < 1, align_corners=False)


def augment_pair(
    source: torch.Tensor,
    target: torch.Tensor,
    resolution: int,
    rng: np.random.Generator,
    *,
    equivariant: bool = True,
    ranges: AffineRanges = AffineRanges(),
) -> tuple[torch.Tensor, torch.Tensor]:
    """One training view of a pair (``C x H x W`` each, same size): the same randomness for both.

    Equivariant: resize (shorter side to ``resolution x 288/256``), one random
    affine transform, then a random ``resolution``-square crop. Without: the
    resize and crop alone. Either way a random horizontal flip, as InstructPix2Pix trains.
    """
    if source.shape != target.shape:
        raise ValueError(f"source and target must have the same size, got {tuple(source.shape)} and {tuple(target.shape)}")
    pair = resize_for_crops(torch.stack([source, target]), resolution)
    size = pair.shape[-2:]
    if equivariant:
        pair = apply_affine(pair, sample_affine(rng, ranges))
    top = int(rng.integers(0, size[0] - resolution + 1))
    left = int(rng.integers(0, size[1] - resolution + 1))
    pair = pair[..., top : top + resolution, left : left + resolution]
    if rng.random() < 0.5:
        pair = pair.flip(-1)
    return pair[0].clamp(0, 1), pair[1].clamp(0, 1)
