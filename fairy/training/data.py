"""Training data for ``fairy train``: a folder of triplets, or procedural edits made on the fly.

A triplet folder (for finetuning a real editor on your own data) holds the
images anywhere under it and one ``metadata.jsonl`` whose lines name them::

    my-edits/
      metadata.jsonl
      source/0001.png
      edited/0001.png
      ...

    {"source": "source/0001.png", "instruction": "make it a watercolor painting", "edited": "edited/0001.png"}

Paths are relative to the folder; a source and its edit must have the same
size (any size: training resizes and crops them together). The whole folder is
checked before training starts, and a problem is reported as one line naming
the file and line.

``builtin:procedural`` needs no files: sources are random crops of the
scikit-image sample photographs that ship inside its wheel (training set
only; ``HELD_OUT_PHOTOS`` are never used for training), colourised grayscale
textures from the same wheel, and random procedural scenes; each gets a
random edit of ``fairy.training.edits`` computed exactly.
"""

from __future__ import annotations

import functools
import json
import pathlib
from collections.abc import Sequence

import numpy as np
import torch

from ..errors import InvalidInputError
from .edits import EDITS, Edit

__all__ = [
    "PROCEDURAL_DATA",
    "TRAIN_PHOTOS",
    "HELD_OUT_PHOTOS",
    "Example",
    "TripletFolder",
    "ProceduralEdits",
    "open_dataset",
    "load_photo",
]

PROCEDURAL_DATA = "builtin:procedural"
METADATA_FILE = "metadata.jsonl"

# scikit-image sample images that load without a download (their files are
# inside the wheel) and whose documentation states CC0, public domain or no known
# copyright restrictions (docs/model.md lists each); images without such a
# statement (the Middlebury motorcycle, moon, page, colorwheel) are not used.
TRAIN_PHOTOS = ("chelsea", "rocket", "hubble_deep_field", "immunohistochemistry", "retina")
HELD_OUT_PHOTOS = ("astronaut", "coffee")
_GRAY_TEXTURES = ("camera", "brick", "grass", "gravel", "coins", "clock", "text")

Example = tuple[torch.Tensor, torch.Tensor, str]  # source, edited (3 x H x W float in [0, 1]), instruction


@functools.lru_cache(maxsize=None)
def load_photo(name: str) -> np.ndarray:
    """A scikit-image sample image as ``H x W x 3`` float32 in [0, 1] (grayscale ones repeated)."""
    try:
        import skimage.data
    except ImportError:
        raise InvalidInputError('builtin:procedural data needs scikit-image: pip install "fairy-editor[train]"') from None
    image = np.asarray(getattr(skimage.data, name)())
    if image.dtype == bool:
        image = image.astype(np.float32)
    elif image.dtype != np.float32:
        image = image.astype(np.float32) / (255.0 if image.max() > 1 else 1.0)
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=-1)
    return np.ascontiguousarray(image[..., :3])


def _to_chw(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))).float()


class ProceduralEdits:
    """Endless (source, exact edit, instruction) examples; example ``i`` of seed ``s`` is always the same.

    Args:
        size: side of the square source images made (before augmentation).
        edits: the edits to draw from (default: all of them, uniformly).
        photos: the photographs to crop (default ``TRAIN_PHOTOS``).
    """

    def __init__(self, size: int, *, edits: Sequence[Edit] = EDITS, photos: Sequence[str] = TRAIN_PHOTOS, seed: int = 0,
                 ambiguous_share: float | None = None):
        if ambiguous_share is not None and not 0 <= ambiguous_share <= 1:
            raise InvalidInputError(f"the ambiguous edits' share must lie in [0, 1], got {ambiguous_share}")
        self.size = size
        self.edits = tuple(edits)
        self.ambiguous_share = ambiguous_share
        self._by_kind = (tuple(e for e in self.edits if not e.ambiguous), tuple(e for e in self.edits if e.ambiguous))
        self.photos = tuple(load_photo(p) for p in photos)
        self.textures = tuple(load_photo(t) for t in _GRAY_TEXTURES)
        self.seed = seed

    def __getitem__(self, index: int) -> Example:
        source, edit, target, instruction = self._draw(index)
        return _to_chw(source), _to_chw(target.astype(np.float32)), instruction

    def other_answer(self, index: int, rng: np.random.Generator) -> torch.Tensor | None:
        """Another right answer for example ``index`` (drawn with ``rng``) when its edit is ambiguous, else None."""
        source, edit, _, _ = self._draw(index)
        return _to_chw(edit.apply(source, rng).astype(np.float32)) if edit.ambiguous else None

    def _draw(self, index: int):
        rng = np.random.default_rng([self.seed, index])
        kind = rng.random()
        if kind < 0.5:
            source = _random_crop(self.photos[rng.integers(len(self.photos))], self.size, rng)
        elif kind < 0.7:
            source = _colourise(_random_crop(self.textures[rng.integers(len(self.textures))], self.size, rng), rng)
        else:
            source = random_scene(self.size, rng)
        if self.ambiguous_share is None:  # uniform over the edits
            edit = self.edits[rng.integers(len(self.edits))]
        else:
            deterministic, ambiguous = self._by_kind
            pool = ambiguous if (rng.random() < self.ambiguous_share and ambiguous) or not deterministic else deterministic
            edit = pool[rng.integers(len(pool))]
        target = edit.apply(source, rng)
        instruction = edit.instructions[rng.integers(len(edit.instructions))]
        return source, edit, target, instruction


