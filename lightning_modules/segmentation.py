"""SegmentationModule: trains an injected segmentation network with reliability-weighted CE."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from lightning.pytorch import LightningModule
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import nn

from synthmask.models.losses import (
    IGNORE_INDEX,
    ReliabilityOptions,
    check_reliability_mode,
    reliability_weighted_cross_entropy,
)
from synthmask.models.metrics import SegmentationIoU, mean_iou
from synthmask.models.optim import DeepLabSGD, PolyLR
from synthmask.training import copy_paste_halves
from synthmask.training.augment import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    StrongAugmentConfig,
    strong_photometric_augment,
)

# How many samples of the first validation batch are kept for media callbacks.
STORED_VAL_SAMPLES = 8
# Checkpoint entry holding the best validation so far (val/mIoU, per-class IoU, step).
BEST_VAL_KEY = "synthmask_best_val"

# A network builder called with the class count, e.g. a config's DeepLabV3Plus without num_classes.
NetFactory = Callable[[int], nn.Module]


def _built_by_cli() -> bool:
    """True while LightningCLI instantiates this module (it then supplies the hparams)."""
    try:
        from lightning.pytorch.core.mixins.hparams_mixin import _given_hyperparameters
    except ImportError:  # private API moved: fall back to leaving the net out
        return False
    return _given_hyperparameters.get() is not None


class SegmentationModule(LightningModule):
    """Semantic segmentation training: ``net(image) -> logits``, CE with ignore 255 and an
    optional per-pixel weight map (batch key ``"reliability"``), mIoU per split.

    Args:
        net: the segmentation network (e.g. ``synthmask.models.DeepLabV3Plus``), injected by config,
            or a factory called as ``net(num_classes)``. A config whose net ``init_args`` leave
            ``num_classes`` out yields the factory, so the class count comes from the data alone;
            a net built with its own count must output exactly ``num_classes`` channels.
        num_classes: number of classes incl. background (linked from ``data.num_classes``).
        class_names: names for per-class logging (linked from ``data.class_names``);
            ``class_<i>`` when None.
        optimizer: built on ``net.parameters()``; default SGD lr 0.01, momentum 0.9, wd 1e-4.
        lr_scheduler: stepped every optimizer step. The default ``PolyLR`` (power 0.9, min lr 1e-5)
            runs over ``trainer.estimated_stepping_batches`` when its ``total_steps`` is unset.
        reliability_mode: how the batch's ``"reliability"`` map enters the loss, one of
            ``synthmask.models.losses.RELIABILITY_MODES``: ``"none"`` (plain CE), ``"ignore"``
            (unreliable pixels left out), ``"weight"`` (unreliable pixels weighted by
            ``unreliable_weight``; 0 multiplies each pixel's CE by the map), ``"margin"`` (soft
            weight from the batch's ``"margin"`` map). Batches without the map count every pixel
            fully.
        unreliable_weight: ``weight`` mode: weight of a fully unreliable pixel (0..1).
        margin_scale: ``margin`` mode: margins at or above it get weight 1.
        log_per_class_iou: also log ``<split>/IoU/<class name>`` scalars each epoch.
        strong_augment: BECO's strong photometric augmentation (colour jitter p 0.8, greyscale
            p 0.2, blur p 0.5; ``synthmask.training.augment``) on the training images, drawn per
            sample from the global torch RNG; masks are untouched.
        strong_augment_config: its probabilities and ranges (default: BECO's values).
        copy_paste_p: BECO's copy-paste in single-net training: sample ``i`` and ``i + B/2``
            paste a random half of their foreground classes (image, mask and reliability) onto
            each other, each way with this probability (0 = off). Turns single-object
            generations into occluding multi-object scenes whose labels stay right.
        mean, std: the normalisation of the data (to undo it for ``strong_augment``).

    Attributes:
        last_val_iou: per-class IoU (C,) of the latest validation epoch (NaN: class absent).
        best_val_miou, best_val_iou, best_val_step: the highest ``val/mIoU`` of a (non-sanity)
            validation epoch so far, its per-class IoU (C,) and the global step it was measured
            at (None before the first validation); logged as ``val/mIoU_best`` each validation
            epoch and kept in checkpoints, so a resumed run keeps its best.
        first_val_batch: dict with ``"image"`` (N, 3, H, W), ``"mask"`` (N, H, W), ``"pred"``
            (N, H, W) and ``"reliability"`` (N, H, W) when present, of the first validation batch
            (first ``STORED_VAL_SAMPLES`` samples, on CPU) of the latest validation epoch.
    """

    def __init__(
        self,
        net: nn.Module | NetFactory,
        num_classes: int,
        class_names: list[str] | None = None,
        optimizer: OptimizerCallable = DeepLabSGD,
        lr_scheduler: LRSchedulerCallable = PolyLR,
        reliability_mode: str = "weight",
        log_per_class_iou: bool = True,
        unreliable_weight: float = 0.0,
        margin_scale: float = 1.0,
        strong_augment: bool = False,
        strong_augment_config: StrongAugmentConfig | None = None,
        copy_paste_p: float = 0.0,
        mean: tuple[float, float, float] = IMAGENET_MEAN,
        std: tuple[float, float, float] = IMAGENET_STD,
    ) -> None:
        super().__init__()
        check_reliability_mode(reliability_mode)
        self.reliability_options = ReliabilityOptions(
            unreliable_weight=unreliable_weight, margin_scale=margin_scale
        )
        if not isinstance(net, nn.Module):
            net = net(num_classes)
        net_classes = getattr(net, "num_classes", None)
        if net_classes is not None and net_classes != num_classes:
            raise ValueError(
                f"the net outputs {net_classes} classes but SegmentationModule.num_classes is "
                f"{num_classes}; remove num_classes from the net's init_args (it is then taken "
                f"from the data) or set it to {num_classes}"
            )
        if class_names is not None and len(class_names) != num_classes:
            raise ValueError(
                f"class_names has {len(class_names)} entries but num_classes is {num_classes}; "
                "give one name per class (background included)"
            )
        # Under LightningCLI the hparams are the parsed config (the net as class_path/init_args), so
        # load_from_checkpoint can rebuild the net; a hand-built net object is kept out of them.
        self.save_hyperparameters(ignore=[] if _built_by_cli() else ["net"])
        self.net = net
        self.num_classes = num_classes
        self.class_names = (
            list(class_names) if class_names else [f"class_{i}" for i in range(num_classes)]
        )
        self.optimizer_factory = optimizer
        self.lr_scheduler_factory = lr_scheduler
        self.reliability_mode = reliability_mode
        self.log_per_class_iou = log_per_class_iou
        self.strong_augment = strong_augment
        self.strong_augment_config = strong_augment_config or StrongAugmentConfig()
        if not 0.0 <= copy_paste_p <= 1.0:
            raise ValueError(f"copy_paste_p={copy_paste_p}; use a probability in [0, 1] (0 = off).")
        self.copy_paste_p = copy_paste_p
        self.mean, self.std = tuple(mean), tuple(std)
        self.val_iou = SegmentationIoU(num_classes, ignore_index=IGNORE_INDEX)
        self.test_iou = SegmentationIoU(num_classes, ignore_index=IGNORE_INDEX)
        self.first_val_batch: dict[str, torch.Tensor] | None = None
        self.last_val_iou: torch.Tensor | None = None
        self.best_val_miou: float | None = None
        self.best_val_iou: torch.Tensor | None = None
        self.best_val_step: int | None = None

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Shape: images (B, 3, H, W) -> logits (B, num_classes, H, W)."""
        logits = self.net(images)
        if logits.shape[1] != self.num_classes:
            raise ValueError(
                f"the net produced {logits.shape[1]} output channels but num_classes is "
                f"{self.num_classes}; make the net's num_classes match the data's"
            )
        return logits

    def setup(self, stage: str) -> None:
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer else None
        data_classes = getattr(datamodule, "num_classes", None)
        if data_classes is not None and data_classes != self.num_classes:
            raise ValueError(
                f"the data module has {data_classes} classes but the model has num_classes="
                f"{self.num_classes}; set model num_classes to {data_classes} (configs run by "
                "`synthmask` link data.num_classes to the model automatically)"
            )

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        if self.copy_paste_p > 0:
            batch, _ = copy_paste_halves(batch, p=self.copy_paste_p)
        images = batch["image"]
        if self.strong_augment:
            images = strong_photometric_augment(
                images, self.mean, self.std, self.strong_augment_config
            )
        logits = self(images)
        loss = reliability_weighted_cross_entropy(
            logits,
            batch["mask"],
            batch.get("reliability"),
            mode=self.reliability_mode,
            margin=batch.get("margin"),
            options=self.reliability_options,
        )
        self.log("train/loss", loss, prog_bar=True, batch_size=logits.shape[0])
        return loss

    def validation_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> None:
        preds = self._evaluate_batch(batch, "val", self.val_iou)
        if batch_idx == 0 and dataloader_idx == 0:
            keep = slice(0, STORED_VAL_SAMPLES)
            stored = {"image": batch["image"], "mask": batch["mask"], "pred": preds}
            if "reliability" in batch:
                stored["reliability"] = batch["reliability"]
            self.first_val_batch = {k: v[keep].detach().cpu() for k, v in stored.items()}

    def test_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> None:
        self._evaluate_batch(batch, "test", self.test_iou)

    def _evaluate_batch(self, batch: dict, split: str, metric: SegmentationIoU) -> torch.Tensor:
        logits = self(batch["image"])
        loss = reliability_weighted_cross_entropy(logits, batch["mask"], mode="none")
        self.log(f"{split}/loss", loss, sync_dist=True, batch_size=logits.shape[0])
        preds = logits.argmax(dim=1)
        metric.update(preds, batch["mask"])
        return preds

    def on_validation_epoch_end(self) -> None:
        self.last_val_iou = self._log_iou("val", self.val_iou)
        if self._trainer is None or self.trainer.sanity_checking:
            return
        miou = float(mean_iou(self.last_val_iou))
        if not math.isnan(miou) and (self.best_val_miou is None or miou > self.best_val_miou):
            self.best_val_miou = miou
            self.best_val_iou = self.last_val_iou.clone()
            self.best_val_step = int(self.trainer.global_step)
        if self.best_val_miou is not None:
            self.log("val/mIoU_best", self.best_val_miou, rank_zero_only=False, sync_dist=False)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        if self.best_val_miou is not None:
            checkpoint[BEST_VAL_KEY] = {
                "miou": self.best_val_miou,
                "per_class": self.best_val_iou.tolist(),
                "step": self.best_val_step,
            }

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        best = checkpoint.get(BEST_VAL_KEY)
        if best:
            self.best_val_miou = float(best["miou"])
            self.best_val_iou = torch.tensor(best["per_class"], dtype=torch.float32)
            self.best_val_step = int(best["step"])

    def on_test_epoch_end(self) -> None:
        self._log_iou("test", self.test_iou)

    def _log_iou(self, split: str, metric: SegmentationIoU) -> torch.Tensor:
        # compute() syncs the confusion matrix over processes, so every rank logs the same values.
        per_class = metric.compute().float()
        metric.reset()
        values = {f"{split}/mIoU": mean_iou(per_class)}
        if self.log_per_class_iou:
            values |= {
                f"{split}/IoU/{n}": v for n, v in zip(self.class_names, per_class, strict=True)
            }
        self.log_dict(values, rank_zero_only=False, sync_dist=False)
        return per_class.cpu()

    def configure_optimizers(self) -> dict:
        optimizer = self.optimizer_factory(self.parameters())
        scheduler = self.lr_scheduler_factory(optimizer)
        if isinstance(scheduler, PolyLR) and scheduler.total_steps is None:
            scheduler.total_steps = max(1, int(self.trainer.estimated_stepping_batches))
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
        }
