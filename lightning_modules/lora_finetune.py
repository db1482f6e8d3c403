"""LoRAFineTuneModule: adapts a text-to-image latent diffusion model to unlabeled target images.

Technique 3 of METHOD.md. The base pipeline (Stable Diffusion by hub id / local dir, or the
shipped shapes LDM) is frozen; LoRA adapters on the UNet attention projections (optionally the
text encoder) learn the standard denoising objective on target-domain images captioned with one
generic template. The adapters are written in the diffusers format to ``output_dir`` at the end
of fit (and every ``save_every_n_steps``), ready for ``pipe.load_lora_weights(output_dir)`` or
``PipelineConfig(lora_path=output_dir)``.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from lightning.pytorch import LightningModule
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from lightning.pytorch.utilities import rank_zero_info

from synthmask.diffusion.lora import LoRASettings, add_lora, save_lora_weights

PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")
_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


class LoRAAdamW(torch.optim.AdamW):
    """AdamW with diffusers' LoRA-example defaults (lr 1e-4, weight decay 1e-2)."""

    def __init__(
        self,
        params,
        lr: float = 1e-4,
        betas: tuple[float, float] = (0.9, 0.999),
        weight_decay: float = 1e-2,
        eps: float = 1e-8,
    ) -> None:
        super().__init__(params, lr=lr, betas=betas, weight_decay=weight_decay, eps=eps)


