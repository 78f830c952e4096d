"""The small model that ships with Fairy: its architecture, built to train on a CPU.

``fairy train-small`` (``fairy.training.recipe``) chains it with ``fairy train``
into the one command that reproduces the shipped weights.

Images are worked on at 128 px on the long side, in pixel space: the
autoencoder is an ``AutoencoderKL`` whose weights are set, not learned, so that
it is the identity (latents are the RGB pixels in [-1, 1]). A learned 2x
autoencoder reached only 20 dB on held-out photographs after the CPU minutes it
could be given, and the issue's trial at 4x reached 24 dB; the identity is
exact, costs nothing, and the UNet pays for full resolution with one cheap
extra level (16 channels) instead. It stays a real diffusers ``AutoencoderKL``,
so the model loads and runs through every path any InstructPix2Pix does.

The UNet (16-32-64-128 channels) has self- and cross-attention at its two
inner levels (1/4 and 1/8 of the image side) and in its middle block, so anchor
attention has layers to work in; the instruction also reaches every residual
block as a per-channel scale and shift (pooled into the timestep embedding).
The text encoder is a small CLIP on a byte-level tokenizer, trained with the
UNet. The model predicts the clean image on Stable Diffusion's noise schedule
rescaled to zero terminal SNR, and is sampled with Euler.
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["LONG_SIDE", "build_small_components", "build_identity_autoencoder", "autoencoder_psnr", "latent_scaling_factor"]

LONG_SIDE = 128
_MAX_TOKENS = 40
_TEXT_WIDTH = 64
_LATENT_CHANNELS = 3  # the RGB pixels
_AE_WIDTH = 16
_AE_OFFSET = 1000.0


def build_small_components(seed: int = 0) -> dict:
    """Fresh components of the small model (random weights drawn from ``seed``)."""
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from ..tiny import build_tiny_tokenizer

    tokenizer = build_tiny_tokenizer()
    tokenizer.model_max_length = _MAX_TOKENS
    torch.manual_seed(seed)
    vae = build_identity_autoencoder()
    unet = UNet2DConditionModel(
        sample_size=LONG_SIDE,
        in_channels=2 * _LATENT_CHANNELS,
        out_channels=_LATENT_CHANNELS,
        layers_per_block=1,
        block_out_channels=(16, 32, 64, 128),
        down_block_types=("DownBlock2D", "DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D", "UpBlock2D"),
        cross_attention_dim=_TEXT_WIDTH,
        attention_head_dim=4,  # diffusers' name for the number of heads
        norm_num_groups=8,
        # The instruction also reaches every residual block, at every level: pooled (attention pooling over
        # its tokens), added to the timestep embedding, and applied as a per-channel scale and shift. A
        # colour edit is close to a per-channel affine map; through cross-attention alone (only at 1/4 and
        # 1/8 of the side) a first trial had learned to tell the instructions apart for night only after
        # 850 steps, and gave every other instruction the same average edit.
        addition_embed_type="text",
        addition_embed_type_num_heads=4,
        resnet_time_scale_shift="scale_shift",
    )
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(tokenizer),
            hidden_size=_TEXT_WIDTH,
            intermediate_size=4 * _TEXT_WIDTH,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=_MAX_TOKENS,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
    )
    scheduler = EulerDiscreteScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000,
        # Zero terminal SNR (Lin et al. 2023): in pixel space Stable Diffusion's schedule leaves the target's
        # global colour readable at t = 999, so a model learns to read it there, and at inference (pure noise)
        # invents random colour casts. With no signal left at t = 999 it must take the edit from its inputs.
        # It predicts the clean image: a deterministic edit is then a function of the source alone that the
        # UNet can learn to compute exactly, where an epsilon or v target mixes in the noise at 1 / sigma and
        # a small, briefly trained UNet leaves that noise in its output as grain.
        prediction_type="sample", rescale_betas_zero_snr=True, timestep_spacing="trailing",
    )  # fmt: skip
    for model in (unet, vae, text_encoder):
        model.eval()
    return {"unet": unet, "vae": vae, "text_encoder": text_encoder, "tokenizer": tokenizer, "scheduler": scheduler}


@torch.no_grad()
def autoencoder_psnr(vae, images: list[np.ndarray]) -> float:
    """Mean PSNR (dB, images in [0, 1]) of ``vae``'s reconstructions (posterior mode) of ``H x W x 3`` float images."""
    scores = []
    for image in images:
        pixels = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))[None].float() * 2 - 1
        out = vae.decode(vae.encode(pixels).latent_dist.mode()).sample.clamp(-1, 1)
        mse = float(((out - pixels) / 2).pow(2).mean())
        scores.append(10 * np.log10(1.0 / max(mse, 1e-12)))
    return float(np.mean(scores))


