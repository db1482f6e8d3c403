"""Components and loss math of the shapes-world tiny LDM (no Lightning here).

The recipe (training loops: ``lightning_modules/vae_train.py``, ``lightning_modules/ldm_train.py``;
networks as configs name them: ``synthmask.ldm.nets``):

- ``AutoencoderKL`` with a factor-2 downsampling: 32 px images <-> 4 x 16 x 16 latents.
- ``UNet2DConditionModel`` on 16 x 16 latents with cross-attention at latent resolutions
  16 and 8 (down/up blocks) and 4 (mid block).
- ``CLIPTextModel`` with **zero** transformer layers: each output position is
  LN(token embedding + position embedding), so a class word's own token is the only place the
  UNet can read the class from (a causal encoder copies the whole caption into EOS/padding and a
  tiny UNet then never attends to the word; the model card's probes).
- v-prediction on Stable Diffusion's scaled_linear DDPM schedule, min-SNR-gamma weights.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from diffusers import (
    AutoencoderKL,
    DDIMScheduler,
    DDPMScheduler,
    StableDiffusionPipeline,
    UNet2DConditionModel,
)
from torch import nn
from transformers import CLIPTextModel, CLIPTokenizer

from synthmask.diffusion.tiny import SD_SCHEDULE, latent_unet, tiny_text_encoder, tiny_vae

PREDICTION_TYPE = "v_prediction"


def build_shapes_unet(
    sample_size: int = 16,
    block_out_channels: Sequence[int] = (32, 64, 128),
    cross_attention_levels: Sequence[bool] = (True, True, False),
    cross_attention_dim: int = 64,
    attention_heads: int = 2,
    layers_per_block: int = 1,
    norm_num_groups: int = 16,
) -> UNet2DConditionModel:
    """UNet whose levels with ``cross_attention_levels[k]`` have attn1/attn2 transformer blocks.

    Level k runs at latent side ``sample_size / 2**k``; the mid block (cross-attention) runs at
    the lowest one. Default: cross-attention at 16, 8 and 4 (mid) for 16 x 16 latents.
    """
    levels = len(block_out_channels)
    if len(cross_attention_levels) != levels:
        raise ValueError(
            f"cross_attention_levels has {len(cross_attention_levels)} entries but the UNet has "
            f"{levels} levels (block_out_channels={tuple(block_out_channels)}); give one per level."
        )
    if sum(bool(c) for c in cross_attention_levels) < 1:
        raise ValueError("cross_attention_levels has no True entry; enable at least one level.")
    down = tuple("CrossAttnDownBlock2D" if c else "DownBlock2D" for c in cross_attention_levels)
    up = tuple("CrossAttnUpBlock2D" if c else "UpBlock2D" for c in reversed(cross_attention_levels))
    return latent_unet(
        sample_size,
        block_out_channels,
        down,
        up,
        cross_attention_dim,
        attention_heads,
        layers_per_block,
        norm_num_groups,
    )


def build_shapes_vae(
    image_size: int = 32, block_out_channels: Sequence[int] = (32, 64), norm_num_groups: int = 16
) -> AutoencoderKL:
    """AutoencoderKL (4 latent channels) downsampling by ``2**(len(block_out_channels)-1)``."""
    return tiny_vae(
        image_size, block_out_channels=block_out_channels, norm_num_groups=norm_num_groups
    )


def build_shapes_text_encoder(hidden_size: int = 64, num_layers: int = 0) -> CLIPTextModel:
    """CLIPTextModel over the CLIP vocabulary; 0 layers = no cross-token mixing."""
    return tiny_text_encoder(hidden_size=hidden_size, num_layers=num_layers)


def train_scheduler() -> DDPMScheduler:
    """SD's scaled_linear DDPM schedule with v-prediction targets."""
    return DDPMScheduler(
        num_train_timesteps=SD_SCHEDULE["num_train_timesteps"],
        beta_start=SD_SCHEDULE["beta_start"],
        beta_end=SD_SCHEDULE["beta_end"],
        beta_schedule=SD_SCHEDULE["beta_schedule"],
        clip_sample=False,
        prediction_type=PREDICTION_TYPE,
    )


def sample_scheduler() -> DDIMScheduler:
    """DDIM sampler of the shipped pipeline (same schedule, v-prediction)."""
    return DDIMScheduler(**SD_SCHEDULE, prediction_type=PREDICTION_TYPE)


def min_snr_weights(
    timesteps: torch.Tensor, alphas_cumprod: torch.Tensor, gamma: float | None
) -> torch.Tensor:
    """Min-SNR-gamma loss weights for v-prediction: ``min(snr, gamma) / (snr + 1)``.

    ``gamma=None`` gives uniform weights 1 (plain v-loss). Hang et al. 2023, eq. for v targets.

    Shape:
        timesteps (B,) int64, alphas_cumprod (T,) -> (B,) float32
    """
    if gamma is None:
        return torch.ones(timesteps.shape, dtype=torch.float32, device=timesteps.device)
    abar = alphas_cumprod.to(timesteps.device)[timesteps].float()
    snr = abar / (1.0 - abar)
    return torch.clamp(snr, max=gamma) / (snr + 1.0)


@torch.no_grad()
def ema_update(ema: nn.Module, model: nn.Module, decay: float) -> None:
    """In-place ``ema = decay * ema + (1 - decay) * model`` over parameters; buffers are copied."""
    for e, p in zip(ema.parameters(), model.parameters(), strict=True):
        e.lerp_(p.detach().to(e.dtype), 1.0 - decay)
    for e, b in zip(ema.buffers(), model.buffers(), strict=True):
        e.copy_(b)


def ema_decay_at(step: int, max_decay: float) -> float:
    """Warm-up EMA decay ``min(max_decay, (1 + step) / (10 + step))`` (early EMA tracks fast)."""
    return min(max_decay, (1.0 + step) / (10.0 + step))


def edge_l1(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean L1 distance of horizontal and vertical image gradients (keeps shape corners sharp).

    Shape:
        prediction, target (B, C, H, W) -> scalar
    """
    dx = lambda x: x[..., :, 1:] - x[..., :, :-1]  # noqa: E731
    dy = lambda x: x[..., 1:, :] - x[..., :-1, :]  # noqa: E731
    return (dx(prediction) - dx(target)).abs().mean() + (dy(prediction) - dy(target)).abs().mean()


def assemble_pipeline(
    vae: AutoencoderKL,
    unet: UNet2DConditionModel,
    text_encoder: CLIPTextModel,
    tokenizer: CLIPTokenizer,
) -> StableDiffusionPipeline:
    """A standard ``StableDiffusionPipeline`` of the given parts (DDIM, v-prediction, no checker)."""
    pipe = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=sample_scheduler(),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe
