"""DiffuMask-style pseudo-masks: a per-class threshold on the normalised heatmap.

A class's pixel is foreground when heat_c > t_c. The threshold is fixed (one value, or one per
class id) or searched per image and class on the heatmap histogram (Otsu: the split that
maximises the between-class variance). One class per image is the typical DiffuMask case;
with several classes, a pixel goes to the class with the largest excess heat_c - t_c among
those above their threshold (= argmax of heat when all thresholds are equal). No ignore
label unless `ignore_margin` is given.

Scores: class c = heat_c - t_c, background = 0 (so the margin of a one-class image is
|heat - t|).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from synthmask.masks.method import HeatmapMaskMethod
from synthmask.masks.types import PseudoMask, absent_to_neg_inf, argmax_label


def otsu_thresholds(heat: torch.Tensor, bins: int = 256) -> torch.Tensor:
    """Otsu threshold of every (image, class) map of values in [0, 1].

    The threshold is a bin edge k / bins; the lowest edge wins ties. A flat map gets 1.0
    (nothing above it).

    Shape:
        (B, C, H, W) -> (B, C)
    """
    batch, classes = heat.shape[:2]
    values = heat.flatten(2).reshape(batch * classes, -1).clamp(0.0, 1.0)
    index = (values * bins).long().clamp_max(bins - 1)
    hist = torch.zeros(values.shape[0], bins, dtype=torch.float64, device=heat.device)
    hist.scatter_add_(1, index, torch.ones_like(index, dtype=torch.float64))
    prob = hist / values.shape[1]
    centres = (torch.arange(bins, dtype=torch.float64, device=heat.device) + 0.5) / bins
    omega = prob.cumsum(1)[:, :-1]  # weight of bins < k, for k = 1..bins-1
    mu = (prob * centres).cumsum(1)[:, :-1]
    mu_total = (prob * centres).sum(1, keepdim=True)
    denom = omega * (1.0 - omega)
    between = torch.where(
        denom > 1e-12, (mu_total * omega - mu) ** 2 / denom.clamp_min(1e-12), torch.zeros_like(mu)
    )
    best = between.argmax(dim=1) + 1
    thresholds = best.double() / bins
    flat = between.amax(dim=1) <= 0
    thresholds = torch.where(flat, torch.ones_like(thresholds), thresholds)
    return thresholds.float().view(batch, classes)


def threshold_from_heatmaps(
    heat: torch.Tensor,
    present: torch.Tensor,
    threshold: float | str | dict[int, float] = "otsu",
    default_threshold: float = 0.5,
    ignore_margin: float | None = None,
) -> PseudoMask:
    """Per-class thresholding of heatmaps (see module docstring).

    Args:
        threshold: a float for every class, "otsu" for a per-image search, or a dict
            {class_id: threshold} (classes missing from it use `default_threshold`).

    Shape:
        heat (B, C, H, W), present (B, C) -> PseudoMask
    """
    batch, classes = heat.shape[:2]
    if isinstance(threshold, str):
        if threshold != "otsu":
            raise ValueError(f"threshold={threshold!r}: use a float, a dict per class, or 'otsu'.")
        thresholds = otsu_thresholds(heat)
    elif isinstance(threshold, dict):
        per_class = torch.full((classes,), float(default_threshold))
        for class_id, value in threshold.items():
            if not 0 <= int(class_id) < classes:
                raise ValueError(f"threshold given for class {class_id}, outside 0..{classes - 1}.")
            per_class[int(class_id)] = float(value)
        thresholds = per_class.to(heat.device).expand(batch, classes)
    else:
        thresholds = torch.full((batch, classes), float(threshold), device=heat.device)
    scores = heat - thresholds[:, :, None, None]
    scores[:, 0] = 0.0
    scores = absent_to_neg_inf(scores, present)
    return PseudoMask(label=argmax_label(scores, ignore_margin), scores=scores)


@dataclass
class ThresholdMask(HeatmapMaskMethod):
    """DiffuMask-style per-class threshold ("otsu" search per image by default)."""

    threshold: float | str | dict[int, float] = "otsu"
    default_threshold: float = 0.5
    ignore_margin: float | None = None

    def __post_init__(self) -> None:
        if isinstance(self.threshold, dict):
            self.threshold = {int(k): float(v) for k, v in self.threshold.items()}
        elif isinstance(self.threshold, str) and self.threshold != "otsu":
            raise ValueError(f"threshold={self.threshold!r}: use a float, a dict, or 'otsu'.")

    def for_classes(self, class_ids: list[int]) -> ThresholdMask:
        """The same method with per-class thresholds re-keyed to compact ids (pseudo_masks
        renumbers the classes a batch names to 1..P; class_ids[k] is the class of id k)."""
        if not isinstance(self.threshold, dict):
            return self
        compact = {k: self.threshold[c] for k, c in enumerate(class_ids) if c in self.threshold}
        return ThresholdMask(compact, self.default_threshold, self.ignore_margin)

    def params(self) -> dict[str, Any]:
        threshold = self.threshold
        if isinstance(threshold, dict):
            threshold = {str(k): v for k, v in sorted(threshold.items())}
        return {
            "threshold": threshold,
            "default_threshold": self.default_threshold,
            "ignore_margin": self.ignore_margin,
        }

    def from_heatmaps(self, heat: torch.Tensor, present: torch.Tensor) -> PseudoMask:
        return threshold_from_heatmaps(
            heat, present, self.threshold, self.default_threshold, self.ignore_margin
        )
