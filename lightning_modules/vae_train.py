"""VAETrainModule: stage 1 of the shapes-world tiny LDM, the autoencoder.

``AutoencoderKL`` on images in [-1, 1] with L1 + L2 + a small KL + an edge (image gradient) L1.
At the end of fit the VAE is saved with ``save_pretrained`` to ``export_dir`` with
``scaling_factor = 1 / std(latents)``. ``train_part="decoder"`` fine-tunes only the decoder of a
trained VAE (Stable Diffusion's ft-MSE recipe): the encoder, hence the latent space and its
scaling factor, stay as they are, so a denoiser trained on them stays valid.

Export of a checkpoint's VAE: ``python -m synthmask.lightning_modules.diffusion_export vae CKPT
OUT_DIR`` (see ``diffusion_export.py``).
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL
from lightning.pytorch.cli import OptimizerCallable

from synthmask.ldm.recipe import edge_l1
from synthmask.lightning_modules.diffusion_common import (
    DiffusionStageModule,
    ShapesAdamW,
    trainable,
)

TRAIN_PARTS = ("all", "decoder")


class VAETrainModule(DiffusionStageModule):
    """Trains the shapes VAE (whole, or its decoder only); see the module docstring.

    Args:
        vae: the autoencoder, e.g. ``synthmask.ldm.nets.ShapesVAE`` (fresh, or ``pretrained``
            for a decoder fine-tune).
        optimizer: optimizer over the trainable VAE parameters (default ``ShapesAdamW``).
        train_part: "all" (encoder + decoder) or "decoder" (the latent space stays fixed; give a
            trained VAE).
        kl_weight / edge_weight: loss weights of the KL and edge terms (L1 + L2 weigh 1 each).
        warmup_steps: linear LR warm-up; constant afterwards.
        export_dir: where the trained VAE is saved at the end of fit (None = not saved).
    """

    stage = "vae"

    def __init__(
        self,
        vae: AutoencoderKL,
        optimizer: OptimizerCallable = ShapesAdamW,
        train_part: str = "all",
        kl_weight: float = 1e-4,
        edge_weight: float = 0.5,
        warmup_steps: int = 100,
        export_dir: str | None = None,
    ) -> None:
        if train_part not in TRAIN_PARTS:
            raise ValueError(f"train_part={train_part!r} is unknown; use one of {TRAIN_PARTS}.")
        super().__init__(vae, optimizer, warmup_steps)
        self.save_hyperparameters(ignore=["vae", "optimizer"])
        if train_part == "decoder":
            self.vae.encoder.requires_grad_(False)
            self.vae.quant_conv.requires_grad_(False)

    def parameter_groups(self) -> list[dict[str, Any]]:
        return [{"params": trainable(self.vae)}]

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        losses = self.vae_losses(batch["image"])
        self.log_dict({f"train/{k}": v for k, v in losses.items()}, prog_bar=True)
        return losses["loss"]

    def vae_losses(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """Autoencoder loss terms of a batch in [-1, 1]; "loss" is the weighted total."""
        # A decoder fine-tune builds no graph through the frozen encoder (nullcontext, not
        # set_grad_enabled(True): a caller's no_grad must still hold for a full VAE run).
        frozen = self.hparams.train_part == "decoder"
        with torch.no_grad() if frozen else contextlib.nullcontext():
            posterior = self.vae.encode(images).latent_dist
        recon = self.vae.decode(posterior.sample()).sample
        l1 = (recon - images).abs().mean()
        l2 = F.mse_loss(recon, images)
        kl = posterior.kl().mean() / posterior.mean[0].numel()
        edge = edge_l1(recon, images)
        loss = l1 + l2 + self.hparams.kl_weight * kl + self.hparams.edge_weight * edge
        psnr = 10.0 * torch.log10(4.0 / l2.detach().clamp_min(1e-10))
        return {"loss": loss, "l1": l1, "kl": kl, "psnr": psnr}

    def on_train_end(self) -> None:
        if self.hparams.export_dir:
            self.export_vae(Path(self.hparams.export_dir))

    @torch.no_grad()
    def export_vae(self, out_dir: Path, batches: int = 8) -> float:
        """Save the VAE with ``scaling_factor = 1 / std`` of latents of training batches (a
        decoder fine-tune keeps the scaling factor its denoiser was trained with)."""
        if self.hparams.train_part == "decoder":
            self.vae.save_pretrained(str(out_dir), safe_serialization=True)
            return float(self.vae.config.scaling_factor)
        loader = self.trainer.datamodule.train_dataloader()
        latents = []
        for i, batch in enumerate(loader):
            if i >= batches:
                break
            latents.append(self.vae.encode(batch["image"].to(self.device)).latent_dist.mode())
        scale = 1.0 / float(torch.cat(latents).std())
        self.vae.register_to_config(scaling_factor=scale)
        self.latent_scale.fill_(scale)
        self.vae.save_pretrained(str(out_dir), safe_serialization=True)
        return scale
