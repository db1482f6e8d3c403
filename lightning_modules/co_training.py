"""CoTrainingModule: BECO-style co-training of two segmenters on noisy pseudo-masks (METHOD.md,
Technique 1). The loss pieces live in ``synthmask.training`` (pure torch)."""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence

import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import nn
from torchmetrics import MeanMetric

from synthmask.lightning_modules.segmentation import STORED_VAL_SAMPLES, SegmentationModule
from synthmask.models.losses import IGNORE_INDEX, reliability_weighted_cross_entropy
from synthmask.models.optim import DeepLabSGD, PolyLR
from synthmask.training import (
    boundary_band,
    co_training_loss,
    copy_paste_halves,
    online_labels,
    peer_disagreement,
    reliable_from_map,
    strong_photometric_augment,
)
from synthmask.training.augment import IMAGENET_MEAN, IMAGENET_STD

EVAL_WITH = ("net1", "net2", "average")
# A network builder called with the class count (a config's net without num_classes).
NetFactory = Callable[[int], nn.Module]


def build_peer_nets(
    net: nn.Module | NetFactory, num_classes: int, init_seeds: Sequence[int]
) -> tuple[nn.Module, nn.Module]:
    """Two networks of the same architecture with different initialisations.

    A factory (a config's net without ``num_classes``) is called once per seed under
    ``torch.manual_seed(seed)`` (pretrained encoder weights, if any, load identically; the rest
    differs). A built module becomes net 1 as is; net 2 is its deep copy whose parameters outside
    its ``encoder`` attribute (if it has one; else all) are re-initialised under ``init_seeds[1]``.
    The global RNG state is restored afterwards.
    """
    if len(init_seeds) != 2 or init_seeds[0] == init_seeds[1]:
        raise ValueError(f"init_seeds={list(init_seeds)} must be two different seeds, e.g. [0, 1]")
    with torch.random.fork_rng(devices=[]):
        if not isinstance(net, nn.Module):
            nets = []
            for seed in init_seeds:
                torch.manual_seed(seed)
                nets.append(net(num_classes))
            return nets[0], nets[1]
        peer = copy.deepcopy(net)
        torch.manual_seed(init_seeds[1])
        encoder = getattr(peer, "encoder", None)
        kept = set(encoder.modules()) if isinstance(encoder, nn.Module) else set()
        for module in peer.modules():
            if module not in kept and hasattr(module, "reset_parameters"):
                module.reset_parameters()
        return net, peer


def foreground_shares(mask: torch.Tensor, reliability: torch.Tensor) -> dict[str, torch.Tensor]:
    """Share of labelled pixels that are foreground, overall and among the reliable ones.

    Shape: ``mask`` (B, H, W) class ids (255 = ignore), ``reliability`` (B, H, W) in [0, 1].
    """
    labelled = mask != IGNORE_INDEX
    foreground = labelled & (mask != 0)
    reliable = labelled & (reliability > 0.5)
    return {
        "train/label_foreground": foreground.sum() / labelled.sum().clamp(min=1),
        "train/reliable_foreground": (foreground & reliable).sum() / reliable.sum().clamp(min=1),
    }


