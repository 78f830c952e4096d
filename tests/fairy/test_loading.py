"""Loading models: a local diffusers folder, the built-in tiny model, and the offline hub error."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from fairy.errors import ModelLoadError
from fairy.loading import load_pipeline, pick_device


def test_local_diffusers_folder_loads_and_edits(tiny_model_dir, tiny_pipe):
    pipe = load_pipeline(str(tiny_model_dir), device="cpu")
    frames = np.full((2, 32, 48, 3), 128, np.uint8)
    out = pipe(frames, "make it snow", num_inference_steps=2, num_anchors=1).frames
    reference = tiny_pipe(frames, "make it snow", num_inference_steps=2, num_anchors=1).frames
    # Same weights (the folder holds the tiny model) -> the same edit.
    np.testing.assert_allclose(out, reference, atol=1e-6)
    assert type(pipe.scheduler).__name__ == "EulerAncestralDiscreteScheduler"


def test_folder_without_a_unet_is_refused(tmp_path):
    with pytest.raises(ModelLoadError, match="not a diffusers model folder"):
        load_pipeline(str(tmp_path), device="cpu")


def test_missing_single_file_is_refused(tmp_path):
    with pytest.raises(ModelLoadError, match="model file not found"):
        load_pipeline(str(tmp_path / "nope.safetensors"), device="cpu")


def test_nonsense_model_name_is_refused():
    with pytest.raises(ModelLoadError, match="no model at"):
        load_pipeline("not a model", device="cpu")


def test_cuda_on_a_machine_without_it_is_refused():
    import torch

    if torch.cuda.is_available():
        assert pick_device("cuda").type == "cuda"
    else:
        with pytest.raises(ModelLoadError, match="no CUDA GPU"):
            pick_device("cuda")
    assert pick_device("cpu").type == "cpu"


def test_unreachable_hub_id_gives_one_line(tmp_path):
    """No network and no cache: one line that says so and names the alternatives."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf-home"))
    code = (
        "from fairy.loading import load_pipeline\n"
        "from fairy.errors import ModelLoadError\n"
        "try:\n    load_pipeline('timbrooks/instruct-pix2pix', device='cpu')\n"
        "except ModelLoadError as e:\n    print(str(e))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    message = out.stdout.strip()
    assert message.count("\n") == 0 and message, out.stderr
    assert "timbrooks/instruct-pix2pix" in message
    assert "local diffusers folder" in message and ".safetensors" in message and "builtin:small" in message
