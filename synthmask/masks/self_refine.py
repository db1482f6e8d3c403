"""Dataset Diffusion-style pseudo-masks: cross-attention refined by self-attention.

refined = S^tau @ A per class, with S the (B, N, N) self-attention at side s (N = s*s; rows
are queries and sum to 1) and A the class heatmaps at side s (cross-attention upsampled to s
through the shared heatmap path). S^tau @ A is computed as tau products S @ (S @ (... A)),
O(tau N^2 C) instead of forming the N x N power. Then: min-max per class, resize to the image
size, and per pixel the best class c* with value m:
  m >= fg_threshold -> c*;  ignore_low <= m < fg_threshold -> 255;  m < ignore_low -> background.
(Replicated setting: tau = 4, s = 32, fg_threshold = 0.6, ignore_low = 0.5.)

Min-max before propagating does not change the result: S is row-stochastic, so it commutes
with the per-class affine map that the final min-max removes.

Scores: class c = refined_c in [0, 1], background = fg_threshold.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from synthmask.masks.heatmaps import class_heatmaps, minmax_per_class, resize_maps
from synthmask.masks.types import IGNORE_INDEX, PseudoMask, absent_to_neg_inf


def propagate(maps: torch.Tensor, self_attention: torch.Tensor, tau: int) -> torch.Tensor:
    """Apply S^tau to every class map: out[:, c] = S^tau @ maps[:, c] (flattened).

    Shape:
        maps (B, C, s, s), self_attention (B, s*s, s*s) -> (B, C, s, s)
    """
    batch, classes, height, width = maps.shape
    n = height * width
    if self_attention.shape != (batch, n, n):
        raise ValueError(
            f"self-attention has shape {tuple(self_attention.shape)}, expected ({batch}, {n}, {n})"
            f" to match class maps of side {height}x{width}."
        )
    if tau < 0:
        raise ValueError(f"tau must be >= 0, got {tau}.")
    s = self_attention.float()
    out = maps.flatten(2).transpose(1, 2)  # (B, N, C)
    for _ in range(tau):
        out = torch.bmm(s, out)
    return out.transpose(1, 2).reshape(batch, classes, height, width)


def self_refine_from_maps(
    maps: torch.Tensor,
    present: torch.Tensor,
    self_attention: torch.Tensor,
    size: tuple[int, int],
    tau: int = 4,
    fg_threshold: float = 0.6,
    ignore_low: float | None = 0.5,
    interpolation: str = "bicubic",
) -> PseudoMask:
    """Labels from class maps at the self-attention side (see module docstring).

    Shape:
        maps (B, C, s, s), present (B, C), self_attention (B, s*s, s*s) -> PseudoMask at `size`
    """
    refined = minmax_per_class(propagate(maps, self_attention, tau)) * present[:, :, None, None]
    refined = resize_maps(refined, size, interpolation).clamp(0.0, 1.0)
    scores = refined.clone()
    scores[:, 0] = fg_threshold
    scores = absent_to_neg_inf(scores, present)
    best_value, best_class = scores[:, 1:].max(dim=1)
    label = best_class + 1
    label = label.masked_fill(best_value < fg_threshold, 0)
    if ignore_low is not None:
        band = (best_value >= ignore_low) & (best_value < fg_threshold)
        label = label.masked_fill(band, IGNORE_INDEX)
    return PseudoMask(label=label, scores=scores)


@dataclass
class SelfRefineMask:
    """Dataset Diffusion: S^tau @ cross-attention, foreground threshold, ignore band."""

    tau: int = 4
    self_resolution: int | None = 32
    fg_threshold: float = 0.6
    ignore_low: float | None = 0.5

    needs_self_attention = True

    def __post_init__(self) -> None:
        if self.ignore_low is not None and self.ignore_low > self.fg_threshold:
            raise ValueError(
                f"ignore_low={self.ignore_low} must be <= fg_threshold={self.fg_threshold} "
                "(the ignore band is [ignore_low, fg_threshold)); use None for no ignore band."
            )

    def params(self) -> dict[str, Any]:
        return {
            "tau": self.tau,
            "self_resolution": self.self_resolution,
            "fg_threshold": self.fg_threshold,
            "ignore_low": self.ignore_low,
        }

    def _pick_self_attention(self, self_attention: dict[int, torch.Tensor] | None) -> int:
        if not self_attention:
            raise ValueError(
                "self_refine needs self-attention: capture it with "
                "CaptureConfig(self_attention=True, self_resolutions=(32,))."
            )
        if self.self_resolution is None:
            if len(self_attention) != 1:
                raise ValueError(
                    f"self-attention was captured at {sorted(self_attention)}; set "
                    "self_resolution to choose one."
                )
            return next(iter(self_attention))
        if self.self_resolution not in self_attention:
            raise KeyError(
                f"self_resolution {self.self_resolution} was not captured; available: "
                f"{sorted(self_attention)}."
            )
        return self.self_resolution

    def __call__(
        self,
        cross_attention: dict[int, torch.Tensor],
        self_attention: dict[int, torch.Tensor] | None,
        token_positions: list[list[tuple[int, list[int]]]],
        num_classes: int,
        size: tuple[int, int],
        **heatmap_kwargs: Any,
    ) -> PseudoMask:
        side = self._pick_self_attention(self_attention)
        maps, present = class_heatmaps(
            cross_attention, token_positions, num_classes, (side, side), **heatmap_kwargs
        )
        interpolation = heatmap_kwargs.get("interpolation", "bicubic")
        return self_refine_from_maps(
            maps,
            present,
            self_attention[side],
            size,
            self.tau,
            self.fg_threshold,
            self.ignore_low,
            interpolation,
        )
