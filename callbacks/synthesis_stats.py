"""Synthesis statistics and W&B sample grids for `SyntheticSegDataModule`.

`SynthesisStatsCallback` logs, through the trainer's loggers, the images/s of generation and
the cache hit rate: those of the ahead-of-time pass once at the start of training, and those of
the training data pipeline (on-the-fly generation, cache reads) every `log_every_n_steps` and at
each epoch end. At the end of `fit` it logs (and prints) the run's totals, summed over DDP ranks
and DataLoader workers: `synth/generated`, the samples this run generated, and `synth/cached`,
the samples it used without generating them (found in the cache, or generated meanwhile by a
concurrent run that had claimed them). `synthesis_wandb_images` builds `wandb.Image`s of samples with their pseudo-mask
and reliability overlays (used by the callback during `fit`, and by its `log_synthesis`, which
`synthmask synthesize` calls on the config's callbacks after filling the cache).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from lightning.pytorch import Callback, LightningModule, Trainer

from synthmask.cache import SampleRecord
from synthmask.callbacks.wandb_utils import find_wandb_logger
from synthmask.wandb_mode import offline_fallback_line, resolve_wandb_mode

IGNORE_INDEX = 255
RELIABILITY_LABELS = {0: "unreliable", 1: "reliable"}


def synthesis_wandb_images(
    records: Sequence[SampleRecord], class_names: Sequence[str]
) -> list[Any]:
    """One `wandb.Image` per record: the image with pseudo-mask and reliability overlays."""
    import wandb

    labels = {**dict(enumerate(class_names)), IGNORE_INDEX: "ignore"}
    images = []
    for record in records:
        prompt = record.meta.get("prompt", {}).get("text", "")
        present = [class_names[c] for c in record.meta.get("class_ids", []) if c < len(class_names)]
        images.append(
            wandb.Image(
                record.image,
                caption=f"{prompt} | seed {record.meta.get('seed')} | {', '.join(present)}",
                masks={
                    "pseudo_mask": {"mask_data": record.mask, "class_labels": labels},
                    "reliability": {
                        "mask_data": (record.reliability > 127).astype(np.uint8),
                        "class_labels": RELIABILITY_LABELS,
                    },
                },
            )
        )
    return images


def log_synthesis_run(datamodule: Any, report: Any) -> bool:
    """Log a synthesis pass (sample grid, images/s, cache hit rate) to W&B, as the data module's
    `wandb_log` says: None = into the active run only, True = start a run if none is active,
    False = never. Returns whether anything was logged.

    Args:
        datamodule: a `SyntheticSegDataModule` after `synthesize()`.
        report: its `SynthesisReport`.
    """
    mode = getattr(datamodule, "wandb_log", None)
    if mode is False or report is None:
        return False
    import wandb

    run, started = wandb.run, False
    if run is None:
        if not mode:
            return False
        # The mode W&B would pick; with no mode and no login, offline (and one line saying so).
        decision = resolve_wandb_mode()
        run = wandb.init(
            project=datamodule.wandb_project,
            job_type="synthesize",
            config=dict(datamodule.hparams),
            mode=decision.mode,
        )
        if decision.is_fallback:
            print(offline_fallback_line(os.environ.get("WANDB_DIR") or ".", run.id), flush=True)
        started = True
    run.log(
        {
            "synth/samples": synthesis_wandb_images(
                datamodule.sample_records(datamodule.wandb_samples), datamodule.class_names
            ),
            "synth/ahead_images_per_s": report.images_per_second,
            "synth/ahead_cache_hit_rate": report.cache_hit_rate,
            "synth/ahead_generated": report.generated,
        }
    )
    if started:
        run.finish()
    return True


def run_synthesis_totals(trainer: Trainer, datamodule: Any) -> tuple[int, int]:
    """(generated, cached) of the whole run: every rank's `datamodule.synthesis_totals()`,
    generated summed over ranks, used plan indices merged (a sample read on two ranks counts
    once). A collective under DDP: every rank must call it."""
    generated, used = datamodule.synthesis_totals()
    device = trainer.strategy.root_device
    count = torch.tensor([generated], dtype=torch.int64, device=device)
    flags = torch.as_tensor(np.asarray(used), dtype=torch.int32).to(device)
    if trainer.world_size > 1:
        count = trainer.strategy.reduce(count, reduce_op="sum")
        flags = trainer.strategy.reduce(flags, reduce_op="max")
    generated = int(count.item())
    return generated, max(0, int((flags > 0).sum().item()) - generated)


class SynthesisStatsCallback(Callback):
    """Logs `synth/*` metrics of the data module's synthesis and cache traffic.

    Args:
        log_every_n_steps: how often (train steps) to log the data-pipeline counters.
        log_sample_grid: log a grid of synthetic samples to W&B at the start of training.
        max_grid_images: size of that grid.
    """

    def __init__(
        self, log_every_n_steps: int = 50, log_sample_grid: bool = True, max_grid_images: int = 8
    ) -> None:
        self.log_every_n_steps = max(1, log_every_n_steps)
        self.log_sample_grid = log_sample_grid
        self.max_grid_images = max_grid_images

    def log_synthesis(self, datamodule: Any, report: Any) -> bool:
        """`synthmask synthesize`'s hook (no trainer): see `log_synthesis_run`."""
        return log_synthesis_run(datamodule, report)

    @staticmethod
    def _datamodule(trainer: Trainer) -> Any:
        dm = getattr(trainer, "datamodule", None)
        return dm if dm is not None and hasattr(dm, "synthesis_stats") else None

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        dm = self._datamodule(trainer)
        if dm is None or not trainer.is_global_zero:
            return
        report = dm.synthesis_report
        if report is not None and report.total:
            metrics = {
                "synth/ahead_images_per_s": report.images_per_second,
                "synth/ahead_cache_hit_rate": report.cache_hit_rate,
                "synth/ahead_generated": float(report.generated),
            }
            for logger in trainer.loggers:
                logger.log_metrics(metrics, step=trainer.global_step)
        wandb_logger = find_wandb_logger(trainer)
        if self.log_sample_grid and wandb_logger is not None:
            records = dm.sample_records(self.max_grid_images)
            if records:
                images = synthesis_wandb_images(records, dm.class_names)
                wandb_logger.experiment.log({"synth/samples": images}, commit=False)

    def _log_pipeline(self, trainer: Trainer, pl_module: LightningModule, on_step: bool) -> None:
        dm = self._datamodule(trainer)
        if dm is None:
            return
        stats = dm.synthesis_stats()
        prefix = "synth/" if on_step else "synth/epoch_"
        values = {
            "images_per_s": stats["images_per_second"],
            "cache_hit_rate": stats["cache_hit_rate"],
            "pipeline_generated": stats["generated"],
        }
        for name, value in values.items():
            # Counters of this rank's data pipeline (its workers included); rank 0's are logged.
            pl_module.log(prefix + name, float(value), on_step=on_step, on_epoch=not on_step)

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, *args: Any) -> None:
        if (trainer.global_step + 1) % self.log_every_n_steps == 0:
            self._log_pipeline(trainer, pl_module, on_step=True)

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._log_pipeline(trainer, pl_module, on_step=False)

    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        dm = self._datamodule(trainer)
        if dm is None or not callable(getattr(dm, "synthesis_totals", None)):
            return
        generated, cached = run_synthesis_totals(trainer, dm)  # every rank takes part
        if not trainer.is_global_zero:
            return
        metrics = {"synth/generated": float(generated), "synth/cached": float(cached)}
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=trainer.global_step)
        print(
            f"synthmask: synth/generated = {generated}, synth/cached = {cached} (synthetic "
            f"samples this run generated / read from the cache, {trainer.world_size} process(es))",
            flush=True,
        )
