"""Reliability-based data pruning: drop the synthetic samples whose pseudo-masks are least
reliable (a cheap stand-in for DiffuMask's "noise learning" step)."""

from __future__ import annotations

import difflib
import math
from dataclasses import dataclass

import torch

IGNORE_INDEX = 255
SCORES = ("margin", "reliable_fraction")


@dataclass
class SampleReliabilityStats:
    """Per-sample, per-class statistics of pseudo-masks (N samples, C classes).

    Attributes:
        pixel_count: float (N, C) pixels labelled with each class (255 not counted).
        mean_margin: float (N, C) mean margin over those pixels (NaN where the class is absent;
            infinite margins count as 1, the largest margin of [0, 1] scores).
        reliable_fraction: float (N, C) share of those pixels that are reliable (NaN if absent).
    """

    pixel_count: torch.Tensor
    mean_margin: torch.Tensor
    reliable_fraction: torch.Tensor

    def __len__(self) -> int:
        return self.pixel_count.shape[0]

    @staticmethod
    def concat(parts: list[SampleReliabilityStats]) -> SampleReliabilityStats:
        """Stack the statistics of several chunks of samples (in order)."""
        return SampleReliabilityStats(
            *(torch.cat([getattr(p, f) for p in parts]) for f in SampleReliabilityStats.FIELDS)
        )

    FIELDS = ("pixel_count", "mean_margin", "reliable_fraction")


def sample_reliability_stats(
    masks: torch.Tensor,
    margins: torch.Tensor,
    reliability: torch.Tensor,
    num_classes: int,
    ignore_index: int = IGNORE_INDEX,
) -> SampleReliabilityStats:
    """Per-class mean margin and reliable fraction of every sample.

    Shape:
        masks (N, H, W) int64; margins (N, H, W) float; reliability (N, H, W) float/bool
        -> SampleReliabilityStats of (N, C) tensors
    """
    if not masks.shape == margins.shape == reliability.shape:
        raise ValueError(
            f"masks {tuple(masks.shape)}, margins {tuple(margins.shape)} and reliability "
            f"{tuple(reliability.shape)} must have the same (N, H, W) shape"
        )
    labels = masks.flatten(1)
    valid = labels != ignore_index
    one_hot = torch.zeros(labels.shape[0], num_classes, labels.shape[1], dtype=torch.float32)
    one_hot.scatter_(1, labels.clamp(0, num_classes - 1).unsqueeze(1), valid.unsqueeze(1).float())
    margin = torch.nan_to_num(margins.flatten(1).float(), nan=0.0, posinf=1.0).unsqueeze(1)
    reliable = (reliability.flatten(1).float() >= 0.5).float().unsqueeze(1)
    count = one_hot.sum(-1)
    denominator = torch.where(count > 0, count, torch.full_like(count, float("nan")))
    return SampleReliabilityStats(
        pixel_count=count,
        mean_margin=(one_hot * margin).sum(-1) / denominator,
        reliable_fraction=(one_hot * reliable).sum(-1) / denominator,
    )


def sample_scores(stats: SampleReliabilityStats, score: str = "margin") -> torch.Tensor:
    """One reliability score per sample: the pixel-weighted mean of ``score`` over its foreground
    classes (1..C-1), or over the background when it has no foreground.

    Shape:
        -> (N,) float
    """
    if score not in SCORES:
        close = difflib.get_close_matches(score, SCORES, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise KeyError(f"unknown pruning score {score!r}{hint}; valid scores: {list(SCORES)}")
    values = stats.mean_margin if score == "margin" else stats.reliable_fraction
    values = torch.nan_to_num(values, nan=0.0)
    weights = stats.pixel_count.clone()
    has_foreground = weights[:, 1:].sum(1) > 0
    weights[has_foreground, 0] = 0.0  # background counts only for empty images
    return (values * weights).sum(1) / weights.sum(1).clamp_min(1.0)


def dominant_class(stats: SampleReliabilityStats) -> torch.Tensor:
    """The foreground class with the most pixels in each sample (0 when it has none).

    Shape:
        -> (N,) int64
    """
    foreground = stats.pixel_count[:, 1:]
    top = foreground.argmax(dim=1) + 1
    return torch.where(foreground.sum(1) > 0, top, torch.zeros_like(top))


def select_reliable_samples(
    stats: SampleReliabilityStats, share: float, per_class: bool = True, score: str = "margin"
) -> torch.Tensor:
    """Indices of the samples kept after dropping the least reliable ``share`` of them.

    With ``per_class`` the samples are grouped by ``dominant_class`` and ``floor(share * n)`` of
    each group of n are dropped, so classes whose masks are hard in general keep their samples in
    proportion; otherwise ``floor(share * N)`` are dropped overall. Lowest ``sample_scores`` go
    first, ties by index (deterministic).

    Shape:
        -> kept indices int64 (K,), ascending
    """
    if not 0.0 <= share < 1.0:
        raise ValueError(
            f"pruning share={share} must be in [0, 1) (the fraction of samples dropped)"
        )
    scores = sample_scores(stats, score)
    groups = dominant_class(stats) if per_class else torch.zeros(len(stats), dtype=torch.int64)
    keep = torch.ones(len(stats), dtype=torch.bool)
    for group in torch.unique(groups).tolist():
        members = torch.nonzero(groups == group, as_tuple=True)[0]
        drop = math.floor(share * members.numel() + 1e-9)
        if drop == 0:
            continue
        order = torch.argsort(scores[members], stable=True)
        keep[members[order[:drop]]] = False
    return torch.nonzero(keep, as_tuple=True)[0]
