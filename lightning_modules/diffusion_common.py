"""What the tiny LDM's two training stages share: the VAE and its latent scale, the training
cost counters, resumable seeding, caption batches on the device, a warm-up schedule, and the
networks' architecture recorded in every checkpoint (so an export rebuilds them from the
checkpoint alone)."""

from __future__ import annotations

import time
from typing import Any

import torch
from diffusers import AutoencoderKL
from lightning.pytorch import LightningModule
from lightning.pytorch.cli import OptimizerCallable
from torch import nn

from synthmask.ldm.nets import architecture

NETWORKS_KEY = "diffusion_networks"  # checkpoint entry: {attribute: architecture record}


class ShapesAdamW(torch.optim.AdamW):
    """AdamW with the tiny LDM's defaults (lr 1e-3, weight decay 1e-2, the fused kernel, which
    steps the 3M-row text embedding ~2x faster than the per-tensor loop)."""

    def __init__(
        self,
        params: Any,
        lr: float = 1e-3,
        weight_decay: float = 1e-2,
        fused: bool | None = True,
    ) -> None:
        super().__init__(params, lr=lr, weight_decay=weight_decay, fused=fused)


class DiffusionStageModule(LightningModule):
    """Base of ``VAETrainModule`` and ``LDMTrainModule`` (not trained on its own).

    Args:
        vae: the autoencoder (trained by the VAE stage, frozen by the LDM stage).
        optimizer: builds the optimizer from the parameter groups of ``parameter_groups``.
        warmup_steps: linear LR warm-up over this many optimizer steps; constant afterwards.
    """

    stage = ""
    networks: tuple[str, ...] = ("vae",)  # attributes whose architecture checkpoints record

    def __init__(self, vae: AutoencoderKL, optimizer: OptimizerCallable, warmup_steps: int) -> None:
        super().__init__()
        self.vae = vae
        self.optimizer_factory = optimizer
        self.warmup_steps = warmup_steps
        self.register_buffer(
            "latent_scale", torch.tensor(float(vae.config.scaling_factor)), persistent=True
        )
        # Training cost so far (process CPU seconds, wall seconds), kept across resumes.
        self.register_buffer("train_cpu_seconds", torch.zeros((), dtype=torch.float64))
        self.register_buffer("train_wall_seconds", torch.zeros((), dtype=torch.float64))
        self._clock: tuple[float, float] | None = None

    def parameter_groups(self) -> list[dict[str, Any]]:
        """The optimizer's parameter groups (a group's own "lr" overrides the optimizer's)."""
        raise NotImplementedError

    def transfer_batch_to_device(
        self, batch: Any, device: torch.device, dataloader_idx: int
    ) -> Any:
        # Caption batches hold frozen Prompt dataclasses, which Lightning's default refuses to walk.
        if isinstance(batch, dict):
            return {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}
        return super().transfer_batch_to_device(batch, device, dataloader_idx)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint[NETWORKS_KEY] = {
            "stage": self.stage,
            **{name: architecture(getattr(self, name)) for name in self.networks},
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # Checkpoints written before the cost counters existed resume with zero counters.
        state = checkpoint["state_dict"]
        for name in ("train_cpu_seconds", "train_wall_seconds"):
            state.setdefault(name, torch.zeros((), dtype=torch.float64))

    def on_train_start(self) -> None:
        # A resumed run restarts its (non-resumable) loader; reseeding by the step keeps it from
        # replaying the data order and noise draws of the run's first steps.
        if self.global_step > 0:
            torch.manual_seed(1_000_003 * self.global_step % (2**31))

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        now = (time.process_time(), time.perf_counter())
        if self._clock is not None:
            self.train_cpu_seconds += now[0] - self._clock[0]
            self.train_wall_seconds += now[1] - self._clock[1]
        self._clock = now

    def configure_optimizers(self) -> dict[str, Any]:
        optimizer = self.optimizer_factory(self.parameter_groups())
        warmup = max(1, self.warmup_steps)
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: min(1.0, (step + 1) / warmup)
        )
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
        }


def trainable(module: nn.Module) -> list[nn.Parameter]:
    """Parameters of ``module`` that require grad."""
    return [p for p in module.parameters() if p.requires_grad]
