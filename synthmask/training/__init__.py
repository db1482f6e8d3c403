"""Robust training on noisy pseudo-masks (METHOD.md Technique 1), pure torch: BECO co-training
pieces (boundary band, copy-paste, strong augmentation, co-training loss, online labels) and
reliability-based data pruning."""

from synthmask.training.augment import StrongAugmentConfig, strong_photometric_augment
from synthmask.training.boundary import boundary_band, dilate, erode
from synthmask.training.co_training import (
    CoTrainingLoss,
    co_training_loss,
    online_labels,
    online_prediction,
    peer_disagreement,
    reliable_from_map,
)
from synthmask.training.copy_paste import copy_paste_halves, paste_region
from synthmask.training.pruning import (
    SampleReliabilityStats,
    dominant_class,
    sample_reliability_stats,
    sample_scores,
    select_reliable_samples,
)

__all__ = [
    "CoTrainingLoss",
    "SampleReliabilityStats",
    "StrongAugmentConfig",
    "boundary_band",
    "co_training_loss",
    "copy_paste_halves",
    "dilate",
    "dominant_class",
    "erode",
    "online_labels",
    "online_prediction",
    "paste_region",
    "peer_disagreement",
    "reliable_from_map",
    "sample_reliability_stats",
    "sample_scores",
    "select_reliable_samples",
    "strong_photometric_augment",
]
