"""Sample images with a diffusers pipeline while capturing their attention maps."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from synthmask.diffusion.capture import (
    CROSS,
    SELF,
    AttentionStore,
    CaptureConfig,
    install_capture,
    restore_processors,
)
from synthmask.prompt_types import Prompt


@dataclass
class SynthesisOutput:
    """Images and their attention, one row per prompt.

    Attributes:
        images: uint8 (B, H, W, 3).
        cross_attention: res -> float32 (B, T, h, w) (T = 77 tokens; h = w = res for square
            images): mean over heads, layers at that resolution and captured steps, of the
            conditional half only.
        self_attention: res -> float32 (B, h*w, h*w); empty unless captured.
    """

    images: torch.Tensor
    cross_attention: dict[int, torch.Tensor] = field(default_factory=dict)
    self_attention: dict[int, torch.Tensor] = field(default_factory=dict)


def initial_latents(
    seeds: Sequence[int], shape: tuple[int, int, int], dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """Initial noise, each row from its own CPU ``torch.Generator().manual_seed(seed)``.

    Shape:
        shape = (C, h, w) -> (len(seeds), C, h, w); unscaled (the pipeline multiplies by
        the scheduler's ``init_noise_sigma``).
    """
    rows = [
        torch.randn((1, *shape), generator=torch.Generator().manual_seed(int(s)), dtype=dtype)
        for s in seeds
    ]
    return torch.cat(rows)


def _validate(prompts: Sequence[Prompt], seeds: Sequence[int], steps: int) -> None:
    if len(prompts) != len(seeds):
        raise ValueError(
            f"{len(prompts)} prompts but {len(seeds)} seeds; give one seed per prompt."
        )
    if not prompts:
        raise ValueError("no prompts given; pass at least one Prompt.")
    if steps < 1:
        raise ValueError(f"num_inference_steps={steps}; use at least 1.")


@torch.no_grad()
def generate_with_attention(
    pipe: torch.nn.Module,
    prompts: list[Prompt],
    seeds: list[int],
    capture: CaptureConfig,
    num_inference_steps: int,
    guidance_scale: float,
    height: int | None = None,
    width: int | None = None,
    progress: bool = False,
) -> SynthesisOutput:
    """Run the pipeline's own ``__call__`` on ``prompts`` and return images + attention.

    Sample ``i`` starts from noise drawn with ``torch.Generator().manual_seed(seeds[i])``
    (and uses a generator of the same seed for any scheduler noise), so a sample does not
    depend on the other samples of the batch (within float tolerance of batched kernels).
    Processors are restored when the call ends, even on error.

    Shape:
        images uint8 (B, H, W, 3); cross_attention[res] (B, 77, h, w);
        self_attention[res] (B, h*w, h*w).
    """
    _validate(prompts, seeds, num_inference_steps)
    scale = pipe.vae_scale_factor
    height = height or pipe.unet.config.sample_size * scale
    width = width or pipe.unet.config.sample_size * scale
    if height % scale or width % scale:
        raise ValueError(
            f"height={height}, width={width} must be multiples of the VAE factor {scale}."
        )
    latent_hw = (height // scale, width // scale)
    device = pipe._execution_device
    dtype = pipe.unet.dtype
    latents = initial_latents(seeds, (pipe.unet.config.in_channels, *latent_hw))
    generators = [torch.Generator().manual_seed(int(s)) for s in seeds]

    # The loop length the pipeline will use (schedulers of order 2 run more iterations).
    pipe.scheduler.set_timesteps(num_inference_steps)
    store = AttentionStore(capture, len(pipe.scheduler.timesteps), batch_size=len(prompts))
    previous = install_capture(pipe.unet, store, latent_hw)
    progress_config = dict(getattr(pipe, "_progress_bar_config", {}))
    pipe.set_progress_bar_config(**{**progress_config, "disable": not progress})
    try:
        out = pipe(
            prompt=[p.text for p in prompts],
            height=height,
            width=width,
            num_inference_steps=num_inference_steps,
            guidance_scale=guidance_scale,
            latents=latents.to(device=device, dtype=dtype),
            generator=generators,
            output_type="pt",
            callback_on_step_end=store.step_callback,
            return_dict=True,
        )
    finally:
        restore_processors(pipe.unet, previous)
        pipe._progress_bar_config = progress_config
    if store.step != store.num_steps:
        raise RuntimeError(
            f"the pipeline ran {store.step} loop iterations, expected {store.num_steps}; "
            "the scheduler's step count changed during the call."
        )
    images = out.images.float().clamp(0, 1).mul(255).round().to(torch.uint8)
    return SynthesisOutput(
        images=images.permute(0, 2, 3, 1).cpu().contiguous(),
        cross_attention=store.mean(CROSS),
        self_attention=store.mean(SELF),
    )
