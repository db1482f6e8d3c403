"""Reliability maps (METHOD.md, Technique 1): margin = top1 - top2 score per pixel; within
each class of each image, the pixels whose margin is in the top `fraction` are reliable."""

from __future__ import annotations

import math

import torch

from synthmask.masks.types import IGNORE_INDEX


def reliability_margin(scores: torch.Tensor) -> torch.Tensor:
    """Per-pixel margin between the best and the second-best score.

    Pixels with fewer than two finite scores (only possible with a single candidate) get +inf.

    Shape:
        scores (B, C, H, W) -> margin float32 (B, H, W), >= 0
    """
    if scores.dim() != 4:
        raise ValueError(f"scores must be (B, C, H, W), got {tuple(scores.shape)}.")
    if scores.shape[1] < 2:
        return torch.full(scores.shape[:1] + scores.shape[2:], float("inf"), device=scores.device)
    top2 = scores.float().topk(2, dim=1).values
    margin = top2[:, 0] - top2[:, 1]
    return torch.where(torch.isneginf(top2[:, 1]), float("inf"), margin)


def reliable_mask(
    margin: torch.Tensor,
    label: torch.Tensor,
    fraction: float = 0.5,
    threshold: float | None = None,
) -> torch.Tensor:
    """Binary reliability: True = reliable (M = 1).

    Per-class rule (default): in every image, for every label value except 255, the
    ceil(fraction * n) pixels with the largest margin among that class's n pixels are
    reliable. Ties are broken deterministically by raster order (lower flat index first).
    Fixed rule (`threshold` given): margin >= threshold. Ignore pixels (255) are never
    reliable; NaN margins rank last.

    Shape:
        margin (B, H, W), label (B, H, W) -> bool (B, H, W)
    """
    if margin.shape != label.shape:
        raise ValueError(
            f"margin {tuple(margin.shape)} and label {tuple(label.shape)} must have the same shape."
        )
    labelled = label != IGNORE_INDEX
    if threshold is not None:
        return (margin >= threshold) & labelled
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction must be in [0, 1], got {fraction}.")
    reliable = torch.zeros_like(label, dtype=torch.bool)
    flat_margin = torch.nan_to_num(margin.float(), nan=float("-inf")).flatten(1)
    flat_label = label.flatten(1)
    flat_reliable = reliable.view(label.shape[0], -1)
    for b in range(label.shape[0]):
        for class_id in torch.unique(flat_label[b]).tolist():
            if class_id == IGNORE_INDEX:
                continue
            pixels = torch.nonzero(flat_label[b] == class_id, as_tuple=True)[0]
            keep = math.ceil(fraction * pixels.numel() - 1e-9)
            if keep == 0:
                continue
            order = torch.argsort(-flat_margin[b, pixels], stable=True)
            flat_reliable[b, pixels[order[:keep]]] = True
    return reliable
