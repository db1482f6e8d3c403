"""Helpers of the robust-training tests: fixed-logit nets and a DDP parameter-checksum callback.

Importable as ``fixtures_robust`` (tests/ is on sys.path; subprocesses get it via PYTHONPATH).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from torch import nn


class FixedLogitsNet(nn.Module):
    """Returns the given logits (expanded over the batch) whatever the input; records its mode.

    Shape: images (B, 3, H, W) -> logits (B, C, H, W) with (C, H, W) = ``logits.shape``.
    """

    def __init__(self, logits: torch.Tensor) -> None:
        super().__init__()
        self.num_classes = logits.shape[0]
        self.register_buffer("logits", logits.clone())
        self.modes_seen: list[bool] = []

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        self.modes_seen.append(self.training)
        return self.logits.expand(images.shape[0], -1, -1, -1)


class ParamChecksumWriter(Callback):
    """At fit end every rank writes ``rank<k>.json`` with the parameter sums of net and net2."""

    def __init__(self, out_dir: str) -> None:
        self.out_dir = Path(out_dir)

    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        sums = {
            name: float(
                sum(p.detach().double().sum() for p in getattr(pl_module, name).parameters())
            )
            for name in ("net", "net2")
        }
        sums["world_size"] = trainer.world_size
        (self.out_dir / f"rank{trainer.global_rank}.json").write_text(json.dumps(sums))
