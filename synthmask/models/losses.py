"""Segmentation losses: per-pixel cross-entropy, optionally weighted by a reliability map.

The reliability map (batch key ``"reliability"``, float (B, H, W) in [0, 1], 1 = reliable) comes
with synthetic pseudo-masks. ``RELIABILITY_MODES`` maps a mode name to a function that turns the
per-pixel CE, the valid-pixel mask and the reliability map into per-pixel weighted losses; the
robust-training issue adds modes here (e.g. ``ignore``, ``margin``).
"""

from __future__ import annotations

import difflib
from collections.abc import Callable

import torch
import torch.nn.functional as F

IGNORE_INDEX = 255

# (per_pixel_ce (B,H,W), reliability (B,H,W) or None) -> weighted per-pixel loss (B,H,W)
ReliabilityWeighting = Callable[[torch.Tensor, torch.Tensor | None], torch.Tensor]


def _no_weighting(per_pixel: torch.Tensor, reliability: torch.Tensor | None) -> torch.Tensor:
    return per_pixel


def _multiply_by_reliability(
    per_pixel: torch.Tensor, reliability: torch.Tensor | None
) -> torch.Tensor:
    # Real data has no reliability map: every labelled pixel is fully reliable.
    return per_pixel if reliability is None else per_pixel * reliability


RELIABILITY_MODES: dict[str, ReliabilityWeighting] = {
    "none": _no_weighting,
    "weight": _multiply_by_reliability,
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


def reliability_weighted_cross_entropy(
    logits: torch.Tensor,
    target: torch.Tensor,
    reliability: torch.Tensor | None = None,
    mode: str = "weight",
    ignore_index: int = IGNORE_INDEX,
) -> torch.Tensor:
    """Mean per-pixel cross-entropy, each pixel's term weighted according to ``mode``.

    ``loss = sum_p w_p * CE_p / N`` where the sum runs over pixels whose target is not
    ``ignore_index``, ``w_p`` is the pixel's weight (``mode="weight"``: the reliability value,
    1 when no map is given; ``mode="none"``: 1) and the denominator ``N`` is the number of
    non-ignored pixels in the whole batch (not the sum of weights), so down-weighting a pixel
    lowers the loss instead of renormalising the others. With no valid pixel the loss is 0
    (still connected to ``logits`` so backward works).

    Shape:
        logits (B, C, H, W) float; target (B, H, W) int64 in [0, C) or ``ignore_index``;
        reliability (B, H, W) float or None -> scalar.
    """
    check_reliability_mode(mode)
    if reliability is not None and reliability.shape != target.shape:
        raise ValueError(
            f"reliability map shape {tuple(reliability.shape)} differs from mask shape "
            f"{tuple(target.shape)}; the data module must crop/resize both together"
        )
    per_pixel = F.cross_entropy(logits, target, ignore_index=ignore_index, reduction="none")
    weighted = RELIABILITY_MODES[mode](per_pixel, reliability)
    num_valid = (target != ignore_index).sum().clamp_min(1)
    return weighted.sum() / num_valid
