"""The small model that ships in the package (builtin:small): loads offline and really carries out its edits."""

from __future__ import annotations

import numpy as np
import pytest

from fairy.loading import load_pipeline
from fairy.model_info import SMALL_MODEL_ID, model_defaults, read_model_info, shipped_model_path
from fairy.training.edits import edit_by_name, hue_rotation_angle, rotate_hue
from fairy.training.evaluate import held_out_images, psnr

INFO = read_model_info(SMALL_MODEL_ID)
SHIPPED = [e["name"] for e in INFO.get("edits", [])]


@pytest.fixture(scope="module")
def small_pipe():
    return load_pipeline(SMALL_MODEL_ID, device="cpu")


@pytest.fixture(scope="module")
def photo():
    # One fixed crop of a held-out photograph, at the model's working size (4:3).
    side = model_defaults(SMALL_MODEL_ID)["long_side"]
    image = held_out_images((side, side * 3 // 4), count_per_photo=1, seed=7)[0]
    return (image * 255).round().astype(np.uint8)


def test_the_shipped_model_is_small_self_describing_and_loads_offline(small_pipe):
    folder = shipped_model_path()
    weights = sum(p.stat().st_size for p in folder.rglob("*.safetensors"))
    assert 0 < weights <= 30 * 1024**2
    assert SHIPPED, "fairy_model.json lists no edits that passed evaluation"
    assert INFO["evaluation"]["autoencoder_psnr"] >= 30
    # It was evaluated at the working size and guidance it asks for, which every edit then uses unless told
    # otherwise (the pipeline here, fairy edit, the server and the plugins: tests/test_settings.py).
    chosen = {"long_side": 128, "guidance_scale": 1.0, "image_guidance_scale": 1.0}
    assert model_defaults(SMALL_MODEL_ID) == small_pipe.model_defaults == chosen
    assert INFO["evaluation"]["guidance"] == {k: v for k, v in chosen.items() if k != "long_side"}
    assert INFO["evaluation"]["size"][0] == INFO["long_side"] == 128


@pytest.mark.parametrize("name", SHIPPED)
def test_each_shipped_edit_moves_a_held_out_photo_towards_its_exact_target(small_pipe, photo, name):
    edit = edit_by_name(name)
    source = photo.astype(np.float32) / 255
    out = np.asarray(small_pipe(photo[None], edit.instruction, anchors=0, seed=0).frames[0], dtype=np.float32)
    if edit.ambiguous:
        # Many right answers: the output must be some hue rotation of the source, closer to it than the source is.
        angle = hue_rotation_angle(source, out)
        assert psnr(out, rotate_hue(source, angle)) > psnr(source, rotate_hue(source, angle))
    else:
        target = edit.apply(source)
        assert psnr(out, target) > psnr(source, target), name


def test_anchors_make_every_frame_take_the_anchors_answer_to_the_ambiguous_edit(small_pipe):
    """The miniature of "turn him into a robot": a hue rotation by an angle the model picks. With each frame's
    own noise, frame-by-frame editing lets every frame pick its own angle; with K = 3 anchors (the model was
    given anchored training) the frames must take the anchors' angle. A real run of the shipped weights."""
    from fairy.metrics import circular_std_degrees
    from fairy.training.clips import camera_clip
    from fairy.training.data import load_photo

    clip = camera_clip(load_photo("coffee"), "pan", frames=8, size=(128, 96))
    spread = {}
    for anchors in (0, 3):
        out = np.asarray(small_pipe(clip, "give it a new color palette", anchors=anchors, seed=0, noise="per_frame").frames)
        spread[anchors] = circular_std_degrees([hue_rotation_angle(s, e) for s, e in zip(clip, out)])
    assert spread[0] > 5, spread  # frame by frame the answer really varies...
    assert spread[3] < 0.5 * spread[0], spread  # ...and the anchors pull it together
