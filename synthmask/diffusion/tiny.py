"""Tiny random-initialized Stable Diffusion pipelines ("dummy components") for tests and CPU runs.

The pipeline has exactly the structure of Stable Diffusion 1.x (``AutoencoderKL``,
``UNet2DConditionModel`` with ``attn1``/``attn2`` transformer blocks, ``CLIPTextModel``,
``CLIPTokenizer``, ``DDIMScheduler``) but with a few thousand times fewer parameters, so it
loads through the same ``from_pretrained`` path as a real checkpoint and runs in milliseconds.

Default geometry (``sample_size=32``, two UNet levels, two VAE levels):
image 64x64 -> latent 4x32x32; cross-attention at latent resolutions 32 and 16.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel

from synthmask.diffusion.tokenizer import CLIP_VOCAB_SIZE, build_clip_tokenizer

# Stable Diffusion 1.x noise schedule (as in its scheduler_config.json).
SD_SCHEDULE = {
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "clip_sample": False,
    "set_alpha_to_one": False,
    "steps_offset": 1,
}


def tiny_unet(
    sample_size: int = 32,
    block_out_channels: Sequence[int] = (32, 64),
    cross_attention_dim: int = 32,
    attention_heads: int = 2,
    layers_per_block: int = 1,
    norm_num_groups: int = 8,
) -> UNet2DConditionModel:
    """UNet2DConditionModel with a cross-attention block at every level.

    With ``n = len(block_out_channels)`` levels the cross-attention resolutions are
    ``sample_size / 2**k`` for ``k = 0..n-1`` (plus the mid block at the lowest one).
    """
    if len(block_out_channels) < 2:
        raise ValueError(
            f"block_out_channels={tuple(block_out_channels)} gives one resolution; "
            "give at least two levels, e.g. (32, 64), so cross-attention runs at 2+ resolutions."
        )
    n = len(block_out_channels)
    if sample_size % 2 ** (n - 1):
        raise ValueError(
            f"sample_size={sample_size} is not divisible by 2**{n - 1} "
            f"(the UNet downsamples {n - 1} times); use a multiple of {2 ** (n - 1)}."
        )
    return latent_unet(
        sample_size,
        block_out_channels,
        ("CrossAttnDownBlock2D",) * n,
        ("CrossAttnUpBlock2D",) * n,
        cross_attention_dim,
        attention_heads,
        layers_per_block,
        norm_num_groups,
    )


def latent_unet(
    sample_size: int,
    block_out_channels: Sequence[int],
    down_block_types: Sequence[str],
    up_block_types: Sequence[str],
    cross_attention_dim: int,
    attention_heads: int,
    layers_per_block: int,
    norm_num_groups: int,
) -> UNet2DConditionModel:
    """UNet2DConditionModel on 4-channel latents with the given block types (the mid block has
    cross-attention); shared by the tiny test UNet and the shapes-world LDM recipe."""
    return UNet2DConditionModel(
        sample_size=sample_size,
        in_channels=4,
        out_channels=4,
        block_out_channels=tuple(block_out_channels),
        layers_per_block=layers_per_block,
        down_block_types=tuple(down_block_types),
        up_block_types=tuple(up_block_types),
        cross_attention_dim=cross_attention_dim,
        # diffusers' legacy naming: UNet2DConditionModel's `attention_head_dim` is the number
        # of heads. Few wide heads keep CPU SDPA fast (head_dim 4 is ~5x slower than 16).
        attention_head_dim=attention_heads,
        norm_num_groups=norm_num_groups,
    )


def tiny_vae(
    image_size: int,
    block_out_channels: Sequence[int] = (16, 32),
    norm_num_groups: int = 8,
) -> AutoencoderKL:
    """AutoencoderKL with 4 latent channels, downsampling by ``2**(len(block_out_channels)-1)``."""
    n = len(block_out_channels)
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * n,
        up_block_types=("UpDecoderBlock2D",) * n,
        block_out_channels=tuple(block_out_channels),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=norm_num_groups,
        sample_size=image_size,
    )


def tiny_text_encoder(hidden_size: int = 32, num_layers: int = 1) -> CLIPTextModel:
    """CLIPTextModel over CLIP's 49408-token vocabulary; ``num_layers=0`` is allowed.

    With 0 layers each output position is its own token + position embedding (then the final
    layer norm), so a class word's token alone carries the class (no causal mixing).
    """
    if num_layers < 0:
        raise ValueError(f"text_layers={num_layers} is negative; use 0 or more.")
    config = CLIPTextConfig(
        vocab_size=CLIP_VOCAB_SIZE,
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=max(1, hidden_size // 16),
        max_position_embeddings=77,
        projection_dim=hidden_size,
        bos_token_id=49406,
        eos_token_id=49407,
        pad_token_id=49407,
    )
    return CLIPTextModel(config)


def pipeline_from_parts(
    unet: UNet2DConditionModel, vae: AutoencoderKL, text_encoder: CLIPTextModel
) -> StableDiffusionPipeline:
    """A Stable Diffusion pipeline around the given networks: the project's CLIP tokenizer,
    DDIM with SD's schedule, no safety checker, no progress bar."""
    pipe = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=build_clip_tokenizer(),
        unet=unet,
        scheduler=DDIMScheduler(**SD_SCHEDULE),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def build_tiny_pipeline(
    save_dir: Path | str | None = None,
    *,
    sample_size: int = 32,
    text_layers: int = 1,
    text_hidden_size: int = 32,
    unet_channels: Sequence[int] = (32, 64),
    vae_channels: Sequence[int] = (16, 32),
    attention_heads: int = 2,
    seed: int = 0,
) -> StableDiffusionPipeline:
    """A random-initialized Stable-Diffusion-1.x-shaped pipeline, tiny enough for CPU tests.

    Args:
        save_dir: if given, ``save_pretrained(save_dir)`` (safetensors); reload with
            ``StableDiffusionPipeline.from_pretrained(save_dir)``.
        sample_size: latent side length; images are ``sample_size * 2**(len(vae_channels)-1)``.
        text_layers: transformer layers of the CLIP text encoder (0 allowed).
        text_hidden_size: text embedding width = the UNet's cross-attention dimension.
        unet_channels: UNet level widths; cross-attention runs at every level.
        vae_channels: VAE level widths; the VAE downsamples ``len - 1`` times.
        attention_heads: attention heads per UNet transformer block.
        seed: weights are a pure function of the arguments and this seed.

    Returns:
        ``StableDiffusionPipeline`` (fp32, CPU, DDIM scheduler, no safety checker).
    """
    vae_factor = 2 ** (len(vae_channels) - 1)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        unet = tiny_unet(
            sample_size=sample_size,
            block_out_channels=unet_channels,
            cross_attention_dim=text_hidden_size,
            attention_heads=attention_heads,
        )
        vae = tiny_vae(sample_size * vae_factor, block_out_channels=vae_channels)
        text_encoder = tiny_text_encoder(text_hidden_size, text_layers)
    pipe = pipeline_from_parts(unet, vae, text_encoder)
    if save_dir is not None:
        save_dir = Path(save_dir)
        pipe.save_pretrained(str(save_dir), safe_serialization=True)
        # The classic vocab.json/merges.txt beside tokenizer.json keep the dir loadable everywhere.
        build_clip_tokenizer(save_dir / "tokenizer")
    return pipe
