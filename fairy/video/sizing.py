"""Working sizes for a model and resizing frames to them."""

from __future__ import annotations


import numpy as np
from fairy_proto.v1.settings import LONG_SIDE_FALLBACK

from ..errors import InvalidInputError


# ---------------------------------------------------------------------------
# Model sizes and resizing


def model_size(width: int, height: int, long_side: int = LONG_SIDE_FALLBACK, multiple: int = 64) -> tuple[int, int]:
    """The (width, height) frames are edited at: longer side ``long_side``, aspect kept.

    Both sides are rounded to the nearest multiple of ``multiple`` (halves
    round up), and are at least ``multiple``. 1920x1080 at long side 640 -> (640, 384):
    1080 * 640 / 1920 = 360 = 5.625 * 64 rounds up to 384.
    """
    for name, value in (("width", width), ("height", height), ("long_side", long_side), ("multiple", multiple)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
            raise InvalidInputError(f"{name} must be a positive integer, got {value!r}")

    def nearest_multiple(numerator: int, denominator: int) -> int:
        # round(numerator / denominator / multiple) * multiple, halves up, exactly.
        steps = (2 * numerator + denominator * multiple) // (2 * denominator * multiple)
        return max(int(steps), 1) * multiple

    longer, shorter = max(width, height), min(width, height)
    long_out = nearest_multiple(long_side, 1)
    short_out = nearest_multiple(shorter * long_side, longer)
    return (long_out, short_out) if width >= height else (short_out, long_out)


def resize_frames(frames: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize NxHxWx3 uint8 frames to ``size`` = (width, height), antialiased bicubic.

    Returns ``frames`` itself when it already has that size.
    """
    if not isinstance(frames, np.ndarray) or frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        shape = getattr(frames, "shape", None)
        dtype = getattr(frames, "dtype", type(frames).__name__)
        raise InvalidInputError(f"frames must be an NxHxWx3 uint8 array, got shape {shape} of {dtype}")
    width, height = size
    if width <= 0 or height <= 0:
        raise InvalidInputError(f"size must be two positive integers (width, height), got {size!r}")
    if frames.shape[1:3] == (height, width):
        return frames

    import torch
    import torch.nn.functional as F

    out = np.empty((frames.shape[0], height, width, 3), dtype=np.uint8)
    chunk = 16  # bounds the temporary tensors for long clips
    with torch.no_grad():
        for begin in range(0, frames.shape[0], chunk):
            # NHWC bytes viewed as channels-last NCHW: torch's uint8 kernels
            # resize these directly, ~20x faster than going through float.
            batch = torch.from_numpy(frames[begin : begin + chunk]).permute(0, 3, 1, 2)
            try:
                resized = F.interpolate(batch, size=(height, width), mode="bicubic", antialias=True)
            except (RuntimeError, NotImplementedError):  # a torch without the uint8 kernels
                resized = F.interpolate(batch.float(), size=(height, width), mode="bicubic", antialias=True)
                resized = resized.round_().clamp_(0, 255).to(torch.uint8)  # bicubic overshoots
            out[begin : begin + chunk] = resized.permute(0, 2, 3, 1).numpy()
    return out
