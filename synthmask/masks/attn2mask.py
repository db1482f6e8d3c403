"""attn2mask: background = 1 - max_c heat_c - beta, argmax over {background, named classes}."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from synthmask.masks.method import HeatmapMaskMethod
from synthmask.masks.types import PseudoMask, absent_to_neg_inf, argmax_label


def attn2mask_from_heatmaps(
    heat: torch.Tensor, present: torch.Tensor, beta: float = 0.2, ignore_margin: float | None = None
) -> PseudoMask:
    """Label pixels by argmax over {background, named classes}.

    Scores: class c = heat_c (named classes; others -inf), background = 1 - max_c heat_c - beta.
    With one class, a pixel is foreground iff heat > (1 - beta) / 2 (0.4 for beta = 0.2).
    Ties go to the lower channel (background first). With `ignore_margin`, pixels whose
    top score is not ahead of the runner-up by at least that much become 255.

    Shape:
        heat (B, C, H, W) in [0, 1], present bool (B, C) -> PseudoMask (B, H, W) / (B, C, H, W)
    """
    scores = heat.clone()
    scores[:, 0] = 1.0 - heat[:, 1:].amax(dim=1) - beta
    scores = absent_to_neg_inf(scores, present)
    return PseudoMask(label=argmax_label(scores, ignore_margin), scores=scores)


@dataclass
class Attn2Mask(HeatmapMaskMethod):
    """attn2mask (replicated setting beta = 0.2, no ignore)."""

    beta: float = 0.2
    ignore_margin: float | None = None

    def __post_init__(self) -> None:
        if self.ignore_margin is not None and self.ignore_margin < 0:
            raise ValueError(f"ignore_margin must be >= 0 or None, got {self.ignore_margin}.")

    def params(self) -> dict[str, Any]:
        return {"beta": self.beta, "ignore_margin": self.ignore_margin}

    def from_heatmaps(self, heat: torch.Tensor, present: torch.Tensor) -> PseudoMask:
        return attn2mask_from_heatmaps(heat, present, self.beta, self.ignore_margin)
