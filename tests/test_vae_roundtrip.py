"""synthmask.diffusion.vae_roundtrip: a VAE's 8-bit reconstruction of images."""

from __future__ import annotations

import pytest
import torch

from synthmask.diffusion.vae_roundtrip import vae_roundtrip
from synthmask.world.ldm_recipe import build_shapes_vae


def test_roundtrip_is_the_decoded_latent_mode_rounded_to_8_bits() -> None:
    torch.manual_seed(0)
    vae = build_shapes_vae(image_size=16, block_out_channels=(16, 32))
    pixels = torch.rand(5, 3, 16, 16) * 2 - 1
    out = vae_roundtrip(vae, pixels, batch_size=2)  # chunks of 2, 2, 1
    assert out.dtype == torch.uint8 and out.shape == (5, 3, 16, 16)
    with torch.no_grad():
        reference = vae.decode(vae.encode(pixels).latent_dist.mode()).sample
    expected = ((reference.clamp(-1, 1) + 1) * 127.5).round()
    assert (out.float() - expected).abs().max() <= 1  # chunking: float rounding only


def test_roundtrip_names_the_expected_layout() -> None:
    vae = build_shapes_vae(image_size=16, block_out_channels=(16, 32))
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\).*permute"):
        vae_roundtrip(vae, torch.zeros(2, 16, 16, 3))
