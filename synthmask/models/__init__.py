"""Segmentation networks, losses, metrics and optimizer defaults (pure torch, no Lightning)."""

from synthmask.models.deeplabv3plus import DeepLabV3Plus
from synthmask.models.losses import RELIABILITY_MODES, reliability_weighted_cross_entropy
from synthmask.models.metrics import SegmentationIoU, mean_iou, per_class_iou
from synthmask.models.optim import DeepLabSGD, PolyLR

__all__ = [
    "RELIABILITY_MODES",
    "DeepLabSGD",
    "DeepLabV3Plus",
    "PolyLR",
    "SegmentationIoU",
    "mean_iou",
    "per_class_iou",
    "reliability_weighted_cross_entropy",
]