def _random_crop(image: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """A random square window (a quarter of the shorter side up to all of it), resized to ``size``."""
    height, width = image.shape[:2]
    side = int(min(height, width) * rng.uniform(0.25, 1.0))
    top = int(rng.integers(0, height - side + 1))
    left = int(rng.integers(0, width - side + 1))
    window = torch.from_numpy(np.ascontiguousarray(image[top : top + side, left : left + side].transpose(2, 0, 1)))[None]
    resized = torch.nn.functional.interpolate(window, size=(size, size), mode="bilinear", antialias=side > size, align_corners=False)
    return resized[0].permute(1, 2, 0).clamp(0, 1).numpy()


def _colourise(gray: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Map a grayscale image through a random two-colour gradient (dark colour to light colour)."""
    dark, light = rng.uniform(0, 0.5, 3), rng.uniform(0.5, 1.0, 3)
    luma = gray[..., :1]
    return (dark + (light - dark) * luma).astype(np.float32)


def random_scene(size: int, rng: np.random.Generator) -> np.ndarray:
    """A procedural picture: a colour gradient sky, then random ellipses, boxes and stripes, a little grain."""
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32) / max(size - 1, 1)
    angle = rng.uniform(0, 2 * np.pi)
    ramp = (np.cos(angle) * (xs - 0.5) + np.sin(angle) * (ys - 0.5)) + 0.5
    a, b = rng.uniform(0, 1, 3), rng.uniform(0, 1, 3)
    image = a + (b - a) * np.clip(ramp, 0, 1)[..., None]
    for _ in range(int(rng.integers(3, 9))):
        colour = rng.uniform(0, 1, 3)
        cx, cy = rng.uniform(0, 1, 2)
        rx, ry = rng.uniform(0.05, 0.35, 2)
        shape = rng.integers(3)
        if shape == 0:
            mask = ((xs - cx) / rx) ** 2 + ((ys - cy) / ry) ** 2 < 1
        elif shape == 1:
            mask = (np.abs(xs - cx) < rx) & (np.abs(ys - cy) < ry)
        else:
            period = rng.uniform(0.05, 0.2)
            mask = (np.sin((xs * np.cos(angle + 1) + ys * np.sin(angle + 1)) * 2 * np.pi / period) > 0) & (np.abs(ys - cy) < ry)
        shade = 0.75 + 0.25 * (1 - ys)[..., None]  # light from above
        image = np.where(mask[..., None], colour * shade, image)
    image = image + rng.normal(0, 0.015, image.shape)
    return np.clip(image, 0, 1).astype(np.float32)


class TripletFolder:
    """The examples of a triplet folder (see the module doc), checked when opened."""

    def __init__(self, folder: str | pathlib.Path):
        self.folder = pathlib.Path(folder).expanduser()
        self.examples = _read_metadata(self.folder)

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, index: int) -> Example:
        source, edited, instruction = self.examples[index % len(self.examples)]
        return _to_chw(_read_image(source)), _to_chw(_read_image(edited)), instruction


def _read_image(path: pathlib.Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0


def _read_metadata(folder: pathlib.Path) -> list[tuple[pathlib.Path, pathlib.Path, str]]:
    from PIL import Image, UnidentifiedImageError

    if not folder.is_dir():
        raise InvalidInputError(f"training data folder not found: {folder}")
    metadata = folder / METADATA_FILE
    if not metadata.is_file():
        raise InvalidInputError(f"{folder} has no {METADATA_FILE} (one JSON line per example: source, instruction, edited)")
    examples = []
    for number, line in enumerate(metadata.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{metadata}: line {number}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InvalidInputError(f"{where} is not valid JSON ({exc.msg})") from None
        if not isinstance(record, dict) or not all(isinstance(record.get(k), str) for k in ("source", "instruction", "edited")):
            raise InvalidInputError(f'{where} needs the string fields "source", "instruction" and "edited"')
        if not record["instruction"].strip():
            raise InvalidInputError(f"{where} has an empty instruction")
        sizes = []
        paths = []
        for key in ("source", "edited"):
            path = (folder / record[key]).resolve()
            if not path.is_relative_to(folder.resolve()):
                raise InvalidInputError(f"{where}: {key} image {record[key]!r} lies outside the data folder")
            if not path.is_file():
                raise InvalidInputError(f"{where}: {key} image {record[key]!r} not found")
            try:
                with Image.open(path) as image:
                    image.verify()
                with Image.open(path) as image:
                    sizes.append(image.size)
            except (UnidentifiedImageError, OSError, SyntaxError) as exc:
                raise InvalidInputError(f"{where}: {key} image {record[key]!r} cannot be read ({exc})") from None
            paths.append(path)
        if sizes[0] != sizes[1]:
            raise InvalidInputError(
                f"{where}: the edited image {record['edited']!r} is {sizes[1][0]}x{sizes[1][1]} but its source "
                f"{record['source']!r} is {sizes[0][0]}x{sizes[0][1]}; a pair must have the same size"
            )
        examples.append((paths[0], paths[1], record["instruction"]))
    if not examples:
        raise InvalidInputError(f"{metadata} lists no examples")
    return examples


def open_dataset(data: str, *, size: int, seed: int = 0, ambiguous_share: float | None = None):
    """``builtin:procedural`` or a triplet folder, as an indexable dataset of examples.

    ``ambiguous_share``: the share of procedural examples drawn from the
    ambiguous edits (default: every edit equally often); procedural data only.
    """
    if data == PROCEDURAL_DATA:
        return ProceduralEdits(size, seed=seed, ambiguous_share=ambiguous_share)
    if ambiguous_share is not None:
        raise InvalidInputError(f"--ambiguous-share is for {PROCEDURAL_DATA} only (a triplet folder's edits are its own)")
    return TripletFolder(data)
