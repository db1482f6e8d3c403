"""PerClassIoUTable: a W&B table of per-class validation IoU after every validation epoch."""

from __future__ import annotations

import math

from lightning.pytorch import LightningModule, Trainer

from synthmask.callbacks.wandb_utils import WandbCallback, class_names_of


class PerClassIoUTable(WandbCallback):
    """Logs ``wandb.Table(columns=["class_id", "class", "IoU"])`` under ``key`` at the end of each
    validation epoch (rank zero only), from ``pl_module.last_val_iou`` as set by
    ``SegmentationModule``. Classes absent from both targets and predictions have IoU NaN and are
    written as None (an empty cell).
    """

    def __init__(self, key: str = "val/IoU_table") -> None:
        super().__init__()
        self.key = key

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        found = self.validation_output(trainer, pl_module, "last_val_iou")
        if found is None:
            return
        logger, per_class = found
        names = class_names_of(trainer, pl_module)
        rows = [
            [class_id, name, None if math.isnan(value) else value]
            for class_id, (name, value) in enumerate(zip(names, per_class.tolist(), strict=True))
        ]
        logger.log_table(
            self.key, columns=["class_id", "class", "IoU"], data=rows, step=trainer.global_step
        )