class LoRAFineTuneModule(LightningModule):
    """LoRA fine-tuning of a diffusion model's UNet on unlabeled images (batch: ``pixel_values``
    float32 (B, 3, H, W) in [-1, 1] and ``caption`` list[str]).

    Args:
        model: base pipeline, hub id (e.g. ``stable-diffusion-v1-5/stable-diffusion-v1-5``) or
            local diffusers directory (e.g. the shipped shapes LDM).
        revision: hub revision of ``model``.
        output_dir: where the diffusers-format LoRA weights go
            (``<output_dir>/pytorch_lora_weights.safetensors``; periodic saves in
            ``<output_dir>/step_<n>/``).
        rank, alpha, dropout, target_modules, train_text_encoder: the LoRA adapters
            (``synthmask.diffusion.lora.LoRASettings``; alpha None = rank).
        optimizer: built on the LoRA parameters only; default AdamW lr 1e-4, wd 1e-2.
        lr_scheduler: optional, stepped every optimizer step.
        base_dtype: dtype of the frozen weights (UNet, VAE, text encoder): "float16" /
            "bfloat16" halve GPU memory; use with ``trainer.precision`` "16-mixed" /
            "bf16-mixed" (LoRA weights stay float32). Keep "float32" on CPU.
        gradient_checkpointing: ``unet.enable_gradient_checkpointing()`` (GPU memory for time).
        prediction_type: override the scheduler's ``prediction_type`` (None = keep it).
        noise_offset: offset noise strength (0 = plain noise).
        snr_gamma: Min-SNR loss weighting gamma (None = plain MSE; 5.0 is the usual value).
        save_every_n_steps: also save the LoRA every n optimizer steps (None = only at the end).
        caption_override: if set, every image is captioned with this text instead of the batch's
            ``caption`` (e.g. a data module whose captions name classes: the adaptation stays
            unlabeled).
        image_key: batch key of the images in [-1, 1] (``pixel_values``; ``image`` for
            ``ShapesCaptionDataModule``).
    """

    def __init__(
        self,
        model: str,
        revision: str | None = None,
        output_dir: str = "outputs/lora",
        rank: int = 8,
        alpha: float | None = None,
        dropout: float = 0.0,
        target_modules: list[str] | None = None,
        train_text_encoder: bool = False,
        optimizer: OptimizerCallable = LoRAAdamW,
        lr_scheduler: LRSchedulerCallable | None = None,
        base_dtype: str = "float32",
        gradient_checkpointing: bool = False,
        prediction_type: str | None = None,
        noise_offset: float = 0.0,
        snr_gamma: float | None = None,
        save_every_n_steps: int | None = None,
        caption_override: str | None = None,
        image_key: str = "pixel_values",
    ) -> None:
        super().__init__()
        if base_dtype not in _DTYPES:
            raise ValueError(f"base_dtype {base_dtype!r} unknown; choose one of {list(_DTYPES)}.")
        if save_every_n_steps is not None and save_every_n_steps < 1:
            raise ValueError(f"save_every_n_steps must be >= 1 or None, got {save_every_n_steps}.")
        self.save_hyperparameters(ignore=["optimizer", "lr_scheduler"])
        settings = LoRASettings(
            rank=rank,
            alpha=alpha,
            dropout=dropout,
            train_text_encoder=train_text_encoder,
            **({"unet_targets": tuple(target_modules)} if target_modules else {}),
        )
        pipe = _load_base_pipeline(model, revision, base_dtype)
        self.unet = pipe.unet
        self.vae = pipe.vae
        self.text_encoder = pipe.text_encoder
        self.tokenizer = pipe.tokenizer
        self.vae.requires_grad_(False)
        self.noise_scheduler = _training_scheduler(pipe.scheduler.config, prediction_type)
        add_lora(self.unet, settings, self.text_encoder)
        # from_pretrained leaves models in eval mode and Lightning keeps each module's mode:
        # the adapted models train (LoRA dropout), the frozen VAE stays in eval.
        self.unet.train()
        self.text_encoder.train(train_text_encoder)
        self.vae.eval()
        if gradient_checkpointing:
            self.unet.enable_gradient_checkpointing()
            if train_text_encoder:
                self.text_encoder.gradient_checkpointing_enable()
        self.lora_settings = settings
        self.output_dir = Path(output_dir)
        self.optimizer_factory = optimizer
        self.lr_scheduler_factory = lr_scheduler
        self.noise_offset = noise_offset
        self.snr_gamma = snr_gamma
        self.save_every_n_steps = save_every_n_steps
        self.caption_override = caption_override
        self.image_key = image_key

    def setup(self, stage: str) -> None:
        # Half-precision frozen weights are a GPU memory saving; CPU kernels for them are slow
        # or missing, so the same config also runs (as float32) on a CPU.
        if self._trainer is not None and self.trainer.strategy.root_device.type == "cpu":
            for model in (self.unet, self.vae, self.text_encoder):
                if model.dtype != torch.float32:
                    rank_zero_info(f"synthmask: {type(model).__name__} cast to float32 on CPU")
                    model.to(torch.float32)

    # ----------------------------------------------------------------- training
    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]

    def encode_captions(self, captions: list[str]) -> torch.Tensor:
        """Shape: len(captions) strings -> text embeddings (B, 77, D)."""
        ids = self.tokenizer(
            list(captions),
            padding="max_length",
            max_length=self.tokenizer.model_max_length,
            truncation=True,
            return_tensors="pt",
        ).input_ids.to(self.device)
        with torch.set_grad_enabled(self.lora_settings.train_text_encoder and self.training):
            return self.text_encoder(ids, return_dict=False)[0]

    @torch.no_grad()
    def encode_images(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Shape: pixel_values (B, 3, H, W) in [-1, 1] -> scaled latents (B, 4, H/f, W/f)."""
        pixels = pixel_values.to(device=self.device, dtype=self.vae.dtype)
        latents = self.vae.encode(pixels).latent_dist.sample()
        shift = getattr(self.vae.config, "shift_factor", None) or 0.0
        return (latents - shift) * self.vae.config.scaling_factor

    def denoising_loss(self, batch: dict) -> torch.Tensor:
        """Noise-prediction MSE (target per the scheduler's prediction_type) for one batch."""
        images = self._images(batch)
        latents = self.encode_images(images).float()
        noise = torch.randn_like(latents)
        if self.noise_offset:
            noise = noise + self.noise_offset * torch.randn(
                latents.shape[0], latents.shape[1], 1, 1, device=latents.device
            )
        num_train = self.noise_scheduler.config.num_train_timesteps
        timesteps = torch.randint(0, num_train, (latents.shape[0],), device=latents.device)
        noisy = self.noise_scheduler.add_noise(latents, noise, timesteps)
        target = self.prediction_target(latents, noise, timesteps)
        captions = (
            [self.caption_override] * len(images) if self.caption_override else batch["caption"]
        )
        text = self.encode_captions(captions)
        unet_dtype = self.unet.dtype
        pred = self.unet(noisy.to(unet_dtype), timesteps, text.to(unet_dtype), return_dict=False)[
            0
        ].float()
        if self.snr_gamma is None:
            return F.mse_loss(pred, target)
        return self._min_snr_loss(pred, target, timesteps)

    def _images(self, batch: dict) -> torch.Tensor:
        if self.image_key not in batch:
            raise KeyError(
                f"the batch has no {self.image_key!r} images (keys: {sorted(batch)}); set "
                "LoRAFineTuneModule.image_key to the key of the [-1, 1] images."
            )
        return batch[self.image_key]

    def prediction_target(
        self, latents: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor
    ) -> torch.Tensor:
        """Shape: latents, noise (B, C, h, w), timesteps (B,) -> target (B, C, h, w)."""
        kind = self.noise_scheduler.config.prediction_type
        if kind == "epsilon":
            return noise
        if kind == "v_prediction":
            return self.noise_scheduler.get_velocity(latents, noise, timesteps)
        return latents  # "sample": x0 prediction

    def _min_snr_loss(self, pred, target, timesteps) -> torch.Tensor:
        from diffusers.training_utils import compute_snr

        snr = compute_snr(self.noise_scheduler, timesteps)
        weight = torch.clamp(snr, max=self.snr_gamma)
        if self.noise_scheduler.config.prediction_type == "epsilon":
            weight = weight / snr
        elif self.noise_scheduler.config.prediction_type == "v_prediction":
            weight = weight / (snr + 1)
        per_sample = F.mse_loss(pred, target, reduction="none").mean(dim=(1, 2, 3))
        return (per_sample * weight).mean()

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        loss = self.denoising_loss(batch)
        self.log("train/loss", loss, prog_bar=True, batch_size=len(self._images(batch)))
        return loss

    def transfer_batch_to_device(self, batch, device: torch.device, dataloader_idx: int):
        # Only tensors move: batches may carry Prompt dataclasses (ShapesCaptionDataModule),
        # which Lightning's collection mapping rejects.
        if isinstance(batch, dict):
            return {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}
        return super().transfer_batch_to_device(batch, device, dataloader_idx)

    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        step = self.global_step
        if self.save_every_n_steps and step > 0 and step % self.save_every_n_steps == 0:
            self.save_lora(self.output_dir / f"step_{step}")

    def on_fit_end(self) -> None:
        path = self.save_lora(self.output_dir)
        rank_zero_info(f"synthmask: LoRA weights saved to {path}")

    def configure_optimizers(self):
        params = self.trainable_parameters()
        optimizer = self.optimizer_factory(params)
        if self.lr_scheduler_factory is None:
            return optimizer
        scheduler = self.lr_scheduler_factory(optimizer)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
        }

    # ------------------------------------------------------------- saving/ckpt
    def save_lora(self, save_dir: str | Path) -> Path:
        """Write the adapters in the diffusers format (rank zero only); returns the file path."""
        is_main = self._trainer is None or self.trainer.is_global_zero
        return save_lora_weights(
            save_dir,
            self.unet,
            self.text_encoder if self.lora_settings.train_text_encoder else None,
            is_main_process=is_main,
        )

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        """Keep only the LoRA weights (a few MB instead of the whole frozen pipeline)."""
        trainable = {name for name, p in self.named_parameters() if p.requires_grad}
        checkpoint["state_dict"] = {
            k: v for k, v in checkpoint["state_dict"].items() if k in trainable
        }

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        """Complete a LoRA-only checkpoint with the frozen base just loaded from ``model``."""
        state = checkpoint["state_dict"]
        for key, value in self.state_dict().items():
            state.setdefault(key, value)


def _load_base_pipeline(model: str, revision: str | None, base_dtype: str):
    from synthmask.diffusion.pipeline import PipelineConfig, load_pipeline

    return load_pipeline(PipelineConfig(model=model, revision=revision, dtype=base_dtype))


def _training_scheduler(config, prediction_type: str | None):
    """DDPM scheduler with the base model's training noise schedule (and prediction type)."""
    from diffusers import DDPMScheduler

    overrides = {}
    if prediction_type is not None:
        if prediction_type not in PREDICTION_TYPES:
            raise ValueError(
                f"prediction_type {prediction_type!r} unknown; choose one of {PREDICTION_TYPES} "
                "or None to keep the model's."
            )
        overrides["prediction_type"] = prediction_type
    scheduler = DDPMScheduler.from_config(config, **overrides)
    if scheduler.config.prediction_type not in PREDICTION_TYPES:
        raise ValueError(
            f"the model's scheduler has prediction_type {scheduler.config.prediction_type!r}; "
            f"set LoRAFineTuneModule.prediction_type to one of {PREDICTION_TYPES}."
        )
    return scheduler
