"""Anchored training with a second ambiguous edit whose answer varies across the picture (an experiment, not the recipe).

    python bench/train_patchwork.py train [fairy train options]     # fairy train, the patchwork edit among the procedural edits
    python bench/train_patchwork.py bench [bench_consistency options]  # bench_consistency, --edits may name patchwork

The palette edit's answer is one angle for the whole picture, which a frame can
read from its anchors with content-blind attention (the plain average of their
values). The warp error that anchors leave on it is local: each frame's own
noise tints regions its own way (docs/method.md). "Patchwork" is a hue rotation
by an angle that varies smoothly across the picture (the palette's angle plus
three random waves of 20 to 40 degrees, 0.7 to 2.5 cycles a picture), drawn
anew for every training pair and fixed to the scene, so that in anchored
training a frame can take its answer from its anchors only by finding where
each region of itself lies in them: a training signal for attention that
tracks correspondences. Edits and the recipe are otherwise unchanged; the
edit exists only inside this script's runs.
"""

from __future__ import annotations

import pathlib
import sys

import numpy as np

from fairy.training import data, edits

_WAVES = 3
_WAVE_DEGREES = (20.0, 40.0)
_WAVE_CYCLES = (0.7, 2.5)  # per picture (its longer side)


def patchwork_angles(height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """One answer: an ``H x W`` field of hue angles (degrees), smooth, in picture coordinates."""
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32) / max(height, width)
    field = np.full((height, width), rng.uniform(*edits.PALETTE_ANGLES_DEGREES), np.float32)
    for _ in range(_WAVES):
        cycles, direction = rng.uniform(*_WAVE_CYCLES), rng.uniform(0, 2 * np.pi)
        amplitude, phase = rng.uniform(*_WAVE_DEGREES), rng.uniform(0, 2 * np.pi)
        field += amplitude * np.cos(2 * np.pi * cycles * (np.cos(direction) * xs + np.sin(direction) * ys) + phase)
    return field


def _patchwork(image, rng=None):
    rng = rng if rng is not None else np.random.default_rng()
    return edits.rotate_hue(image, patchwork_angles(*image.shape[:2], rng))


PATCHWORK = edits.Edit("patchwork", ("give it a patchwork of new colors", "paint it in patches of new colour"), _patchwork,
                       ambiguous=True)  # fmt: skip


def install() -> None:
    """Make ``patchwork`` one of the procedural edits for this process: drawn by ``builtin:procedural`` (its
    share of the ambiguous examples as the palette's), found by name and instruction."""
    if PATCHWORK in edits.EDITS:
        return
    edits.EDITS = edits.EDITS + (PATCHWORK,)
    opened = data.open_dataset

    def open_dataset(source: str, *, size: int, seed: int = 0, ambiguous_share: float | None = None):
        if source != "builtin:procedural":
            return opened(source, size=size, seed=seed, ambiguous_share=ambiguous_share)
        return data.ProceduralEdits(size, seed=seed, ambiguous_share=ambiguous_share, edits=edits.EDITS)

    data.open_dataset = open_dataset


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] not in ("train", "bench"):
        print(__doc__.strip().splitlines()[2].strip(), file=sys.stderr)
        print(__doc__.strip().splitlines()[3].strip(), file=sys.stderr)
        return 2
    install()
    if argv[0] == "train":
        from fairy.cli import main as fairy_main

        return fairy_main(["train", *argv[1:]])
    sys.path.insert(0, str(pathlib.Path(__file__).parent))
    import bench_consistency

    bench_consistency.main(argv[1:])
    return 0


if __name__ == "__main__":
    sys.exit(main())
