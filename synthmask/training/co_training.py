"""BECO co-training pieces (Rong et al., CVPR 2023; METHOD.md Technique 1): the two-network loss,
online labels from both networks, and their disagreement."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

IGNORE_INDEX = 255


@dataclass
class CoTrainingLoss:
    """Terms of the BECO loss (every field a scalar tensor).

    Attributes:
        total: ``supervised + peer`` (what is back-propagated).
        supervised: ``sum_i mean(CE(f_i, Y) * M * (1 + w_hb * B))``.
        peer: ``sum_i mean(CE(f_i, argmax f_{-i}) * (1 - M) * conf_{-i} * (1 + w_lb * B))``.
        peer_coverage: share of unreliable pixels that got a confident peer label (mean of nets).
    """

    total: torch.Tensor
    supervised: torch.Tensor
    peer: torch.Tensor
    peer_coverage: torch.Tensor


def reliable_from_map(
    reliability: torch.Tensor | None,
    target: torch.Tensor,
    threshold: float = 0.5,
    ignore_index: int = IGNORE_INDEX,
) -> torch.Tensor:
    """Binary reliability M: ``reliability >= threshold`` (all True without a map), never on
    ``ignore_index`` pixels (those get peer supervision only).

    Shape:
        reliability (B, H, W) float or None, target (B, H, W) int64 -> bool (B, H, W)
    """
    labelled = target != ignore_index
    if reliability is None:
        return labelled
    return (reliability >= threshold) & labelled


def co_training_loss(
    logits: Sequence[torch.Tensor],
    target: torch.Tensor,
    reliable: torch.Tensor,
    band: torch.Tensor | None = None,
    w_hb: float = 0.2,
    w_lb: float = 0.0,
    confidence_threshold: float = 0.95,
    ignore_index: int = IGNORE_INDEX,
) -> CoTrainingLoss:
    """BECO's loss for two networks, means over all B*H*W pixels:

    ``L = sum_i mean(CE(f_i, Y) * M * (1 + w_hb*B)) + sum_i mean(CE(f_i, argmax f_{-i}) * (1 - M)
    * [max softmax f_{-i} > confidence_threshold] * (1 + w_lb*B))``.

    Peer labels and confidences are detached (no gradient flows into the peer through its own
    pseudo-label). ``Y = ignore_index`` pixels contribute nothing to the first term. ``reliable``
    is used as given (see ``reliable_from_map``); ``band`` None means B = 0. Computed in float32.

    Shape:
        logits: two (B, C, H, W); target (B, H, W) int64; reliable (B, H, W) bool or {0, 1};
        band (B, H, W) {0, 1} or None -> CoTrainingLoss of scalars
    """
    if len(logits) != 2:
        raise ValueError(
            f"co_training_loss needs the logits of exactly 2 networks, got {len(logits)}"
        )
    if not 0.0 <= confidence_threshold < 1.0:
        raise ValueError(
            f"confidence_threshold={confidence_threshold} must be in [0, 1) (0 keeps every peer label)"
        )
    m = reliable.float()
    b = torch.zeros_like(m) if band is None else band.float()
    supervised, peer, coverage = [], [], []
    for own, other in ((logits[0], logits[1]), (logits[1], logits[0])):
        own = own.float()
        ce_label = F.cross_entropy(own, target, ignore_index=ignore_index, reduction="none")
        supervised.append((ce_label * m * (1.0 + w_hb * b)).mean())
        with torch.no_grad():
            confidence, peer_label = other.detach().float().softmax(dim=1).max(dim=1)
            confident = (confidence > confidence_threshold).float()
            unreliable = 1.0 - m
            coverage.append((confident * unreliable).sum() / unreliable.sum().clamp_min(1.0))
        ce_peer = F.cross_entropy(own, peer_label, reduction="none")
        peer.append((ce_peer * unreliable * confident * (1.0 + w_lb * b)).mean())
    supervised_total, peer_total = supervised[0] + supervised[1], peer[0] + peer[1]
    return CoTrainingLoss(
        total=supervised_total + peer_total,
        supervised=supervised_total,
        peer=peer_total,
        peer_coverage=(coverage[0] + coverage[1]) / 2,
    )


@torch.no_grad()
def online_prediction(
    nets: Sequence[nn.Module], images: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The nets' joint prediction as BECO's online labels take it: every net in eval mode
    without gradient, logits averaged, softmax; -> (argmax label, its probability). Each net's
    train/eval mode is restored afterwards.

    Shape:
        images (B, 3, H, W) -> label int64 (B, H, W), confidence float32 (B, H, W)
    """
    modes = [net.training for net in nets]
    try:
        for net in nets:
            net.eval()
        mean_logits = torch.stack([net(images).float() for net in nets]).mean(dim=0)
    finally:
        for net, mode in zip(nets, modes, strict=True):
            net.train(mode)
    confidence, label = mean_logits.softmax(dim=1).max(dim=1)
    return label, confidence


def online_labels(
    nets: Sequence[nn.Module], images: torch.Tensor, highres_t: float = 0.95
) -> tuple[torch.Tensor, torch.Tensor]:
    """BECO's online label and reliability: label = argmax of ``online_prediction``, reliable =
    its probability > ``highres_t``.

    Shape:
        images (B, 3, H, W) -> label int64 (B, H, W), reliable bool (B, H, W)
    """
    label, confidence = online_prediction(nets, images)
    return label, confidence > highres_t


def peer_disagreement(
    logits_a: torch.Tensor, logits_b: torch.Tensor, valid: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Where the two networks' argmax labels differ, and the share of (valid) pixels that do.

    Shape:
        logits_a, logits_b (B, C, H, W); valid (B, H, W) bool or None
        -> map bool (B, H, W), rate scalar float32
    """
    differ = logits_a.argmax(dim=1) != logits_b.argmax(dim=1)
    if valid is None:
        return differ, differ.float().mean()
    return differ, (differ & valid).float().sum() / valid.float().sum().clamp_min(1.0)