class CoTrainingModule(SegmentationModule):
    """BECO co-training: nets f1 (``self.net``) and f2 (``self.net2``), same architecture.

    Per training batch: after ``warmup_epochs`` the mask and reliability are replaced by online
    ones (both nets in eval mode, averaged logits, label = argmax, M = max prob > ``highres_t``);
    the batch halves exchange a random half of their foreground classes (``copy_paste_p`` each
    way; B = boundary band of the pasted region, 0 before warm-up); the images get strong
    photometric augmentation; the loss is ``synthmask.training.co_training_loss``. Evaluation
    uses ``eval_with``: ``"net1"``, ``"net2"`` or ``"average"`` (mean logits).

    DDP: every rank runs the same sequence of forwards and collective ops whatever its random
    draws (augmentation / paste randomness only changes tensor values), metrics are torchmetrics
    objects synced by Lightning. Mixed precision: losses are computed in float32.

    Args:
        net: the segmentation network config, injected once: a factory (config without
            ``num_classes``) or a module; see ``build_peer_nets``.
        num_classes, class_names, optimizer, lr_scheduler, log_per_class_iou: as in
            ``SegmentationModule`` (the optimizer gets both nets' parameters).
        warmup_epochs: epochs trained on the offline (data) labels before online labels.
        w_hb, w_lb: boundary weights of the reliable / unreliable terms (BECO: 0.2, 0).
        confidence_threshold: peer labels count only where the peer's max prob exceeds it.
        highres_t: online reliability threshold on the averaged max probability.
        copy_paste_p: probability of each paste direction; 0 disables copy-paste.
        strong_augment: colour jitter / greyscale / blur on the training images.
        reliable_threshold: the batch's ``"reliability"`` at or above it is reliable (M = 1).
        eval_with: which prediction validation / test / ``forward`` use.
        init_seeds: initialisation seeds of net 1 and net 2.
        mean, std: the data's normalisation (for the photometric augmentation).

    Attributes:
        first_val_batch: as ``SegmentationModule``'s, plus ``"disagreement"`` (N, H, W) {0, 1}
            where the nets' argmax differ and ``"confidence"`` (N, H, W) the evaluated
            prediction's max probability (``"reliability"`` / ``"margin"`` when the batch has them).
    """

    def __init__(
        self,
        net: nn.Module | NetFactory,
        num_classes: int,
        class_names: list[str] | None = None,
        optimizer: OptimizerCallable = DeepLabSGD,
        lr_scheduler: LRSchedulerCallable = PolyLR,
        warmup_epochs: int = 1,
        w_hb: float = 0.2,
        w_lb: float = 0.0,
        confidence_threshold: float = 0.95,
        highres_t: float = 0.95,
        copy_paste_p: float = 0.5,
        strong_augment: bool = True,
        reliable_threshold: float = 0.5,
        eval_with: str = "average",
        init_seeds: tuple[int, int] = (0, 1),
        mean: tuple[float, float, float] = IMAGENET_MEAN,
        std: tuple[float, float, float] = IMAGENET_STD,
        log_per_class_iou: bool = True,
    ) -> None:
        if eval_with not in EVAL_WITH:
            raise ValueError(f"eval_with={eval_with!r} is not one of {list(EVAL_WITH)}")
        if warmup_epochs < 0:
            raise ValueError(f"warmup_epochs={warmup_epochs} must be >= 0")
        net1, net2 = build_peer_nets(net, num_classes, init_seeds)
        super().__init__(
            net=net1,
            num_classes=num_classes,
            class_names=class_names,
            optimizer=optimizer,
            lr_scheduler=lr_scheduler,
            reliability_mode="none",
            log_per_class_iou=log_per_class_iou,
        )
        self.net2 = net2
        self.warmup_epochs = warmup_epochs
        self.w_hb, self.w_lb = w_hb, w_lb
        self.confidence_threshold = confidence_threshold
        self.highres_t = highres_t
        self.copy_paste_p = copy_paste_p
        self.strong_augment = strong_augment
        self.reliable_threshold = reliable_threshold
        self.eval_with = eval_with
        self.mean, self.std = tuple(mean), tuple(std)
        self.val_disagreement = MeanMetric()
        self._generator: torch.Generator | None = None

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Shape: images (B, 3, H, W) -> logits (B, num_classes, H, W) of ``eval_with``."""
        if self.eval_with == "net1":
            return self.net(images)
        if self.eval_with == "net2":
            return self.net2(images)
        return self._combine(self.net(images), self.net2(images))

    @staticmethod
    def _combine(logits1: torch.Tensor, logits2: torch.Tensor) -> torch.Tensor:
        return (logits1.float() + logits2.float()) / 2

    def generator(self) -> torch.Generator:
        """CPU generator of the paste / augmentation draws, seeded from the global seed and the
        rank (different crops per rank; the control flow never depends on the draws)."""
        if self._generator is None:
            rank = self.global_rank if self._trainer is not None else 0
            self._generator = torch.Generator().manual_seed(torch.initial_seed() + 7919 * rank)
        return self._generator

    def after_warmup(self) -> bool:
        return self.current_epoch >= self.warmup_epochs

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        after_warmup = self.after_warmup()
        offline_mask = batch["mask"]
        reliable = reliable_from_map(
            batch.get("reliability"), offline_mask, self.reliable_threshold
        )
        batch = {**batch, "reliability": reliable.float()}
        if after_warmup:
            label, online_reliable = online_labels(
                (self.net, self.net2), batch["image"], self.highres_t
            )
            label = label.masked_fill(offline_mask == IGNORE_INDEX, IGNORE_INDEX)
            batch = {**batch, "mask": label, "reliability": online_reliable.float()}
        # Foreground share of the labels trained on (offline masks, then online ones) and of the
        # reliable pixels among them: online labels that collapse to background show here first.
        label_stats = foreground_shares(batch["mask"], batch["reliability"])
        batch, pasted = copy_paste_halves(batch, p=self.copy_paste_p, generator=self.generator())
        band = boundary_band(pasted) if after_warmup else None
        images = batch["image"]
        if self.strong_augment:
            images = strong_photometric_augment(
                images, self.mean, self.std, generator=self.generator()
            )
        logits = (self.net(images), self.net2(images))
        reliable = reliable_from_map(batch["reliability"], batch["mask"], 0.5)
        loss = co_training_loss(
            logits,
            batch["mask"],
            reliable,
            band,
            w_hb=self.w_hb,
            w_lb=self.w_lb,
            confidence_threshold=self.confidence_threshold,
        )
        _, disagreement = peer_disagreement(*logits, batch["mask"] != IGNORE_INDEX)
        size = images.shape[0]
        self.log("train/loss", loss.total, prog_bar=True, batch_size=size)
        self.log_dict(
            {
                "train/loss_supervised": loss.supervised,
                "train/loss_peer": loss.peer,
                "train/peer_coverage": loss.peer_coverage,
                "train/peer_disagreement": disagreement,
                "train/reliable_fraction": reliable.float().mean(),
                "train/online_labels": float(after_warmup),
                **label_stats,
            },
            batch_size=size,
        )
        return loss.total

    def validation_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> None:
        images, mask = batch["image"], batch["mask"]
        logits1, logits2 = self.net(images), self.net2(images)
        logits = {"net1": logits1, "net2": logits2}.get(self.eval_with)
        logits = self._combine(logits1, logits2) if logits is None else logits
        loss = reliability_weighted_cross_entropy(logits, mask, mode="none")
        self.log("val/loss", loss, sync_dist=True, batch_size=images.shape[0])
        preds = logits.argmax(dim=1)
        self.val_iou.update(preds, mask)
        valid = mask != IGNORE_INDEX
        differ, rate = peer_disagreement(logits1, logits2, valid)
        self.val_disagreement.update(rate, weight=valid.sum().clamp_min(1))
        self.log("val/peer_disagreement", self.val_disagreement, batch_size=images.shape[0])
        if batch_idx == 0 and dataloader_idx == 0:
            stored = {
                "image": images,
                "mask": mask,
                "pred": preds,
                "disagreement": differ.float(),
                "confidence": logits.float().softmax(dim=1).amax(dim=1),
            }
            stored |= {k: batch[k] for k in ("reliability", "margin") if k in batch}
            keep = slice(0, STORED_VAL_SAMPLES)
            self.first_val_batch = {k: v[keep].detach().cpu() for k, v in stored.items()}
