"""The pseudo-mask produced by every mask method."""

from __future__ import annotations

from dataclasses import dataclass

import torch

IGNORE_INDEX = 255
"""Label value of pixels that carry no supervision (the project-wide ignore id)."""


@dataclass
class PseudoMask:
    """Per-pixel pseudo-label and the scores it was taken from.

    Attributes:
        label: int64 (B, H, W); 0 = background, 1..C-1 = classes, 255 = ignore.
        scores: float32 (B, C, H, W); channel 0 = background, channel c = class c. Classes the
            prompt does not name are -inf, so they never win an argmax and never count as the
            runner-up of the reliability margin. The scale depends on the method (documented
            there); the reliability rule only ranks margins within a class, so it is scale free.
        class_ids: None for dense scores (channel c = class c); otherwise int64 (K,) naming
            the class of each score channel (compact scores, `pseudo_masks(compact_scores=True)`).
    """

    label: torch.Tensor
    scores: torch.Tensor
    class_ids: torch.Tensor | None = None

    def __post_init__(self) -> None:
        if self.label.dim() != 3 or self.scores.dim() != 4:
            raise ValueError(
                f"PseudoMask expects label (B, H, W) and scores (B, C, H, W); got "
                f"{tuple(self.label.shape)} and {tuple(self.scores.shape)}."
            )
        if self.label.shape != self.scores.shape[:1] + self.scores.shape[2:]:
            raise ValueError(
                f"PseudoMask label {tuple(self.label.shape)} and scores "
                f"{tuple(self.scores.shape)} disagree on batch/height/width."
            )


def absent_to_neg_inf(scores: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
    """Set the class channels that the prompt does not name to -inf (background kept).

    Shape:
        scores (B, C, H, W), present bool (B, C) -> (B, C, H, W)
    """
    keep = present.clone()
    keep[:, 0] = True
    return scores.masked_fill(~keep[:, :, None, None], float("-inf"))


def argmax_label(scores: torch.Tensor, ignore_margin: float | None = None) -> torch.Tensor:
    """Per-pixel best channel (ties go to the lower channel, background first). With
    `ignore_margin`, pixels whose top score is not ahead of the runner-up by at least that much
    become IGNORE_INDEX.

    Shape:
        scores (B, C, H, W) -> label int64 (B, H, W)
    """
    label = scores.argmax(dim=1)
    if ignore_margin is not None:
        top2 = scores.topk(2, dim=1).values
        label = label.masked_fill(top2[:, 0] - top2[:, 1] < ignore_margin, IGNORE_INDEX)
    return label
