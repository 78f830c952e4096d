"""The procedural edits the small model learns: exact functions of the source image.

Each edit maps an RGB image (``H x W x 3`` float32 in [0, 1]) to its one correct
result, so training data needs no human labels and evaluation compares with the
exact answer. Two kinds:

* deterministic edits (grayscale, invert, sepia, night, warm, cool, posterize):
  one right answer, they measure fidelity;
* the ambiguous edit (``palette``): a hue rotation by an angle drawn at random
  for every training pair, so it has many right answers. Edited frame by frame,
  each frame may pick its own angle and the clip flickers; with anchors every
  frame should take the anchors' angle. ``hue_rotation_angle`` measures which
  angle an output took.

Hue rotation turns the chroma plane of YIQ (a linear RGB transform, so the
rotation is exact and cheap) about the luma axis.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np

__all__ = [
    "Edit",
    "EDITS",
    "DETERMINISTIC_EDITS",
    "AMBIGUOUS_EDITS",
    "edit_by_name",
    "edit_for_instruction",
    "rotate_hue",
    "hue_rotation_angle",
]

_RGB_TO_YIQ = np.array(
    [[0.299, 0.587, 0.114], [0.595716, -0.274453, -0.321263], [0.211456, -0.522591, 0.311135]], dtype=np.float32
)
_YIQ_TO_RGB = np.linalg.inv(_RGB_TO_YIQ).astype(np.float32)
_SEPIA = np.array([[0.393, 0.769, 0.189], [0.349, 0.686, 0.168], [0.272, 0.534, 0.131]], dtype=np.float32)

# The ambiguous edit's angles: far enough from 0 that every answer is a visible change.
PALETTE_ANGLES_DEGREES = (60.0, 300.0)


@dataclasses.dataclass(frozen=True)
class Edit:
    """One procedural edit: its name, the instructions that ask for it, and how to compute it.

    ``apply(image, rng)`` returns the edited image; only ambiguous edits use ``rng``.
    ``instructions[0]`` is the canonical one (shown in docs/model.md, used by evaluation).
    """

    name: str
    instructions: tuple[str, ...]
    apply: Callable[[np.ndarray, np.random.Generator | None], np.ndarray]
    ambiguous: bool = False

    @property
    def instruction(self) -> str:
        return self.instructions[0]


def _luma(image: np.ndarray) -> np.ndarray:
    return image @ _RGB_TO_YIQ[0]


def _grayscale(image, rng=None):
    return np.repeat(_luma(image)[..., None], 3, axis=-1)


def _invert(image, rng=None):
    return 1.0 - image


def _sepia(image, rng=None):
    return np.clip(image @ _SEPIA.T, 0.0, 1.0)


def _night(image, rng=None):
    # Darker, gamma-crushed, blue-shifted: moonlight.
    return np.clip(0.45 * image**1.3 * np.array([0.55, 0.7, 1.25], dtype=np.float32) + np.float32(0.02), 0.0, 1.0)


def _warm(image, rng=None):
    return np.clip(image * np.array([1.05, 0.95, 0.7], dtype=np.float32) + np.array([0.12, 0.04, 0.0], dtype=np.float32), 0.0, 1.0)


def _cool(image, rng=None):
    return np.clip(image * np.array([0.7, 0.95, 1.05], dtype=np.float32) + np.array([0.0, 0.04, 0.12], dtype=np.float32), 0.0, 1.0)


def _posterize(image, rng=None):
    # Three levels a channel (0, 0.5, 1): flat poster colours.
    return np.round(np.clip(image, 0.0, 1.0) * 2.0) / 2.0


def rotate_hue(image: np.ndarray, degrees: float | np.ndarray) -> np.ndarray:
    """Rotate the hue of ``image`` by ``degrees`` (YIQ chroma rotation), clipped to [0, 1].

    ``degrees``: one angle, or one per pixel (an ``H x W`` array).
    """
    # One angle stays a 3x3 matrix product: the recipe's training data are made with it, bit for bit.
    if np.ndim(degrees) > 0:
        yiq = image.astype(np.float32) @ _RGB_TO_YIQ.T
        turn = np.exp(1j * np.deg2rad(np.asarray(degrees, dtype=np.float32))) * (yiq[..., 1] + 1j * yiq[..., 2])
        rotated = np.stack([yiq[..., 0], turn.real, turn.imag], axis=-1).astype(np.float32)
        return np.clip(rotated @ _YIQ_TO_RGB.T, 0.0, 1.0)
    theta = np.deg2rad(degrees)
    c, s = np.cos(theta), np.sin(theta)
    rotation = np.array([[1, 0, 0], [0, c, -s], [0, s, c]], dtype=np.float32)
    matrix = _YIQ_TO_RGB @ rotation @ _RGB_TO_YIQ
    return np.clip(image.astype(np.float32) @ matrix.T, 0.0, 1.0)


def _palette(image, rng=None):
    rng = rng if rng is not None else np.random.default_rng()
    return rotate_hue(image, float(rng.uniform(*PALETTE_ANGLES_DEGREES)))


def hue_rotation_angle(source: np.ndarray, edited: np.ndarray, *, min_chroma: float = 0.04) -> float:
    """The hue rotation (degrees, in [0, 360)) that best explains ``edited`` given ``source``.

    The circular mean of the per-pixel chroma angle difference in YIQ, weighted
    by both pixels' chroma and over pixels with chroma above ``min_chroma`` (the
    angle of a gray pixel means nothing). Images: ``H x W x 3``, uint8 or float in [0, 1].
    Returns NaN when no pixel has enough chroma.
    """
    src, out = (_as_float(x) @ _RGB_TO_YIQ.T for x in (source, edited))
    z_src = src[..., 1] + 1j * src[..., 2]
    z_out = out[..., 1] + 1j * out[..., 2]
    weight = np.minimum(np.abs(z_src), np.abs(z_out))
    keep = weight > min_chroma
    if not keep.any():
        return float("nan")
    turn = (z_out[keep] / np.abs(z_out[keep])) * np.conj(z_src[keep] / np.abs(z_src[keep]))
    return float(np.rad2deg(np.angle(np.sum(weight[keep] * turn))) % 360.0)


def _as_float(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    return image.astype(np.float32) / 255.0 if image.dtype == np.uint8 else image.astype(np.float32)


EDITS: tuple[Edit, ...] = (
    Edit("grayscale", ("make it black and white", "turn it grayscale", "remove the colour"), _grayscale),
    Edit("invert", ("invert the colors", "invert the colours", "make it a negative"), _invert),
    Edit("sepia", ("make it sepia", "give it an old sepia photo look"), _sepia),
    Edit("night", ("make it night", "turn day into night", "make it look like night time"), _night),
    Edit("warm", ("make it warmer", "give it a warm colour grade"), _warm),
    Edit("cool", ("make it cooler", "give it a cool colour grade"), _cool),
    Edit("posterize", ("posterize it", "make it a flat colour poster"), _posterize),
    Edit("palette", ("give it a new color palette", "give it a new colour palette", "change the colours"), _palette, ambiguous=True),
)
DETERMINISTIC_EDITS = tuple(e for e in EDITS if not e.ambiguous)
AMBIGUOUS_EDITS = tuple(e for e in EDITS if e.ambiguous)


def edit_by_name(name: str) -> Edit:
    for edit in EDITS:
        if edit.name == name:
            return edit
    raise ValueError(f"unknown edit {name!r}: the procedural edits are {', '.join(e.name for e in EDITS)}")


def edit_for_instruction(instruction: str) -> Edit | None:
    """The procedural edit an instruction asks for (case and surrounding space ignored), or None."""
    wanted = instruction.strip().lower()
    for edit in EDITS:
        if wanted in edit.instructions:
            return edit
    return None
