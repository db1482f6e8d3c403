"""Tiny deterministic segmentation data and networks for the training/CLI/callback tests.

Importable as ``fixtures_segmentation`` (pytest puts tests/ on sys.path; subprocesses get it via
PYTHONPATH), so configs can name ``fixtures_segmentation.TinySegDataModule``.
"""

from __future__ import annotations

import torch
from lightning.pytorch import Callback, LightningDataModule
from torch import nn
from torch.utils.data import DataLoader, Dataset

from synthmask.datamodules.loaders import build_loader

TINY_NET_ARGS = [
    "--model.init_args.net.class_path=synthmask.models.DeepLabV3Plus",
    "--model.init_args.net.init_args.encoder_name=test_resnet",
    "--model.init_args.net.init_args.aspp_channels=16",
    "--model.init_args.net.init_args.decoder_channels=16",
    "--model.init_args.net.init_args.low_level_channels=8",
]


class TinySegDataset(Dataset):
    """``length`` samples of (3, size, size) noise images whose mask is a class-coloured square.

    The class of sample ``i`` is ``1 + i % (num_classes - 1)``; the square's colour channel is
    raised so the task is learnable. The border row is 255 (ignore). Fully determined by ``seed``.
    """

    def __init__(self, length: int, size: int, num_classes: int, seed: int, reliability: bool):
        generator = torch.Generator().manual_seed(seed)
        self.images = torch.randn(length, 3, size, size, generator=generator) * 0.3
        self.masks = torch.zeros(length, size, size, dtype=torch.int64)
        self.reliability = (
            torch.rand(length, size, size, generator=generator) if reliability else None
        )
        for i in range(length):
            cls = 1 + i % (num_classes - 1)
            lo, hi = size // 4, size // 4 + size // 2
            self.masks[i, lo:hi, lo:hi] = cls
            self.images[i, cls % 3, lo:hi, lo:hi] += 1.5
            self.masks[i, 0, :] = 255

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> dict:
        item = {"image": self.images[index], "mask": self.masks[index]}
        if self.reliability is not None:
            item["reliability"] = self.reliability[index]
        return item


class TinySegDataModule(LightningDataModule):
    """Batch-contract data module over ``TinySegDataset`` (train and val are different seeds)."""

    def __init__(
        self,
        num_classes: int = 3,
        size: int = 32,
        train_length: int = 8,
        val_length: int = 8,
        batch_size: int = 2,
        reliability: bool = False,
        with_synthesize: bool = False,
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.class_names = ["background"] + [f"thing{i}" for i in range(1, num_classes)]
        self.batch_size = batch_size
        self.train_set = TinySegDataset(train_length, size, num_classes, 0, reliability)
        self.val_set = TinySegDataset(val_length, size, num_classes, 1, reliability)
        self.synthesize_calls = 0
        if with_synthesize:
            self.synthesize = self._synthesize

    def _synthesize(self) -> None:
        self.synthesize_calls += 1

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.train_set, batch_size=self.batch_size, shuffle=True, drop_last=True)

    def val_dataloader(self) -> DataLoader:
        # The project's loader helper: unpadded per-rank shards under DDP (tests/test_ddp.py).
        return build_loader(self.val_set, self.batch_size, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self.val_dataloader()


class ConstantLogitsNet(nn.Module):
    """A 'network' that returns learnable per-pixel logits of fixed size (for loss/grad tests).

    Shape: images (B, 3, H, W) -> logits (B, num_classes, H, W)
    """

    def __init__(self, num_classes: int, height: int, width: int) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.logits = nn.Parameter(torch.zeros(1, num_classes, height, width))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.logits.expand(images.shape[0], -1, -1, -1)


class RecordValMiou(Callback):
    """Keeps the val/mIoU of every (non-sanity) validation epoch in ``values``."""

    def __init__(self) -> None:
        self.values: list[float] = []

    def on_validation_end(self, trainer, pl_module) -> None:
        if not trainer.sanity_checking:
            self.values.append(float(trainer.callback_metrics["val/mIoU"]))


class PrintValSampleCount(Callback):
    """Prints ``synthmask-test: val samples = N`` after every validation epoch (global rank zero),
    N = validation samples seen by all processes together (tests/test_ddp.py: no duplicates)."""

    def __init__(self) -> None:
        self.count = 0

    def on_validation_epoch_start(self, trainer, pl_module) -> None:
        self.count = 0

    def on_validation_batch_end(
        self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0
    ) -> None:
        self.count += len(batch["image"])

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        total = trainer.strategy.reduce(torch.tensor(float(self.count)), reduce_op="sum")
        if trainer.is_global_zero:
            print(f"synthmask-test: val samples = {int(total)}", flush=True)
