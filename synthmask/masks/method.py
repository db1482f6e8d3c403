"""The shared call path of the mask methods that label class heatmaps at the image size."""

from __future__ import annotations

from typing import Any

import torch

from synthmask.masks.heatmaps import TokenPositions, class_heatmaps
from synthmask.masks.types import PseudoMask


class HeatmapMaskMethod:
    """Base of attn2mask and the threshold method: captured cross-attention -> class heatmaps at
    the output size (the one heatmap path, `class_heatmaps`) -> `from_heatmaps`.

    Every mask method is a callable `(cross_attention, self_attention, token_positions,
    num_classes, size, **heatmap_kwargs) -> PseudoMask` with a `params()` dict and a
    `needs_self_attention` flag; subclasses implement `from_heatmaps` and `params`.
    """

    needs_self_attention = False

    def from_heatmaps(self, heat: torch.Tensor, present: torch.Tensor) -> PseudoMask:
        """Shape: heat (B, C, H, W) in [0, 1], present bool (B, C) -> PseudoMask (B, H, W)."""
        raise NotImplementedError

    def params(self) -> dict[str, Any]:
        raise NotImplementedError

    def __call__(
        self,
        cross_attention: dict[int, torch.Tensor],
        self_attention: dict[int, torch.Tensor] | None,
        token_positions: TokenPositions,
        num_classes: int,
        size: tuple[int, int],
        **heatmap_kwargs: Any,
    ) -> PseudoMask:
        heat, present = class_heatmaps(
            cross_attention, token_positions, num_classes, size, **heatmap_kwargs
        )
        return self.from_heatmaps(heat, present)
