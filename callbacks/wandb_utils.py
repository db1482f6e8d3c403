"""Shared plumbing of the W&B callbacks: find the WandbLogger, warn once when there is none."""

from __future__ import annotations

from typing import Any

from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.utilities import rank_zero_warn

# Summary = the last value: val/mIoU of the final weights, val/mIoU_best (logged by
# SegmentationModule) the best so far. A sweep's metric reads these plain numbers.
SUMMARY_LAST_METRICS = ("val/mIoU", "val/mIoU_best")


def find_wandb_logger(trainer: Trainer) -> WandbLogger | None:
    """The first WandbLogger among ``trainer.loggers``, or None."""
    return next((lg for lg in trainer.loggers if isinstance(lg, WandbLogger)), None)


def define_summary_metrics(logger: WandbLogger) -> None:
    """Keep ``val/mIoU`` and ``val/mIoU_best`` in the run summary as their last values (plain
    numbers, no max/min aggregate), with the trainer's global step as the x-axis Lightning sets
    up for every metric."""
    for name in SUMMARY_LAST_METRICS:
        logger.experiment.define_metric(name, step_metric="trainer/global_step")


def class_names_of(trainer: Trainer, pl_module: LightningModule) -> list[str]:
    """Class names from the module, else the data module, else class_<i>."""
    names = getattr(pl_module, "class_names", None) or getattr(
        getattr(trainer, "datamodule", None), "class_names", None
    )
    if names:
        return list(names)
    return [f"class_{i}" for i in range(int(getattr(pl_module, "num_classes", 0)))]


class WandbCallback(Callback):
    """Base for callbacks that only act with a WandbLogger: ``wandb_logger(trainer)`` returns it
    on global rank zero, None elsewhere, and warns once per callback when none is configured."""

    def __init__(self) -> None:
        self._warned_missing_logger = False
        self._summary_defined = False

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        # Early, so the summary rule exists before val/mIoU is first logged.
        self.wandb_logger(trainer)

    def wandb_logger(self, trainer: Trainer) -> WandbLogger | None:
        if not trainer.is_global_zero:
            return None
        logger = find_wandb_logger(trainer)
        if logger is None:
            # fast_dev_run swaps every logger for a DummyLogger on purpose: nothing to warn about.
            if not self._warned_missing_logger and not trainer.fast_dev_run:
                rank_zero_warn(
                    f"{type(self).__name__}: no WandbLogger among trainer.loggers, so it logs "
                    "nothing; add `trainer.logger: {class_path: lightning.pytorch.loggers.WandbLogger}` "
                    "to the config to use it"
                )
                self._warned_missing_logger = True
            return None
        if not self._summary_defined:
            define_summary_metrics(logger)
            self._summary_defined = True
        return logger

    def validation_output(
        self, trainer: Trainer, pl_module: LightningModule, attribute: str
    ) -> tuple[WandbLogger, Any] | None:
        """(W&B logger, ``pl_module.<attribute>``) after a real (non-sanity) validation on rank
        zero, or None when there is nothing to log (no logger, attribute missing or None)."""
        # on_validation_end runs after the module's on_validation_epoch_end, so the value is fresh.
        if trainer.sanity_checking:
            return None
        logger = self.wandb_logger(trainer)
        value = getattr(pl_module, attribute, None)
        if logger is None or value is None:
            return None
        return logger, value
