"""Paper optimizer defaults: SGD (lr 0.01, momentum 0.9, wd 1e-4) and poly 0.9 decay to 1e-5."""

from __future__ import annotations

import torch
from torch.optim.lr_scheduler import LRScheduler


class DeepLabSGD(torch.optim.SGD):
    """SGD whose defaults are the DeepLab / BECO recipe: lr 0.01, momentum 0.9, weight decay 1e-4.

    A class rather than a function so configs can override one value
    (``--model.optimizer.init_args.lr=0.02``) and keep the others.
    """

    def __init__(
        self,
        params,
        lr: float = 0.01,
        momentum: float = 0.9,
        weight_decay: float = 1e-4,
        nesterov: bool = False,
    ) -> None:
        super().__init__(
            params, lr=lr, momentum=momentum, weight_decay=weight_decay, nesterov=nesterov
        )


class PolyLR(LRScheduler):
    """``lr_t = (base_lr - min_lr) * (1 - t / total_steps) ** power + min_lr``, stepped per iteration.

    ``total_steps=None`` leaves the horizon open until a training loop fills it in (the
    SegmentationModule sets it to ``trainer.estimated_stepping_batches``); stepping past step 0
    with no horizon raises. Past ``total_steps`` the rate stays at ``min_lr``.
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        total_steps: int | None = None,
        power: float = 0.9,
        min_lr: float = 1e-5,
        last_epoch: int = -1,
    ) -> None:
        if total_steps is not None and total_steps < 1:
            raise ValueError(f"total_steps must be >= 1, got {total_steps}")
        self.total_steps = total_steps
        self.power = power
        self.min_lr = min_lr
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        step = self.last_epoch
        if step == 0:
            return list(self.base_lrs)
        if self.total_steps is None:
            raise ValueError(
                "PolyLR.total_steps is unset; pass total_steps or let the training module set it"
            )
        progress = min(step, self.total_steps) / self.total_steps
        factor = (1.0 - progress) ** self.power
        return [(base - self.min_lr) * factor + self.min_lr for base in self.base_lrs]
