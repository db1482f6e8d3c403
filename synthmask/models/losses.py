"""Segmentation losses: per-pixel cross-entropy, optionally weighted by a reliability map.

The reliability map (batch key ``"reliability"``, float (B, H, W) in [0, 1], 1 = reliable) and the
margin map (batch key ``"margin"``, top1 - top2 pseudo-mask score) come with synthetic
pseudo-masks (METHOD.md, Technique 1). ``RELIABILITY_MODES`` maps a mode name to a function that
turns them into per-pixel weights and the set of pixels counted in the mean:

- ``none``: plain CE, every labelled pixel weight 1.
- ``ignore``: unreliable pixels (reliability < ``reliable_threshold``) are treated like 255:
  left out of the sum and of the pixel count.
- ``weight``: weight ``w + (1 - w) * reliability`` with ``w = unreliable_weight``: a binary map
  gives reliable pixels 1 and unreliable ones ``w``; ``w = 0`` multiplies CE by the map.
- ``margin``: soft weight ``clamp(margin / margin_scale, 0, 1)`` from the margin map.

Batches without the map a mode needs (real data) count every labelled pixel fully.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

IGNORE_INDEX = 255


@dataclass(frozen=True)
class ReliabilityOptions:
    """Parameters of the reliability modes.

    Attributes:
        unreliable_weight: ``weight`` mode: the weight of a fully unreliable pixel (0..1).
        reliable_threshold: ``ignore`` mode: reliability at or above this is reliable.
        margin_scale: ``margin`` mode: margins at or above this get weight 1.
    """

    unreliable_weight: float = 0.0
    reliable_threshold: float = 0.5
    margin_scale: float = 1.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.unreliable_weight <= 1.0:
            raise ValueError(
                f"unreliable_weight={self.unreliable_weight} must be in [0, 1] "
                "(0 = drop unreliable pixels' CE, 1 = plain CE)"
            )
        if self.margin_scale <= 0:
            raise ValueError(f"margin_scale={self.margin_scale} must be > 0 (e.g. 1.0)")


# (reliability (B,H,W) | None, margin (B,H,W) | None, options) ->
#     (weight (B,H,W) | None = all ones, counted bool (B,H,W) | None = every labelled pixel)
ReliabilityWeighting = Callable[
    [torch.Tensor | None, torch.Tensor | None, ReliabilityOptions],
    tuple[torch.Tensor | None, torch.Tensor | None],
]


def _no_weighting(reliability, margin, options):
    return None, None


def _ignore_unreliable(reliability, margin, options):
    if reliability is None:
        return None, None
    return None, reliability >= options.reliable_threshold


def _weight_unreliable(reliability, margin, options):
    # Real data has no reliability map: every labelled pixel is fully reliable.
    if reliability is None:
        return None, None
    w = options.unreliable_weight
    return w + (1.0 - w) * reliability.float(), None


def _weight_by_margin(reliability, margin, options):
    if margin is None:
        return None, None
    # nan -> 0 (no evidence), +inf (single candidate) -> 1
    weight = torch.nan_to_num(margin.float() / options.margin_scale, nan=0.0, posinf=1.0)
    return weight.clamp(0.0, 1.0), None


RELIABILITY_MODES: dict[str, ReliabilityWeighting] = {
    "none": _no_weighting,
    "ignore": _ignore_unreliable,
    "weight": _weight_unreliable,
    "margin": _weight_by_margin,
}


def check_reliability_mode(mode: str) -> None:
    """Raise KeyError listing the valid modes (and close matches) when ``mode`` is unknown."""
    if mode in RELIABILITY_MODES:
        return
    close = difflib.get_close_matches(mode, RELIABILITY_MODES, n=3)
    hint = f" (did you mean {', '.join(close)}?)" if close else ""
    raise KeyError(
        f"unknown reliability_mode {mode!r}{hint}; valid modes: {sorted(RELIABILITY_MODES)}"
    )


def _check_map(name: str, value: torch.Tensor | None, target: torch.Tensor) -> None:
    if value is not None and value.shape != target.shape:
        raise ValueError(
            f"{name} map shape {tuple(value.shape)} differs from mask shape "
            f"{tuple(target.shape)}; the data module must crop/resize both together"
        )


def reliability_weighted_cross_entropy(
    logits: torch.Tensor,
    target: torch.Tensor,
    reliability: torch.Tensor | None = None,
    mode: str = "weight",
    ignore_index: int = IGNORE_INDEX,
    margin: torch.Tensor | None = None,
    options: ReliabilityOptions | None = None,
) -> torch.Tensor:
    """Mean per-pixel cross-entropy, each pixel's term weighted according to ``mode``.

    ``loss = sum_p w_p * CE_p / N`` where the sum runs over the counted pixels (target not
    ``ignore_index``; in ``ignore`` mode also reliable), ``w_p`` is the mode's weight (see the
    module docstring) and ``N`` is the number of counted pixels in the whole batch (not the sum of
    weights), so down-weighting a pixel lowers the loss instead of renormalising the others. With
    no counted pixel the loss is 0 (still connected to ``logits`` so backward works).

    Shape:
        logits (B, C, H, W) float; target (B, H, W) int64 in [0, C) or ``ignore_index``;
        reliability (B, H, W) float in [0, 1] or None; margin (B, H, W) float or None -> scalar.
    """
    check_reliability_mode(mode)
    _check_map("reliability", reliability, target)
    _check_map("margin", margin, target)
    options = options or ReliabilityOptions()
    weight, counted = RELIABILITY_MODES[mode](reliability, margin, options)
    per_pixel = F.cross_entropy(logits, target, ignore_index=ignore_index, reduction="none")
    valid = target != ignore_index
    if counted is not None:
        valid = valid & counted
        per_pixel = per_pixel * valid
    if weight is not None:
        per_pixel = per_pixel * weight.to(per_pixel.dtype)
    return per_pixel.sum() / valid.sum().clamp_min(1)
