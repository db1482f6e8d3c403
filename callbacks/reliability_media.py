"""ReliabilityMediaLogger: W&B reliability heatmaps and the peer disagreement map of the first
validation batch, next to image / ground truth / prediction."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from lightning.pytorch import LightningModule, Trainer

from synthmask.callbacks.wandb_media import (
    FirstValBatchMediaCallback,
    as_uint8,
    class_labels,
    denormalize_to_uint8,
    mask_overlays,
)
from synthmask.callbacks.wandb_utils import class_names_of

# Maps shown as heatmaps, in panel order, when the stored batch has them (all in [0, 1] except
# margin, which is divided by its per-sample maximum).
HEATMAP_KEYS = ("reliability", "margin", "confidence", "disagreement")
# Anchor colours of a dark-to-bright heat scale (black, purple, orange, pale yellow).
_HEAT_ANCHORS = np.array(
    [[0, 0, 4], [120, 28, 109], [237, 105, 37], [252, 255, 164]], dtype=np.float32
)


def heat_colors(values: np.ndarray) -> np.ndarray:
    """Colour a map in [0, 1] (clipped; NaN as 0) with a dark-to-bright scale.

    Shape:
        values (H, W) float -> (H, W, 3) uint8
    """
    v = np.clip(np.nan_to_num(values.astype(np.float32), nan=0.0), 0.0, 1.0)
    position = v * (len(_HEAT_ANCHORS) - 1)
    low = np.floor(position).astype(int).clip(0, len(_HEAT_ANCHORS) - 2)
    frac = (position - low)[..., None]
    colors = _HEAT_ANCHORS[low] * (1 - frac) + _HEAT_ANCHORS[low + 1] * frac
    return colors.round().astype(np.uint8)


def heatmap_panels(
    stored: dict[str, torch.Tensor], index: int, mean: Sequence[float], std: Sequence[float]
) -> tuple[np.ndarray, list[str]]:
    """One strip per sample: the image, then every map of ``HEATMAP_KEYS`` present.

    Shape:
        stored["image"] (N, 3, H, W), maps (N, H, W) -> strip (H, W * (1 + maps), 3) uint8, names
    """
    panels = [denormalize_to_uint8(stored["image"][index : index + 1], mean, std)[0]]
    names = ["image"]
    for key in HEATMAP_KEYS:
        if key not in stored:
            continue
        values = stored[key][index].float()
        if key == "margin":
            finite = values[torch.isfinite(values)]
            top = float(finite.max()) if finite.numel() else 1.0
            values = torch.nan_to_num(values, posinf=top) / max(top, 1e-8)
        panels.append(heat_colors(values.numpy()))
        names.append(key)
    return np.concatenate(panels, axis=1), names


class ReliabilityMediaLogger(FirstValBatchMediaCallback):
    """Logs, for ``max_images`` samples of the first validation batch (rank zero only):

    - ``<key>/heatmaps``: image | reliability | margin | confidence | disagreement strips (the
      maps the module stored: ``SegmentationModule`` stores reliability when the data has it,
      ``CoTrainingModule`` adds its confidence and the peer disagreement map);
    - ``<key>/disagreement``: the image with ground-truth, prediction and disagreement overlays.

    Reads ``pl_module.first_val_batch``; warns once when no WandbLogger is configured.

    Args:
        max_images: how many samples to show.
        key: prefix of the W&B keys.
        mean, std: normalisation of the data (None: the data module's hparams, else ImageNet's).
    """

    def __init__(
        self,
        max_images: int = 4,
        key: str = "val/reliability",
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
        strips = [heatmap_panels(stored, i, mean, std) for i in range(n)]
        captions = [
            f"epoch {trainer.current_epoch} sample {i}: " + " | ".join(names)
            for i, (_, names) in enumerate(strips)
        ]
        logger.log_image(
            f"{self.key}/heatmaps",
            [strip for strip, _ in strips],
            step=trainer.global_step,
            caption=captions,
        )
        if "disagreement" not in stored:
            return
        labels = class_labels(class_names_of(trainer, pl_module))
        images = denormalize_to_uint8(stored["image"][:n], mean, std)
        masks = [
            {
                **mask_overlays(stored, i, labels),
                "disagreement": {
                    "mask_data": as_uint8(stored["disagreement"][i] > 0.5),
                    "class_labels": {0: "nets agree", 1: "nets disagree"},
                },
            }
            for i in range(n)
        ]
        logger.log_image(
            f"{self.key}/disagreement",
            list(images),
            step=trainer.global_step,
            masks=masks,
            caption=[f"epoch {trainer.current_epoch} sample {i}" for i in range(n)],
        )
