"""LDMTrainModule: stage 2 of the shapes-world tiny LDM, the denoiser and text encoder.

Frozen VAE (stage 1), ``UNet2DConditionModel`` + 0-layer ``CLIPTextModel`` trained with
v-prediction on SD's scaled_linear schedule, min-SNR-gamma weights, caption dropout
(classifier-free guidance), separate learning rates for the text encoder and the cross-attention
key/value projections, and an EMA of UNet + text encoder kept in the module (so it is in every
checkpoint and a resumed run continues it).

Export: ``python -m synthmask.lightning_modules.diffusion_export export CKPT OUT_DIR`` writes a
standard ``StableDiffusionPipeline`` directory (EMA weights) loadable with ``from_pretrained``.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL, StableDiffusionPipeline, UNet2DConditionModel
from lightning.pytorch.cli import OptimizerCallable
from lightning.pytorch.utilities import rank_zero_only
from transformers import CLIPTextModel

from synthmask.diffusion.tokenizer import build_clip_tokenizer
from synthmask.diffusion.tokens import class_token_positions
from synthmask.ldm.attention_loss import install_recording, localization_loss
from synthmask.ldm.recipe import (
    assemble_pipeline,
    ema_decay_at,
    ema_update,
    min_snr_weights,
    train_scheduler,
)
from synthmask.ldm.samples import DEFAULT_SAMPLE_PROMPTS, log_sample_grid
from synthmask.lightning_modules.diffusion_common import DiffusionStageModule, ShapesAdamW
from synthmask.prompt_types import Prompt


class LDMTrainModule(DiffusionStageModule):
    """Trains the tiny LDM's UNet and text encoder on a frozen VAE; see the module docstring.

    Args:
        vae: the trained autoencoder (``synthmask.ldm.nets.ShapesVAE`` with ``pretrained``).
        unet / text_encoder: the denoiser and text encoder (``ShapesUNet``,
            ``ShapesTextEncoder``; ``pretrained`` starts them from a pipeline directory).
        optimizer: optimizer over three groups: the UNet (its lr), the UNet's attn2 to_k/to_v
            (``cross_attention_lr``) and the text encoder (``text_lr``, no weight decay).
        text_lr / cross_attention_lr: learning rates of those groups (None = the optimizer's).
        warmup_steps: linear LR warm-up; constant afterwards.
        caption_dropout: probability a caption is replaced by "" (for guidance).
        min_snr_gamma: min-SNR-gamma (None = uniform weights).
        ema_decay: maximum EMA decay (warm-up schedule, see ``ema_decay_at``).
        init_ema_dir: optional pipeline directory whose UNet + text encoder start the EMA (the
            EMA then keeps its full decay from the first step); default: copies of the networks.
        attention_loss_weight: weight of the optional class-word localization loss
            (``synthmask.ldm.attention_loss``; needs batches with "prompt" and "mask").
        sample_every_n_steps: log a sample grid (EMA weights) every n optimizer steps (0 = off).
        sample_prompts: prompts of the grid (default: one per class + two-object prompts).
        sample_steps / guidance_scale: DDIM steps and guidance of the grid.
    """

    stage = "ldm"
    networks = ("vae", "unet", "text_encoder")

    def __init__(
        self,
        vae: AutoencoderKL,
        unet: UNet2DConditionModel,
        text_encoder: CLIPTextModel,
        optimizer: OptimizerCallable = ShapesAdamW,
        text_lr: float | None = None,
        cross_attention_lr: float | None = None,
        warmup_steps: int = 150,
        caption_dropout: float = 0.1,
        min_snr_gamma: float | None = 5.0,
        ema_decay: float = 0.999,
        init_ema_dir: str | None = None,
        attention_loss_weight: float = 0.0,
        sample_every_n_steps: int = 1000,
        sample_prompts: list[str] | None = None,
        sample_steps: int = 25,
        guidance_scale: float = 3.0,
    ) -> None:
        if not 0.0 <= caption_dropout < 1.0:
            raise ValueError(f"caption_dropout={caption_dropout} must be in [0, 1).")
        _check_shapes_fit(vae, unet, text_encoder)
        super().__init__(vae, optimizer, warmup_steps)
        self.save_hyperparameters(ignore=["vae", "unet", "text_encoder", "optimizer"])
        self.vae.requires_grad_(False).eval()
        self.unet = unet
        self.text_encoder = text_encoder
        self.ema_unet = copy.deepcopy(unet).requires_grad_(False)
        self.ema_text_encoder = copy.deepcopy(text_encoder).requires_grad_(False)
        # EMA loaded from a previous run: keep its full decay from the first step.
        self._ema_is_warm = init_ema_dir is not None
        if init_ema_dir is not None:
            self.ema_unet.load_state_dict(_pretrained_state("unet", init_ema_dir))
            self.ema_text_encoder.load_state_dict(_pretrained_state("text_encoder", init_ema_dir))
        self.sample_prompts = list(sample_prompts or DEFAULT_SAMPLE_PROMPTS)
        self.tokenizer = build_clip_tokenizer()
        self.noise_scheduler = train_scheduler()
        self._attention_maps: list[torch.Tensor] | None = None
        if attention_loss_weight > 0:
            self._attention_maps = install_recording(self.unet)

    def pipeline(self, use_ema: bool = True) -> StableDiffusionPipeline:
        """A StableDiffusionPipeline sharing this module's (EMA) weights."""
        self.vae.register_to_config(scaling_factor=float(self.latent_scale))
        unet = self.ema_unet if use_ema else self.unet
        text = self.ema_text_encoder if use_ema else self.text_encoder
        return assemble_pipeline(self.vae, unet, text, self.tokenizer)

    def parameter_groups(self) -> list[dict[str, Any]]:
        hp = self.hparams
        xattn = [
            p for n, p in self.unet.named_parameters() if ".attn2.to_k." in n or ".attn2.to_v." in n
        ]
        xattn_ids = {id(p) for p in xattn}
        rest = [p for p in self.unet.parameters() if id(p) not in xattn_ids]
        text: dict[str, Any] = {"params": list(self.text_encoder.parameters()), "weight_decay": 0.0}
        cross: dict[str, Any] = {"params": xattn}
        if hp.text_lr is not None:
            text["lr"] = hp.text_lr
        if hp.cross_attention_lr is not None:
            cross["lr"] = hp.cross_attention_lr
        return [{"params": rest}, cross, text]

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        loss, v_mse, loc = self.ldm_loss(
            batch["image"], list(batch["caption"]), batch.get("prompt"), batch.get("mask")
        )
        self.log_dict({"train/loss": loss, "train/v_mse": v_mse, "train/loc": loc}, prog_bar=True)
        return loss

    def encode_text(self, captions: list[str], encoder: CLIPTextModel) -> torch.Tensor:
        """Shape: list of B captions -> (B, 77, text hidden size)."""
        ids = self.tokenizer(
            captions,
            padding="max_length",
            max_length=self.tokenizer.model_max_length,
            truncation=True,
            return_tensors="pt",
        ).input_ids.to(self.device)
        return encoder(ids)[0]

    def ldm_loss(
        self,
        images: torch.Tensor,
        captions: list[str],
        prompts: list[Prompt] | None = None,
        masks: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(total loss, unweighted v MSE, localization term) of a batch in [-1, 1].

        The total is the min-SNR-weighted v-loss plus ``attention_loss_weight`` times the
        localization term (0 unless enabled and prompts + masks are given).
        """
        with torch.no_grad():
            latents = self.vae.encode(images).latent_dist.sample() * self.latent_scale
        drop = (torch.rand(len(captions)) < self.hparams.caption_dropout).tolist()
        captions = ["" if d else c for c, d in zip(captions, drop, strict=True)]
        text = self.encode_text(captions, self.text_encoder)
        noise = torch.randn_like(latents)
        steps = self.noise_scheduler.config.num_train_timesteps
        t = torch.randint(0, steps, (latents.shape[0],), device=self.device)
        noisy = self.noise_scheduler.add_noise(latents, noise, t)
        target = self.noise_scheduler.get_velocity(latents, noise, t)
        if self._attention_maps is not None:
            self._attention_maps.clear()
        pred = self.unet(noisy, t, text).sample
        per_sample = F.mse_loss(pred, target, reduction="none").mean(dim=(1, 2, 3))
        weights = min_snr_weights(
            t, self.noise_scheduler.alphas_cumprod, self.hparams.min_snr_gamma
        )
        loss = (per_sample * weights).mean()
        loc = loss.new_zeros(())
        if self._attention_maps and prompts is not None and masks is not None:
            positions = [
                None if d else class_token_positions(self.tokenizer, p)
                for p, d in zip(prompts, drop, strict=True)
            ]
            loc = localization_loss(self._attention_maps, positions, masks)
            loss = loss + self.hparams.attention_loss_weight * loc
        return loss, per_sample.mean(), loc

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        super().on_train_batch_end(outputs, batch, batch_idx)
        decay = self.hparams.ema_decay
        if not self._ema_is_warm:
            decay = ema_decay_at(self.global_step, decay)
        ema_update(self.ema_unet, self.unet, decay)
        ema_update(self.ema_text_encoder, self.text_encoder, decay)
        every = self.hparams.sample_every_n_steps
        if every and self.global_step % every == 0:
            self._log_samples()

    @rank_zero_only
    def _log_samples(self) -> None:
        out_dir = Path(self.trainer.default_root_dir) / "samples"
        log_sample_grid(
            self.pipeline(use_ema=True),
            self.sample_prompts,
            out_dir / f"step{self.global_step:07d}.png",
            loggers=self.trainer.loggers,
            seeds_per_prompt=2,
            step=self.global_step,
            num_inference_steps=self.hparams.sample_steps,
            guidance_scale=self.hparams.guidance_scale,
        )


def _check_shapes_fit(
    vae: AutoencoderKL, unet: UNet2DConditionModel, text_encoder: CLIPTextModel
) -> None:
    """The three networks must plug into each other; a mismatch names both sizes."""
    if unet.config.in_channels != vae.config.latent_channels:
        raise ValueError(
            f"unet in_channels={unet.config.in_channels} but the VAE has "
            f"{vae.config.latent_channels} latent channels; configure them alike."
        )
    if unet.config.cross_attention_dim != text_encoder.config.hidden_size:
        raise ValueError(
            f"unet cross_attention_dim={unet.config.cross_attention_dim} but the text encoder's "
            f"hidden_size={text_encoder.config.hidden_size}; configure them alike."
        )


def _pretrained_state(part: str, pipeline_dir: str) -> dict[str, torch.Tensor]:
    """float32 state dict of a pipeline directory's ``unet`` or ``text_encoder`` (EMA start)."""
    if not Path(pipeline_dir, part).is_dir():
        raise FileNotFoundError(
            f"init_ema_dir={pipeline_dir} has no {part}/ folder; give a StableDiffusionPipeline "
            "directory (e.g. synthmask/assets/shapes_ldm) or leave it out."
        )
    cls = UNet2DConditionModel if part == "unet" else CLIPTextModel
    source = cls.from_pretrained(pipeline_dir, subfolder=part)
    return {k: v.float() for k, v in source.state_dict().items()}
