"""Noise that depends only on (seed, frame index).

Every frame owns a CPU ``torch.Generator`` seeded from (seed, frame index): it
draws the frame's initial latent and then, in order, the ancestral noise of
every denoising step. A frame's noise is therefore the same whatever batch it
is in, whatever order frames are processed in and on whatever device the UNet
runs (draws happen on the CPU and are moved).
"""

from __future__ import annotations

import hashlib

import torch

__all__ = ["frame_seed", "frame_generators", "initial_latents"]

_SHARED_INIT = "shared-initial-noise"


def frame_seed(seed: int, frame_index: int | str) -> int:
    """A 63-bit seed mixed from the user's seed and a frame index (stable across runs and platforms)."""
    digest = hashlib.blake2b(f"fairy:{seed}:{frame_index}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & 0x7FFF_FFFF_FFFF_FFFF


def frame_generators(seed: int, frame_indices: list[int]) -> list[torch.Generator]:
    return [torch.Generator(device="cpu").manual_seed(frame_seed(seed, i)) for i in frame_indices]


def initial_latents(
    generators: list[torch.Generator],
    shape: tuple[int, int, int],
    *,
    seed: int,
    shared: bool,
    device: torch.device,
    dtype: torch.dtype,
) -> torch.Tensor:
    """One initial latent per frame, drawn from the frame's generator.

    With ``shared`` every frame starts from the same latent (drawn from a
    generator of its own), but each generator still draws one latent so that
    the ancestral noise that follows is the same under both policies.
    """
    own = [torch.randn((1, *shape), generator=g, dtype=torch.float32) for g in generators]
    if shared:
        common = torch.randn((1, *shape), generator=torch.Generator().manual_seed(frame_seed(seed, _SHARED_INIT)))
        own = [common] * len(generators)
    return torch.cat(own).to(device=device, dtype=dtype)
