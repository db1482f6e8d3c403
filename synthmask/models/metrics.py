"""Intersection-over-union from a confusion matrix (the mIoU convention of mmseg / torchmetrics)."""

from __future__ import annotations

import torch
from torchmetrics.classification import MulticlassJaccardIndex


def per_class_iou(confusion: torch.Tensor) -> torch.Tensor:
    """IoU of each class; NaN for a class absent from both targets and predictions.

    ``confusion[t, p]`` counts pixels of target class ``t`` predicted as ``p`` (ignored pixels
    already left out), as in torchmetrics' ``MulticlassConfusionMatrix``.

    Shape:
        confusion (C, C) -> (C,) float64
    """
    confusion = confusion.double()
    intersection = torch.diag(confusion)
    union = confusion.sum(0) + confusion.sum(1) - intersection
    iou = intersection / union
    return torch.where(union > 0, iou, torch.full_like(iou, float("nan")))


def mean_iou(per_class: torch.Tensor) -> torch.Tensor:
    """Mean IoU over the classes that occur (in targets or predictions): NaNs are skipped.

    Shape:
        per_class (C,) -> scalar
    """
    return torch.nanmean(per_class)


class SegmentationIoU(MulticlassJaccardIndex):
    """torchmetrics ``MulticlassJaccardIndex(average=None)`` whose ``compute`` returns NaN for
    classes absent from both targets and predictions (instead of 0), so that ``mean_iou`` of the
    result equals torchmetrics' ``average="macro"`` value. States (the confusion matrix) are
    synced across DDP processes by torchmetrics before ``compute`` runs.

    Shape:
        update(preds (B, H, W) int64, target (B, H, W) int64) ; compute() -> (C,) float64
    """

    def __init__(self, num_classes: int, ignore_index: int = 255) -> None:
        super().__init__(num_classes=num_classes, ignore_index=ignore_index, average=None)

    def compute(self) -> torch.Tensor:
        return per_class_iou(self.confmat)
