"""Fixtures shared by every test folder: the tiny random-weight model, built offline."""

from __future__ import annotations

import os

import pytest

# No test may reach a model hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="session")
def tiny_pipe():
    """A FairyPipeline on the tiny model (fp32, CPU). Tests must not change its weights."""
    from fairy.loading import load_pipeline

    return load_pipeline("builtin:tiny", device="cpu")


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """The tiny model saved as a diffusers folder (InstructPix2Pix layout)."""
    from diffusers import StableDiffusionInstructPix2PixPipeline

    from fairy.tiny import build_tiny_components

    folder = tmp_path_factory.mktemp("tiny-model")
    pipe = StableDiffusionInstructPix2PixPipeline(
        **build_tiny_components(), safety_checker=None, feature_extractor=None, requires_safety_checker=False
    )
    pipe.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def fairy_server(tmp_path_factory):
    """ONE real ``fairy-server`` for the whole session (real_server.SessionServer): the tiny model on the
    CPU, port 0 and a port file, a media root under a session tmp dir with ``.clip`` (24 frames, 24 fps)
    and ``.ntsc`` (24 frames, 24000/1001), 2 steps / 2 anchors / long side 64 by default. A test that
    leaves jobs running should use a fixture that calls ``.settle()`` after it (tests/plugin: ``live``)."""
    from real_server import SessionServer

    server = SessionServer(tmp_path_factory.mktemp("fairy-server"))
    yield server
    server.stop()
