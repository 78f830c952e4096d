"""FairyPipeline: instruction-guided video editing with anchor-based cross-frame attention.

Built on the components of an InstructPix2Pix-format model (VAE, 8-input-channel
UNet, CLIP text encoder and tokenizer, a scheduler; Euler Ancestral by default).
An edit is two passes that share one :class:`~fairy.attention.AnchorCache`:

1. the anchor pass denoises the K anchor frames together and fills the cache;
2. the frame pass denoises every other frame, in batches of any size, each
   frame attending to itself and the cached anchor tokens.

``__call__`` runs both on frames in memory. :meth:`FairyPipeline.edit_anchors`
and :meth:`FairyPipeline.edit_frames` are the two passes on their own, for
streaming a long clip (``fairy.editing``) or splitting it across workers: a
frame's result depends only on the cache, its own pixels and (seed, frame
index).
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable, Sequence
from typing import Literal

import numpy as np
import torch
from diffusers import AutoencoderKL, DiffusionPipeline, UNet2DConditionModel
from diffusers.schedulers import KarrasDiffusionSchedulers
from diffusers.utils import BaseOutput
from fairy_proto.v1.settings import check_settings, fallbacks, setting
from transformers import CLIPTextModel, CLIPTokenizer

from .attention import AnchorCache, layer_scale, self_attention_layers, set_anchor_attention
from .errors import EditCancelled
from .noise import frame_generators, initial_latents
from .sampling import draw_step_noise, draws_ahead, euler_ancestral_step, scale_input

__all__ = ["FairyPipeline", "FairyPipelineOutput", "FairyParams", "PipelineProgress", "anchor_indices_for"]

NoisePolicy = Literal["per_frame", "shared"]


@dataclasses.dataclass(frozen=True)
class FairyParams:
    """Denoising settings shared by the anchor and frame passes of one edit (all resolved: the guidance
    defaults are those of a model that recommends none)."""

    steps: int = setting("steps").default
    guidance_scale: float = setting("guidance_scale").fallback
    image_guidance_scale: float = setting("image_guidance_scale").fallback
    seed: int = setting("seed").default
    noise: NoisePolicy = setting("noise").default

    @property
    def num_branches(self) -> int:
        # InstructPix2Pix's rule: three-branch guidance (text+image, image, none)
        # when both scales are on, otherwise one plain branch.
        return 3 if self.guidance_scale > 1.0 and self.image_guidance_scale >= 1.0 else 1


@dataclasses.dataclass
class PipelineProgress:
    phase: Literal["anchors", "frames"]
    step: int  # steps done in the current batch, 1-based
    total_steps: int
    frames_done: int  # frames of the call finished so far
    total_frames: int


@dataclasses.dataclass
class FairyPipelineOutput(BaseOutput):
    """Edited frames, in input order, and how they were made."""

    frames: np.ndarray | torch.Tensor
    anchor_indices: tuple[int, ...]
    cache: AnchorCache | None


def anchor_indices_for(num_frames: int, anchors: int) -> tuple[int, ...]:
    """K anchors uniformly spaced over the clip, at the centres of K equal segments.

    ``round((i + 0.5) * T / K)`` for i in 0..K-1: for 120 frames and K = 3, frames
    20, 60 and 100. Centres (rather than the first and last frame) keep every
    frame within T / 2K of an anchor.
    """
    if anchors <= 0:
        return ()
    k = min(anchors, num_frames)
    return tuple(min(num_frames - 1, int((i + 0.5) * num_frames / k)) for i in range(k))


Callback = Callable[[PipelineProgress], None]


class FairyPipeline(DiffusionPipeline):
    """Fairy (arXiv 2312.13834) on an InstructPix2Pix-format model.

    Args:
        vae, text_encoder, tokenizer, unet, scheduler: the model's components.
            The UNet must take 8 input channels (noisy latents + source latents).
    """

    model_cpu_offload_seq = "text_encoder->unet->vae"

    def __init__(
        self,
        vae: AutoencoderKL,
        text_encoder: CLIPTextModel,
        tokenizer: CLIPTokenizer,
        unet: UNet2DConditionModel,
        scheduler: KarrasDiffusionSchedulers,
    ):
        super().__init__()
        self.register_modules(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=scheduler)
        self.vae_scale_factor = 2 ** (len(self.vae.config.block_out_channels) - 1)
        self.anchor_kernel = "concat"
        self.anchor_pool: dict[str, int] = {}  # reduced anchors: layer -> pool factor (use_reduced_anchors)
        self.memory_format = torch.contiguous_format  # use_channels_last
        self.compiled_blocks = False  # use_compiled_blocks
        # What the settings a caller leaves unset (guidance, working size) are for this model:
        # fairy.loading sets the model's own (fairy_model.json); these are for a model that says nothing.
        self.model_defaults = fallbacks()
        self._use_cache(AnchorCache())

    # ------------------------------------------------------------------
    # Helpers
    # ------------------------------------------------------------------
    @property
    def size_multiple(self) -> int:
        """Frame width and height must be multiples of this (VAE factor x UNet downsampling)."""
        return self.vae_scale_factor * 2 ** (len(self.unet.config.block_out_channels) - 1)

    def _use_cache(self, cache: AnchorCache) -> None:
        """Make ``cache`` the one every self-attention layer writes and reads, with this pipeline's options."""
        self.anchor_cache = cache
        self._attn_layers = set_anchor_attention(self.unet, cache, kernel=self.anchor_kernel, pool=self.anchor_pool)

    def use_cache_store(self, store: str) -> None:
        """Cache ``"hidden"`` states (half the memory) or projected ``"kv"`` (no recompute)."""
        self._use_cache(AnchorCache(store=store))

    def use_anchor_kernel(self, kernel: str) -> None:
        """How the frame pass attends to the anchors: ``"concat"`` (one attention call over a per-frame copy
        of the anchor tokens) or ``"merged"`` (two calls merged by log-sum-exp, no copy); equal within float
        rounding (see ``fairy.attention.ANCHOR_KERNELS``)."""
        self.anchor_kernel = kernel
        self._use_cache(self.anchor_cache)

    def use_channels_last(self, enabled: bool = True) -> None:
        """Keep the UNet's and the VAE's convolution weights and inputs channels-last (NHWC), the layout
        tensor-core convolution kernels want; the same results within float rounding."""
        self.memory_format = torch.channels_last if enabled else torch.contiguous_format
        for module in (self.unet, self.vae):
            module.to(memory_format=self.memory_format)

    def use_vae_tiling(self, enabled: bool = True) -> None:
        """Encode and decode frames larger than the VAE's tile size (its config's ``sample_size``) tile by tile,
        overlapping tiles blended (diffusers' ``AutoencoderKL.enable_tiling``): bounded memory for large frames,
        at the cost of small differences where tiles meet (tested bound: docs/library.md)."""
        if enabled:
            self.vae.enable_tiling()
        else:
            self.vae.disable_tiling()

    def use_compiled_blocks(self, enabled: bool = True) -> None:
        """``torch.compile`` every residual block and transformer block of the UNet and the VAE (regional
        compilation, as diffusers' ``compile_repeated_blocks``): the normalisations, activations and additions
        between the matrix products fuse into fewer kernels. The anchor processors stay eager (they read the
        pass and step from the cache in Python, which would make the compiler specialise on every step), so
        each transformer block is two graphs around its self-attention. The first edit at each new shape
        pays the compile (tens of seconds on a GPU, minutes on a CPU); results equal the eager path within
        float rounding (tested). ``False`` returns every block to eager."""
        from diffusers.models.attention import BasicTransformerBlock
        from diffusers.models.resnet import ResnetBlock2D

        if enabled:
            # One graph per distinct block shape (about 30 for SD1.5's UNet and VAE): past the default limit
            # of 8 the compiler would quietly run the rest eagerly.
            torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 64)
        for module in (*self.unet.modules(), *self.vae.modules()):
            if isinstance(module, (ResnetBlock2D, BasicTransformerBlock)):
                if enabled:
                    module.compile()
                else:
                    module._compiled_call_impl = None
        self.compiled_blocks = enabled

    def use_reduced_anchors(self, factor: int = 2, levels: Literal["finest", "all"] = "finest") -> None:
        """Opt-in, beyond the paper: frames attend to the anchors' tokens averaged over ``factor x factor``
        blocks at the ``levels`` chosen: ``"finest"`` (the highest-resolution self-attention layers, which
        hold most of the anchor tokens and cost, and where the paper found cross-frame attention tracks
        correspondences best) or ``"all"`` (each layer whose token grid the factor divides). ``factor`` 1
        turns it off (the paper's full anchors). The anchor cache shrinks with it, and records it, so a worker
        reads a pooled cache right whatever its own setting; ``bench/bench_reduced_anchors.py`` measures
        speed and quality."""
        if factor < 1:
            raise ValueError(f"the reduced-anchor factor must be 1 or more, got {factor}")
        if levels not in ("finest", "all"):
            raise ValueError(f'reduced-anchor levels must be "finest" or "all", got {levels!r}')
        layers = self_attention_layers(self.unet)
        scales = {name: layer_scale(self.unet, name) for name in layers}
        chosen = [name for name in layers if levels == "all" or scales[name] == min(scales.values())]
        self.anchor_pool = {name: factor for name in chosen} if factor > 1 else {}
        self._use_cache(self.anchor_cache)

    def check_inputs(self, frames, instruction: str, params: FairyParams, anchors: int, batch_size: int) -> None:
        if not isinstance(instruction, str) or not instruction.strip():
            raise ValueError("the instruction is empty: say what the edit should do, e.g. 'make it a watercolor painting'")
        if len(frames) == 0:
            raise ValueError("no frames to edit: pass at least one frame")
        height, width = _frame_size(frames)
        m = self.size_multiple
        if height % m or width % m:
            raise ValueError(
                f"frames are {width}x{height}, but this model needs width and height divisible by {m}; "
                "resize them first (fairy.video.model_size gives a valid size)"
            )
        # The settings table's ranges and messages (SettingError is a ValueError).
        check_settings({"steps": params.steps, "guidance_scale": params.guidance_scale,
                        "image_guidance_scale": params.image_guidance_scale, "seed": params.seed,
                        "noise": params.noise, "anchors": anchors, "batch_size": batch_size})
        if self.unet.config.in_channels != 2 * self.vae.config.latent_channels:
            raise ValueError(
                f"the UNet takes {self.unet.config.in_channels} input channels; an InstructPix2Pix-format model "
                f"needs {2 * self.vae.config.latent_channels} (noisy latents + source latents)"
            )

    @torch.no_grad()
    def encode_instruction(self, instruction: str, params: FairyParams) -> torch.Tensor:
        """Text embeddings stacked per guidance branch: [text, empty, empty] or [text]."""
        def embed(text: str) -> torch.Tensor:
            ids = self.tokenizer(
                text, padding="max_length", max_length=self.tokenizer.model_max_length, truncation=True, return_tensors="pt"
            ).input_ids
            return self.text_encoder(ids.to(self.device))[0]

        prompt = embed(instruction)
        if params.num_branches == 3:
            empty = embed("")
            prompt = torch.cat([prompt, empty, empty])
        return prompt.to(dtype=self.unet.dtype)

    def _encode_frames(self, frames) -> torch.Tensor:
        """uint8 NxHxWx3 (or float tensors in [0, 1], NxHxWx3) -> source latents (mode of the posterior)."""
        pixels = torch.as_tensor(np.asarray(frames) if not torch.is_tensor(frames) else frames)
        if pixels.dtype == torch.uint8:
            pixels = pixels.float() / 255.0
        pixels = pixels.permute(0, 3, 1, 2).to(device=self.device, dtype=self.vae.dtype) * 2.0 - 1.0
        return self.vae.encode(pixels).latent_dist.mode()

    def _decode(self, latents: torch.Tensor, output_type: str):
        if output_type == "latent":
            return latents
        images = self.vae.decode(latents / self.vae.config.scaling_factor, return_dict=False)[0]
        images = (images.float() / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1)
        if output_type == "pt":
            return images
        if output_type == "uint8":
            return (images * 255).round().to(torch.uint8).cpu().numpy()
        return images.cpu().numpy()

    # ------------------------------------------------------------------
    # The two passes
    # ------------------------------------------------------------------
    @torch.no_grad()
    def _denoise(
        self,
        frames,
        frame_indices: Sequence[int],
        prompt_embeds: torch.Tensor,
        params: FairyParams,
        mode: str,
        *,
        phase: str,
        frames_done: int,
        total_frames: int,
        callback: Callback | None,
        should_cancel: Callable[[], bool] | None,
        output_type: str,
    ):
        branches = params.num_branches
        image_latents = self._encode_frames(frames)
        if branches == 3:
            image_latents = torch.cat([image_latents, image_latents, torch.zeros_like(image_latents)])
        count = len(frame_indices)
        text = prompt_embeds.repeat_interleave(count, dim=0)

        generators = frame_generators(params.seed, list(frame_indices))
        self.scheduler.set_timesteps(params.steps, device=self.device)
        latents = initial_latents(
            generators,
            (self.vae.config.latent_channels, *image_latents.shape[-2:]),
            seed=params.seed,
            shared=params.noise == "shared",
            device=self.device,
            dtype=prompt_embeds.dtype,
        )
        latents = latents * self.scheduler.init_noise_sigma

        timesteps = self.scheduler.timesteps
        # Euler Ancestral (the paper's sampler) takes every step's noise drawn now, so that the loop never waits
        # for a host-to-device copy (fairy.sampling); other stochastic samplers (DDIM with eta > 0, ...) draw
        # theirs from the generators in each step.
        ahead = draws_ahead(self.scheduler)
        if ahead:
            step_noise = draw_step_noise(generators, len(timesteps), tuple(latents.shape[1:]), dtype=prompt_embeds.dtype,
                                         device=self.device)  # fmt: skip
        step_kwargs = {"generator": generators} if _accepts(self.scheduler.step, "generator") else {}
        for i, t in enumerate(timesteps):
            if should_cancel is not None and should_cancel():
                raise EditCancelled("the edit was cancelled")
            self.anchor_cache.set_pass(mode, step=i, num_branches=branches)
            model_input = torch.cat([latents] * branches) if branches > 1 else latents
            if ahead:
                model_input = scale_input(self.scheduler, model_input, i)
            else:
                model_input = self.scheduler.scale_model_input(model_input, t)
            model_input = torch.cat([model_input, image_latents], dim=1).contiguous(memory_format=self.memory_format)
            noise_pred = self.unet(model_input, t, encoder_hidden_states=text, return_dict=False)[0]
            if branches == 3:
                text_pred, image_pred, uncond_pred = noise_pred.chunk(3)
                noise_pred = (
                    uncond_pred
                    + params.guidance_scale * (text_pred - image_pred)
                    + params.image_guidance_scale * (image_pred - uncond_pred)
                )
            if ahead:
                latents = euler_ancestral_step(self.scheduler, noise_pred, latents, i, step_noise[i])
            else:
                latents = self.scheduler.step(noise_pred, t, latents, **step_kwargs, return_dict=False)[0]
            if callback is not None:
                done = frames_done + (count if i == len(timesteps) - 1 else 0)
                callback(PipelineProgress(phase, i + 1, len(timesteps), done, total_frames))
        self.anchor_cache.set_pass("off")
        return self._decode(latents, output_type)

    def edit_anchors(
        self,
        anchor_frames,
        anchor_indices: Sequence[int],
        prompt_embeds: torch.Tensor,
        params: FairyParams,
        *,
        total_frames: int | None = None,
        callback: Callback | None = None,
        should_cancel: Callable[[], bool] | None = None,
        output_type: str = "np",
    ):
        """The anchor pass: edit the K anchors together and fill a fresh cache.

        Returns ``(edited anchor frames, cache)``; the cache is also installed as
        the one the frame pass reads.
        """
        self.use_cache_store(self.anchor_cache.store)
        height, width = _frame_size(anchor_frames)
        self.anchor_cache.meta.update(
            anchor_indices=list(anchor_indices), params=dataclasses.asdict(params), branches=params.num_branches,
            latent_size=[height // self.vae_scale_factor, width // self.vae_scale_factor],
        )
        edited = self._denoise(
            anchor_frames, anchor_indices, prompt_embeds, params, "write",
            phase="anchors", frames_done=0, total_frames=total_frames or len(anchor_indices),
            callback=callback, should_cancel=should_cancel, output_type=output_type,
        )  # fmt: skip
        return edited, self.anchor_cache

    def edit_frames(
        self,
        frames,
        frame_indices: Sequence[int],
        prompt_embeds: torch.Tensor,
        params: FairyParams,
        cache: AnchorCache | None,
        *,
        frames_done: int = 0,
        total_frames: int | None = None,
        callback: Callback | None = None,
        should_cancel: Callable[[], bool] | None = None,
        output_type: str = "np",
    ):
        """The frame pass on one batch: each frame attends to itself and ``cache`` (None: per-frame editing)."""
        if cache is not None and cache.meta.get("params") not in (None, dataclasses.asdict(params)):
            raise ValueError("the anchor cache was made with other settings; run edit_anchors with these params first")
        if cache is not None and cache is not self.anchor_cache:
            self._use_cache(cache.to(self.device))
        return self._denoise(
            frames, frame_indices, prompt_embeds, params, "read" if cache is not None else "off",
            phase="frames", frames_done=frames_done, total_frames=total_frames or len(frame_indices),
            callback=callback, should_cancel=should_cancel, output_type=output_type,
        )  # fmt: skip

    # ------------------------------------------------------------------
    # Whole clip in memory
    # ------------------------------------------------------------------
    @torch.no_grad()
    def __call__(
        self,
        frames,
        instruction: str,
        *,
        steps: int = setting("steps").default,
        guidance_scale: float | None = setting("guidance_scale").default,
        image_guidance_scale: float | None = setting("image_guidance_scale").default,
        anchors: int = setting("anchors").default,
        anchor_indices: Sequence[int] | None = None,
        batch_size: int = setting("batch_size").default,
        seed: int = setting("seed").default,
        noise: NoisePolicy = setting("noise").default,
        frame_indices: Sequence[int] | None = None,
        order: Sequence[int] | None = None,
        callback: Callback | None = None,
        should_cancel: Callable[[], bool] | None = None,
        output_type: str = "np",
    ) -> FairyPipelineOutput:
        """Edit a clip held in memory.

        Args:
            frames: ``T x H x W x 3`` uint8 (or float in [0, 1]); H and W multiples of ``size_multiple``.
            instruction: what to do, e.g. "make it a watercolor painting".
            steps, guidance_scale, image_guidance_scale, anchors, batch_size, seed, noise: the edit's settings,
                named, defaulted and range-checked as in ``fairy_proto.v1.settings``.
            anchors: K uniformly spaced anchors (0: plain per-frame editing).
            anchor_indices: explicit anchor positions (overrides ``anchors``).
            batch_size: frames per UNet batch in the frame pass (memory, not results).
            guidance_scale, image_guidance_scale: None: the model's recommendation (``model_defaults``).
            seed, noise: each frame's noise comes from (seed, its index); with ``"shared"``
                (the default) every frame starts from one initial latent drawn from the seed,
                with ``"per_frame"`` from its own. Ancestral noise is per frame either way.
            frame_indices: the frames' indices for noise (default 0..T-1), e.g. their
                positions in the source media.
            order: the order to process the non-anchor frames in (default: input order).
            output_type: ``"np"`` (float in [0, 1]), ``"uint8"``, ``"pt"`` or ``"latent"``.
        """
        guidance = {"guidance_scale": guidance_scale, "image_guidance_scale": image_guidance_scale}
        guidance = {name: self.model_defaults[name] if value is None else value for name, value in guidance.items()}
        params = FairyParams(steps, seed=seed, noise=noise, **guidance)
        # 1. Check inputs
        self.check_inputs(frames, instruction, params, anchors, batch_size)
        total = len(frames)
        indices = list(frame_indices) if frame_indices is not None else list(range(total))
        if len(indices) != total:
            raise ValueError(f"frame_indices has {len(indices)} entries for {total} frames")
        positions = tuple(anchor_indices) if anchor_indices is not None else anchor_indices_for(total, anchors)
        if any(not 0 <= a < total for a in positions):
            raise ValueError(f"anchor positions {positions} must lie in 0..{total - 1}")

        # 2. Encode the instruction
        prompt_embeds = self.encode_instruction(instruction, params)

        # 3. Anchor pass
        results: list = [None] * total
        cache = None
        if positions:
            edited, cache = self.edit_anchors(
                _take(frames, positions), [indices[a] for a in positions], prompt_embeds, params,
                total_frames=total, callback=callback, should_cancel=should_cancel, output_type=output_type,
            )  # fmt: skip
            for slot, a in enumerate(positions):
                results[a] = edited[slot]

        # 4. Frame pass, batch by batch
        anchor_set = set(positions)
        rest = [p for p in (order if order is not None else range(total)) if p not in anchor_set]
        done = len(positions)
        for begin in range(0, len(rest), batch_size):
            batch = rest[begin : begin + batch_size]
            edited = self.edit_frames(
                _take(frames, batch), [indices[p] for p in batch], prompt_embeds, params, cache,
                frames_done=done, total_frames=total, callback=callback, should_cancel=should_cancel,
                output_type=output_type,
            )  # fmt: skip
            for slot, p in enumerate(batch):
                results[p] = edited[slot]
            done += len(batch)

        # 5. Assemble
        stacked = torch.stack(results) if torch.is_tensor(results[0]) else np.stack(results)
        return FairyPipelineOutput(frames=stacked, anchor_indices=positions, cache=cache)


def _accepts(fn, name: str) -> bool:
    return name in inspect.signature(fn).parameters


def _frame_size(frames) -> tuple[int, int]:
    first = frames[0]
    return int(first.shape[0]), int(first.shape[1])


def _take(frames, positions: Sequence[int]):
    if torch.is_tensor(frames):
        return frames[list(positions)]
    return np.stack([np.asarray(frames[p]) for p in positions])
