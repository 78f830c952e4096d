"""Equivariant augmentation, the procedural edits and data, and triplet folders."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from fairy.errors import InvalidInputError
from fairy.training.augment import AffineRanges, affine_matrix, apply_affine, augment_pair, sample_affine
from fairy.training.data import HELD_OUT_PHOTOS, TRAIN_PHOTOS, ProceduralEdits, TripletFolder, load_photo
from fairy.training.edits import DETERMINISTIC_EDITS, EDITS, edit_for_instruction, hue_rotation_angle, rotate_hue


def _dot_image(size: int, x: int, y: int, *, background: float, dot: float) -> torch.Tensor:
    image = torch.full((3, size, size), background)
    image[:, y - 1 : y + 2, x - 1 : x + 2] = dot
    return image


def _peak(image: torch.Tensor, *, brightest: bool) -> tuple[int, int]:
    plane = image.mean(0)
    index = int(plane.argmax() if brightest else plane.argmin())
    return index % plane.shape[1], index // plane.shape[1]


@pytest.mark.parametrize("seed", range(6))
def test_a_marked_point_lands_at_the_same_place_in_source_and_target(seed):
    # A white dot on black and a black dot on white (the source's negative): after
    # the augmentation both dots must sit on the same pixel.
    source = _dot_image(72, 40, 30, background=0.0, dot=1.0)
    target = _dot_image(72, 40, 30, background=1.0, dot=0.0)
    rng = np.random.default_rng(seed)
    a, b = augment_pair(source, target, 64, rng, equivariant=True)
    assert a.shape == b.shape == (3, 64, 64)
    assert _peak(a, brightest=True) == _peak(b, brightest=False)
    assert torch.allclose(a, 1 - b, atol=1e-5)  # the whole view, not just the dot


def test_the_affine_moves_a_point_as_its_matrix_says():
    image = _dot_image(101, 70, 30, background=0.0, dot=1.0)[None]
    params = sample_affine(np.random.default_rng(3))
    moved = apply_affine(image, params)[0]
    matrix = affine_matrix(params, 101, 101)
    expected = matrix @ np.array([70 + 0.5 - 50.5, 30 + 0.5 - 50.5, 1.0])
    x, y = _peak(moved, brightest=True)
    assert abs(x + 0.5 - 50.5 - expected[0]) <= 1.0 and abs(y + 0.5 - 50.5 - expected[1]) <= 1.0
    assert (x, y) != (70, 30)


def test_sampled_transforms_stay_within_the_papers_ranges():
    ranges = AffineRanges()
    rng = np.random.default_rng(0)
    draws = [sample_affine(rng, ranges) for _ in range(2000)]
    for name, bound in (("rotation", 5.0), ("translate_x", 0.05), ("translate_y", 0.05), ("shear_x", 5.0), ("shear_y", 5.0)):
        values = np.array([getattr(d, name) for d in draws])
        assert np.all(np.abs(values) <= bound) and values.max() > 0.9 * bound and values.min() < -0.9 * bound, name
    scales = np.array([d.scale for d in draws])
    assert scales.min() >= 0.95 and scales.max() <= 1.05 and scales.max() - scales.min() > 0.09


def test_without_equivariance_the_pair_is_only_cropped_and_flipped():
    source = torch.rand(3, 72, 72)
    a, _ = augment_pair(source, source.clone(), 64, np.random.default_rng(1), equivariant=False)
    # Every view is an exact window of the source (or its mirror): no resampling.
    windows = [source[:, y : y + 64, x : x + 64] for y in range(9) for x in range(9)]
    assert any(torch.equal(a, w) or torch.equal(a, w.flip(-1)) for w in windows)


def test_hue_rotation_angle_recovers_the_angle_applied():
    image = load_photo(HELD_OUT_PHOTOS[1])[::4, ::4]
    for degrees in (60.0, 137.0, 250.0):
        measured = hue_rotation_angle(image, rotate_hue(image, degrees))
        # Clipping the rotated colours to [0, 1] biases saturated pixels by a few degrees.
        assert abs((measured - degrees + 180) % 360 - 180) < 8.0, (degrees, measured)
    assert np.isnan(hue_rotation_angle(np.full((4, 4, 3), 0.5), np.full((4, 4, 3), 0.5)))


def test_every_edit_is_exact_deterministic_and_distinct():
    image = load_photo(HELD_OUT_PHOTOS[0])[::8, ::8]
    results = {e.name: e.apply(image, np.random.default_rng(0)) for e in EDITS}
    for edit in DETERMINISTIC_EDITS:
        assert np.array_equal(results[edit.name], edit.apply(image)), edit.name
        assert results[edit.name].min() >= 0 and results[edit.name].max() <= 1
    names = list(results)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            assert np.mean((results[a] - results[b]) ** 2) > 1e-3, (a, b)
    assert edit_for_instruction("  Make it Night ").name == "night"
    assert edit_for_instruction("turn him into a robot") is None


def test_procedural_examples_repeat_by_index_and_never_use_held_out_photos():
    assert not set(TRAIN_PHOTOS) & set(HELD_OUT_PHOTOS)
    data = ProceduralEdits(40, seed=5)
    first, again, other = data[7], data[7], data[8]
    assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1]) and first[2] == again[2]
    assert not torch.equal(first[0], other[0])
    assert first[0].shape == first[1].shape == (3, 40, 40)
    instructions = {data[i][2] for i in range(60)}
    assert len(instructions) > 8  # the paraphrases of several edits


def _write_image(path, size, value):
    from PIL import Image

    Image.fromarray(np.full((size[1], size[0], 3), value, np.uint8)).save(path)


def _triplets(folder, records):
    folder.mkdir()
    (folder / "metadata.jsonl").write_text("\n".join(json.dumps(r) for r in records) + "\n")
    return folder


def test_a_triplet_folder_reads_its_pairs(tmp_path):
    folder = tmp_path / "data"
    folder.mkdir()
    _write_image(folder / "a.png", (40, 30), 10)
    _write_image(folder / "b.png", (40, 30), 200)
    (folder / "metadata.jsonl").write_text(json.dumps({"source": "a.png", "instruction": "brighten", "edited": "b.png"}) + "\n")
    data = TripletFolder(folder)
    source, edited, instruction = data[0]
    assert len(data) == 1 and instruction == "brighten"
    assert source.shape == (3, 30, 40) and abs(float(source.mean()) - 10 / 255) < 1e-6 and abs(float(edited.mean()) - 200 / 255) < 1e-6


@pytest.mark.parametrize(
    "case, message",
    [
        ("no-metadata", "has no metadata.jsonl"),
        ("missing-image", "edited image 'gone.png' not found"),
        ("mismatched", "is 20x30 but its source"),
        ("not-json", "is not valid JSON"),
        ("no-instruction", "empty instruction"),
        ("outside", "lies outside the data folder"),
        ("unreadable", "cannot be read"),
    ],
)
def test_a_bad_triplet_folder_is_refused_with_a_line_naming_the_problem(tmp_path, case, message):
    folder = tmp_path / "data"
    if case == "no-metadata":
        folder.mkdir()
    else:
        record = {"source": "a.png", "instruction": "brighten", "edited": "b.png"}
        if case == "missing-image":
            record["edited"] = "gone.png"
        elif case == "no-instruction":
            record["instruction"] = " "
        elif case == "outside":
            record["edited"] = "../b.png"
        _triplets(folder, [record] if case != "not-json" else [])
        if case == "not-json":
            (folder / "metadata.jsonl").write_text("{not json\n")
        _write_image(folder / "a.png", (40, 30), 10)
        _write_image(folder / "b.png", (20, 30) if case == "mismatched" else (40, 30), 200)
        _write_image(tmp_path / "b.png", (40, 30), 200)
        if case == "unreadable":
            (folder / "b.png").write_bytes(b"not a png")
    with pytest.raises(InvalidInputError, match=message) as raised:
        TripletFolder(folder)
    assert "\n" not in str(raised.value)
