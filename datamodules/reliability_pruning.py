"""Reliability-based pruning of a synthetic training set: the samples whose pseudo-masks
are least reliable are left out of the training loader (see synthmask.training.pruning)."""

from __future__ import annotations

import numpy as np
import torch
from lightning.pytorch.utilities import rank_zero_info
from torch.utils.data import Subset

from synthmask.datamodules.synthetic_dataset import SyntheticSegDataset
from synthmask.training.pruning import (
    SampleReliabilityStats,
    sample_reliability_stats,
    select_reliable_samples,
)


def dataset_reliability_stats(
    dataset: SyntheticSegDataset, num_classes: int, chunk: int = 64
) -> SampleReliabilityStats:
    """Per-sample statistics of every cached record of ``dataset`` (missing ones are generated),
    at the records' own resolution, before any augmentation."""
    parts = []
    for start in range(0, len(dataset), chunk):
        records = dataset.records(range(start, min(start + chunk, len(dataset))))
        for record in records:
            parts.append(
                sample_reliability_stats(
                    torch.from_numpy(record.mask.astype(np.int64))[None],
                    torch.from_numpy(record.margin.astype(np.float32))[None],
                    torch.from_numpy(record.reliability.astype(np.float32) / 255.0)[None],
                    num_classes,
                )
            )
    return SampleReliabilityStats.concat(parts)


def pruned_subset(
    dataset: SyntheticSegDataset,
    num_classes: int,
    share: float,
    per_class: bool = True,
    score: str = "margin",
) -> Subset:
    """``dataset`` without its least reliable ``share`` of samples (``select_reliable_samples``).

    Every rank computes the same selection from the same cache, so DDP ranks agree on it.
    """
    stats = dataset_reliability_stats(dataset, num_classes)
    kept = select_reliable_samples(stats, share, per_class=per_class, score=score)
    rank_zero_info(
        f"reliability pruning: kept {len(kept)} of {len(dataset)} synthetic samples "
        f"(dropped the least reliable {share:.0%} by {score}{', per class' if per_class else ''})"
    )
    return Subset(dataset, kept.tolist())
