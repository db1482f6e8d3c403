"""SegmentationMediaLogger: W&B image / ground-truth / prediction overlays of the first val batch."""

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


class SegmentationMediaLogger(WandbCallback):
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
        super().__init__()
        self.max_images = max_images
        self.key = key
        self.mean = mean
        self.std = std

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        # on_validation_end runs after the module's on_validation_epoch_end, so the batch is fresh.
        if trainer.sanity_checking:
            return
        logger = self.wandb_logger(trainer)
        stored = getattr(pl_module, "first_val_batch", None)
        if logger is None or stored is None:
            return
        mean, std = self._normalization(trainer)
        n = min(self.max_images, len(stored["image"]))
        images = denormalize_to_uint8(stored["image"][:n], mean, std)
        labels = class_labels(class_names_of(trainer, pl_module))
        masks = [
            {
                "ground_truth": {"mask_data": _as_uint8(stored["mask"][i]), "class_labels": labels},
                "prediction": {"mask_data": _as_uint8(stored["pred"][i]), "class_labels": labels},
            }
            for i in range(n)
        ]
        captions = [f"epoch {trainer.current_epoch} sample {i}" for i in range(n)]
        logger.log_image(
            self.key, list(images), step=trainer.global_step, masks=masks, caption=captions
        )

    def _normalization(self, trainer: Trainer) -> tuple[Sequence[float], Sequence[float]]:
        hparams = getattr(getattr(trainer, "datamodule", None), "hparams", {}) or {}
        mean = self.mean or hparams.get("mean") or IMAGENET_MEAN
        std = self.std or hparams.get("std") or IMAGENET_STD
        return mean, std


def _as_uint8(mask: torch.Tensor) -> np.ndarray:
    """Shape: (H, W) int64 with ids < 256 -> (H, W) uint8."""
    return mask.to(torch.uint8).numpy()
