"""Loading models: a local diffusers folder, the built-in tiny model, and the offline hub error."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from fairy.errors import ModelLoadError
from fairy.loading import load_pipeline, pick_device
from real_server import closed_port


def test_local_diffusers_folder_loads_and_edits(tiny_model_dir, tiny_pipe):
    pipe = load_pipeline(str(tiny_model_dir), device="cpu")
    frames = np.full((2, 32, 48, 3), 128, np.uint8)
    out = pipe(frames, "make it snow", steps=2, anchors=1).frames
    reference = tiny_pipe(frames, "make it snow", steps=2, anchors=1).frames
    # Same weights (the folder holds the tiny model) -> the same edit.
    np.testing.assert_allclose(out, reference, atol=1e-6)
    assert type(pipe.scheduler).__name__ == "EulerAncestralDiscreteScheduler"


def test_sampling_is_euler_ancestral_unless_the_model_predicts_the_clean_image():
    from diffusers import DDIMScheduler

    from fairy.loading import sampler_for

    # InstructPix2Pix's sampler on the model's own schedule, whatever class the folder names...
    ancestral = sampler_for(DDIMScheduler(prediction_type="v_prediction", rescale_betas_zero_snr=True))
    assert type(ancestral).__name__ == "EulerAncestralDiscreteScheduler"
    assert ancestral.config.prediction_type == "v_prediction" and ancestral.config.rescale_betas_zero_snr
    # ...except for an x0-predicting model (the shipped small one), which Euler Ancestral cannot step.
    euler = sampler_for(DDIMScheduler(prediction_type="sample", beta_schedule="scaled_linear"))
    assert type(euler).__name__ == "EulerDiscreteScheduler"
    assert euler.config.prediction_type == "sample" and euler.config.beta_schedule == "scaled_linear"
    assert sampler_for(euler) is euler


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


_LOAD_AND_PRINT = (
    "import sys\n"
    "from fairy.loading import load_pipeline\n"
    "from fairy.errors import ModelLoadError\n"
    "try:\n    pipe = load_pipeline(sys.argv[1], device='cpu')\n"
    "except ModelLoadError as e:\n    print(str(e))\nelse:\n    print('loaded', type(pipe.unet).__name__)\n"
)


def _load_in_a_fresh_process(model: str, hf_home, *, offline: bool) -> subprocess.CompletedProcess:
    """huggingface_hub reads its settings at import, so each case gets its own interpreter. The endpoint is
    a local port nothing listens on, held while the process runs (real_server.closed_port): the test never
    reaches the network, and an unreachable hub is what it sees."""
    with closed_port() as address:
        env = dict(os.environ, HF_HOME=str(hf_home), HF_HUB_OFFLINE="1" if offline else "0",
                   HF_ENDPOINT=f"http://{address}")
        return subprocess.run([sys.executable, "-c", _LOAD_AND_PRINT, model], env=env, capture_output=True,
                              text=True, timeout=120)


@pytest.mark.parametrize("offline", [True, False])
def test_uncached_hub_id_gives_one_line_at_once(tmp_path, offline):
    """Neither cached nor reachable (downloads off, or the hub not answering): one line that says so and
    names the alternatives; no retry messages or warnings before it."""
    out = _load_in_a_fresh_process("timbrooks/instruct-pix2pix", tmp_path / "hf-home", offline=offline)
    message = out.stdout.strip()
    assert message.count("\n") == 0 and message, out.stderr
    assert "'timbrooks/instruct-pix2pix' is not in the local Hugging Face cache" in message
    assert ("downloads are off" if offline else "could not be reached") in message
    assert "local diffusers folder" in message and ".safetensors" in message and "builtin:small" in message
    assert "config.json" not in message  # not diffusers' misleading "does not appear to have a file named"
    assert "Retry" not in out.stderr and "Warning" not in out.stderr, out.stderr


def _cache_as_hub_download(folder, hf_home, repo: str = "someone/tiny-pix2pix"):
    """``folder`` laid out the way huggingface_hub caches a downloaded repository."""
    import shutil

    commit = "0" * 40
    repo_dir = hf_home / "hub" / f"models--{repo.replace('/', '--')}"
    shutil.copytree(folder, repo_dir / "snapshots" / commit)
    (repo_dir / "refs").mkdir(parents=True)
    (repo_dir / "refs" / "main").write_text(commit)
    return repo_dir / "snapshots" / commit


def test_cached_hub_id_loads_without_the_network(tiny_model_dir, tmp_path):
    """Downloads allowed, hub unreachable: a cached model loads from the cache without asking the hub."""
    _cache_as_hub_download(tiny_model_dir, tmp_path / "hf-home")
    out = _load_in_a_fresh_process("someone/tiny-pix2pix", tmp_path / "hf-home", offline=False)
    assert out.stdout.strip() == "loaded UNet2DConditionModel", out.stdout + out.stderr


def test_damaged_cached_hub_id_says_so(tiny_model_dir, tmp_path):
    snapshot = _cache_as_hub_download(tiny_model_dir, tmp_path / "hf-home")
    (snapshot / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(b"not a safetensors file")
    for offline, tail in [(True, "unset HF_HUB_OFFLINE"), (False, "the hub could not be reached to complete it")]:
        message = _load_in_a_fresh_process("someone/tiny-pix2pix", tmp_path / "hf-home", offline=offline).stdout
        assert message.count("\n") == 1 and "cached copy of 'someone/tiny-pix2pix'" in message, message
        assert "incomplete or corrupt" in message and tail in message
