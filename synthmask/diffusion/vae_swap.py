"""Replace a pipeline's autoencoder, e.g. with a decoder adapted to a new domain.

The denoiser works in the latent space of the encoder it was trained with, so the replacement
must keep that space: the same latent channels and scaling factor (a decoder-only fine-tune, with
the encoder frozen, does; see ``VAETrainModule(train_part="decoder")``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from diffusers import AutoencoderKL, DiffusionPipeline


def vae_folder(vae_path: str | Path) -> Path:
    """The VAE's folder: ``vae_path`` itself (a ``save_pretrained`` VAE) or its ``vae/``.

    Raises FileNotFoundError naming the path and what it should hold.
    """
    path = Path(vae_path).expanduser()
    for candidate in (path, path / "vae"):
        if (candidate / "config.json").is_file():
            return candidate
    raise FileNotFoundError(
        f"vae_path={path} holds no autoencoder (no config.json there or in vae/); give the "
        "folder written by the VAE fine-tune's export (e.g. runs/shapes_target_decoder/export) "
        "or a pipeline directory, or fix `vae_path`."
    )


def _latent_signature(config: Any) -> tuple[int, float]:
    return int(config.latent_channels), round(float(config.scaling_factor), 6)


def replace_vae(
    pipe: DiffusionPipeline, vae_path: str | Path, dtype: torch.dtype = torch.float32
) -> None:
    """Load the autoencoder at ``vae_path`` into ``pipe.vae`` (in place).

    Raises ValueError when its latent channels or scaling factor differ from the pipeline's own
    VAE (the denoiser would decode garbage).
    """
    folder = vae_folder(vae_path)
    vae = AutoencoderKL.from_pretrained(folder, torch_dtype=dtype)
    own, new = _latent_signature(pipe.vae.config), _latent_signature(vae.config)
    if own != new:
        raise ValueError(
            f"the VAE at {folder} has latent channels / scaling factor {new}, the pipeline's own "
            f"VAE {own}: the denoiser's latents would not match. Use a VAE fine-tuned from the "
            "pipeline's own with the encoder kept (train_part: decoder)."
        )
    pipe.register_modules(vae=vae)  # sets pipe.vae and the pipeline's config entry
