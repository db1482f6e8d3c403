"""attn2mask: background = 1 - max_c heat_c - beta, argmax over {background, named classes}."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from synthmask.masks.heatmaps import class_heatmaps
from synthmask.masks.types import IGNORE_INDEX, PseudoMask, absent_to_neg_inf


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
    label = scores.argmax(dim=1)
    if ignore_margin is not None:
        top2 = scores.topk(2, dim=1).values
        label = label.masked_fill(top2[:, 0] - top2[:, 1] < ignore_margin, IGNORE_INDEX)
    return PseudoMask(label=label, scores=scores)


@dataclass
class Attn2Mask:
    """attn2mask (replicated setting beta = 0.2, no ignore)."""

    beta: float = 0.2
    ignore_margin: float | None = None

    needs_self_attention = False

    def __post_init__(self) -> None:
        if self.ignore_margin is not None and self.ignore_margin < 0:
            raise ValueError(f"ignore_margin must be >= 0 or None, got {self.ignore_margin}.")

    def params(self) -> dict[str, Any]:
        return {"beta": self.beta, "ignore_margin": self.ignore_margin}

    def __call__(
        self,
        cross_attention: dict[int, torch.Tensor],
        self_attention: dict[int, torch.Tensor] | None,
        token_positions: list[list[tuple[int, list[int]]]],
        num_classes: int,
        size: tuple[int, int],
        **heatmap_kwargs: Any,
    ) -> PseudoMask:
        heat, present = class_heatmaps(
            cross_attention, token_positions, num_classes, size, **heatmap_kwargs
        )
        return attn2mask_from_heatmaps(heat, present, self.beta, self.ignore_margin)
