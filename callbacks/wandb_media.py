"""SegmentationMediaLogger: W&B image / ground-truth / prediction overlays of the first val batch;
the shared base and helpers of the first-val-batch media callbacks."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from lightning.pytorch import LightningModule, Trainer

from synthmask.callbacks.wandb_utils import WandbCallback, class_names_of

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
IGNORE_INDEX = 255


def denormalize_to_uint8(
    images: torch.Tensor, mean: Sequence[float], std: Sequence[float]
) -> np.ndarray:
    """Undo ``(x - mean) / std`` normalisation and convert to displayable pixels.

    Shape:
        images (N, 3, H, W) float -> (N, H, W, 3) uint8
    """
    mean_t = torch.as_tensor(mean, dtype=images.dtype).view(1, 3, 1, 1)
    std_t = torch.as_tensor(std, dtype=images.dtype).view(1, 3, 1, 1)
    pixels = (images.float() * std_t + mean_t).clamp(0, 1) * 255
    return pixels.round().to(torch.uint8).permute(0, 2, 3, 1).numpy()


def class_labels(class_names: Sequence[str]) -> dict[int, str]:
    """W&B mask legend: class id -> name, plus the ignore id."""
    return {**dict(enumerate(class_names)), IGNORE_INDEX: "ignore"}


def mask_overlays(
    stored: dict[str, torch.Tensor], index: int, labels: dict[int, str]
) -> dict[str, dict]:
    """W&B ``masks=`` entry of one stored sample: its ground truth and prediction.

    Shape:
        stored["mask"], stored["pred"] (N, H, W) int64 ids < 256
    """
    return {
        "ground_truth": {"mask_data": as_uint8(stored["mask"][index]), "class_labels": labels},
        "prediction": {"mask_data": as_uint8(stored["pred"][index]), "class_labels": labels},
    }


def as_uint8(mask: torch.Tensor) -> np.ndarray:
    """Shape: (H, W) int64 with ids < 256, or bool -> (H, W) uint8."""
    return mask.to(torch.uint8).numpy()


class FirstValBatchMediaCallback(WandbCallback):
    """Base of the callbacks that log media of ``pl_module.first_val_batch`` (as stored by
    ``SegmentationModule``) at the end of every non-sanity validation, on rank zero only.

    Args:
        max_images: how many samples to show.
        key: the W&B key (or key prefix) of the media.
        mean, std: normalisation of the data (None: the data module's ``mean``/``std``
            hyper-parameters if it has them, else ImageNet's).
    """

    def __init__(
        self,
        max_images: int,
        key: str,
        mean: tuple[float, float, float] | None,
        std: tuple[float, float, float] | None,
    ) -> None:
        super().__init__()
        self.max_images = max_images
        self.key = key
        self.mean = mean
        self.std = std

    def normalization(self, trainer: Trainer) -> tuple[Sequence[float], Sequence[float]]:
        hparams = getattr(getattr(trainer, "datamodule", None), "hparams", {}) or {}
        mean = self.mean or hparams.get("mean") or IMAGENET_MEAN
        std = self.std or hparams.get("std") or IMAGENET_STD
        return mean, std


class SegmentationMediaLogger(FirstValBatchMediaCallback):
    """Logs ``max_images`` overlays (image + ground-truth + prediction masks with class labels)
    from the first validation batch of each validation epoch, on rank zero only.

    Reads ``pl_module.first_val_batch`` (``"image"``, ``"mask"``, ``"pred"``) as stored by
    ``SegmentationModule``. Images are denormalised with ``mean``/``std`` (default: the data
    module's ``mean``/``std`` hyper-parameters if it has them, else ImageNet's).

    Args:
        max_images: how many samples to show.
        key: the W&B key of the image list.
        mean, std: normalisation used by the data (None: see above).
    """

    def __init__(
        self,
        max_images: int = 4,
        key: str = "val/overlays",
        mean: tuple[float, float, float] | None = None,
        std: tuple[float, float, float] | None = None,
    ) -> None:
        super().__init__(max_images, key, mean, std)

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        found = self.validation_output(trainer, pl_module, "first_val_batch")
        if found is None:
            return
        logger, stored = found
        mean, std = self.normalization(trainer)
        n = min(self.max_images, len(stored["image"]))
        images = denormalize_to_uint8(stored["image"][:n], mean, std)
        labels = class_labels(class_names_of(trainer, pl_module))
        masks = [mask_overlays(stored, i, labels) for i in range(n)]
        captions = [f"epoch {trainer.current_epoch} sample {i}" for i in range(n)]
        logger.log_image(
            self.key, list(images), step=trainer.global_step, masks=masks, caption=captions
        )
