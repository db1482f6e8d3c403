"""Tiny random pipelines of the three Stable Diffusion families, written by diffusers itself
(``save_pretrained``) to a folder, as a user's own model directory would be.

- ``sd1``: SD 1.x layout (conv projections, epsilon prediction); cross/self-attention at latent
  sides 16 and 8 for 32 px images.
- ``sd2``: SD 2.x layout (linear projections, per-level head counts, GELU text encoder,
  v-prediction); sides 16 and 8.
- ``sdxl``: SDXL layout (no attention at the top level, two text encoders, text_time
  conditioning); side 8 only.
"""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import (
    DDIMScheduler,
    EulerDiscreteScheduler,
    StableDiffusionPipeline,
    StableDiffusionXLPipeline,
    UNet2DConditionModel,
)
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

from synthmask.diffusion.tiny import SD_SCHEDULE, build_tiny_pipeline, tiny_vae
from synthmask.diffusion.tokenizer import build_clip_tokenizer

FAMILIES = ("sd1", "sd2", "sdxl")
# The self-attention side `SelfRefineMaskConfig` picks at 32 px (largest side <= 32).
AUTO_SELF_SIDE = {"sd1": 16, "sd2": 16, "sdxl": 8}


def _text_config(hidden_act: str = "quick_gelu") -> CLIPTextConfig:
    return CLIPTextConfig(
        hidden_size=32, intermediate_size=37, num_attention_heads=4, num_hidden_layers=1,
        vocab_size=49408, projection_dim=32, bos_token_id=49406, eos_token_id=49407,
        pad_token_id=49407, hidden_act=hidden_act,
    )  # fmt: skip


def save_sd2(save_dir: Path) -> None:
    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        sample_size=16,
        block_out_channels=(32, 64),
        layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        attention_head_dim=(2, 4),
        use_linear_projection=True,
        cross_attention_dim=32,
        norm_num_groups=8,
    )
    pipe = StableDiffusionPipeline(
        vae=tiny_vae(32),
        text_encoder=CLIPTextModel(_text_config("gelu")),
        tokenizer=build_clip_tokenizer(),
        unet=unet,
        scheduler=DDIMScheduler(**SD_SCHEDULE, prediction_type="v_prediction"),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(str(save_dir), safe_serialization=True)


def save_sdxl(save_dir: Path) -> None:
    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64),
        layers_per_block=1,
        sample_size=16,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4),
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=8,
        transformer_layers_per_block=(1, 2),
        projection_class_embeddings_input_dim=80,  # 6 * 8 time ids + 32 pooled text
        cross_attention_dim=64,  # 32 + 32 from the two text encoders
        norm_num_groups=8,
    )
    pipe = StableDiffusionXLPipeline(
        vae=tiny_vae(32),
        text_encoder=CLIPTextModel(_text_config()),
        text_encoder_2=CLIPTextModelWithProjection(_text_config()),
        tokenizer=build_clip_tokenizer(),
        tokenizer_2=build_clip_tokenizer(),
        unet=unet,
        scheduler=EulerDiscreteScheduler(
            beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", steps_offset=1
        ),
        add_watermarker=False,
    )
    pipe.save_pretrained(str(save_dir), safe_serialization=True)


def save_family(family: str, save_dir: Path) -> Path:
    """Write the tiny pipeline of ``family`` (one of FAMILIES) to ``save_dir``."""
    if family == "sd1":
        build_tiny_pipeline(save_dir, sample_size=16, text_layers=1)
    elif family == "sd2":
        save_sd2(save_dir)
    elif family == "sdxl":
        save_sdxl(save_dir)
    else:
        raise KeyError(f"unknown family {family!r}; use one of {FAMILIES}")
    return save_dir