def latent_scaling_factor(vae, dataset, *, count: int = 64) -> float:
    """1 / the standard deviation of the latents of ``count`` examples, as Stable Diffusion scales its latents."""
    with torch.no_grad():
        images = torch.stack([dataset[i][0] for i in range(count)]) * 2 - 1
        latents = vae.encode(images).latent_dist.mode()
    return float(1.0 / latents.std())


def build_identity_autoencoder():
    """An ``AutoencoderKL`` (no downsampling, 3 latent channels) whose encoder and decoder are the identity.

    Each residual block's last convolution is zero, so it passes its input on.
    What remains is ``GroupNorm -> SiLU -> conv`` at each end, made linear
    with two facts: a group holding the channels ``(x, -x, c, -c)`` for a
    constant ``c`` much larger than ``|x| <= 1`` has mean exactly 0 and a
    standard deviation of ``c / sqrt(2)`` to within ``x^2 / c^2`` (1e-6
    here), so the norm only rescales; and ``SiLU(x) - SiLU(-x) = x`` exactly.
    The posterior's log-variance is -30 (diffusers' floor): a sample is the mean.
    """
    from diffusers import AutoencoderKL

    vae = AutoencoderKL(
        down_block_types=("DownEncoderBlock2D",),
        up_block_types=("UpDecoderBlock2D",),
        block_out_channels=(_AE_WIDTH,),
        layers_per_block=1,
        latent_channels=_LATENT_CHANNELS,
        norm_num_groups=_AE_WIDTH // 4,
        sample_size=LONG_SIDE,
        scaling_factor=1.0,
        mid_block_add_attention=False,
    )
    with torch.no_grad():
        for p in vae.parameters():
            p.zero_()
        for half in (vae.encoder, vae.decoder):
            _split_signs(half.conv_in)
            for module in half.modules():
                if module.__class__.__name__ == "ResnetBlock2D":
                    for norm in (module.norm1, module.norm2):
                        norm.weight.fill_(1.0)
            norm = half.conv_norm_out
            norm.weight.zero_()
            norm.weight[: 4 * _LATENT_CHANNELS : 4] = _AE_OFFSET / np.sqrt(2)
            norm.weight[1 : 4 * _LATENT_CHANNELS : 4] = _AE_OFFSET / np.sqrt(2)
        for conv, logvar in ((vae.encoder.conv_out, True), (vae.decoder.conv_out, False)):
            for k in range(_LATENT_CHANNELS):
                conv.weight[k, 4 * k, 1, 1] = 1.0
                conv.weight[k, 4 * k + 1, 1, 1] = -1.0
            if logvar:
                conv.bias[_LATENT_CHANNELS:] = -30.0
        for conv in (vae.quant_conv, vae.post_quant_conv):
            conv.weight[:, :, 0, 0] = torch.eye(conv.weight.shape[0])
    vae.eval()
    return vae


def _split_signs(conv) -> None:
    """conv_in: group k holds (x_k, -x_k, c, -c); the last group only (c, -c, c, -c)."""
    for k in range(_LATENT_CHANNELS):
        conv.weight[4 * k, k, 1, 1] = 1.0
        conv.weight[4 * k + 1, k, 1, 1] = -1.0
    for group in range(_AE_WIDTH // 4):
        conv.bias[4 * group + 2] = _AE_OFFSET
        conv.bias[4 * group + 3] = -_AE_OFFSET
        if group == _LATENT_CHANNELS:
            conv.bias[4 * group] = _AE_OFFSET
            conv.bias[4 * group + 1] = -_AE_OFFSET
