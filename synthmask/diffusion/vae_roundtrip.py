"""A VAE's reconstruction of images, quantized like a saved image: what a latent diffusion
model's decoder can show at best (used by the benchmarks to bound fidelity and rendering)."""

from __future__ import annotations

import torch
from diffusers import AutoencoderKL


@torch.no_grad()
def vae_roundtrip(vae: AutoencoderKL, pixels: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
    """Encode (latent mode, no sampling), decode, clamp and round to 8 bits.

    Shape:
        pixels float (B, 3, H, W) in [-1, 1] -> uint8 (B, 3, H, W)
    """
    if pixels.ndim != 4 or pixels.shape[1] != 3:
        raise ValueError(
            f"vae_roundtrip expects (B, 3, H, W) pixels in [-1, 1], got {tuple(pixels.shape)}; "
            "convert uint8 (B, H, W, 3) images with x.permute(0, 3, 1, 2) / 127.5 - 1."
        )
    vae = vae.eval()
    dtype = next(vae.parameters()).dtype
    out = [
        vae.decode(vae.encode(chunk.to(dtype)).latent_dist.mode()).sample.float()
        for chunk in pixels.split(batch_size)
    ]
    return ((torch.cat(out).clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
