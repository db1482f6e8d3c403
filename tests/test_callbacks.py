"""W&B callbacks: an offline run holds the overlays, the IoU table, and final and best val/mIoU
in its summary."""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from fixtures_segmentation import TINY_NET_ARGS, RecordValMiou, TinySegDataModule
from lightning.pytorch import Trainer
from PIL import Image

from synthmask.callbacks.iou_table import PerClassIoUTable
from synthmask.callbacks.wandb_media import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    SegmentationMediaLogger,
    denormalize_to_uint8,
)
from synthmask.cli import main
from synthmask.lightning_modules.segmentation import SegmentationModule
from synthmask.models import DeepLabV3Plus


def _module(num_classes: int = 3) -> SegmentationModule:
    torch.manual_seed(0)
    net = DeepLabV3Plus(
        num_classes=num_classes,
        encoder_name="test_resnet",
        aspp_channels=8,
        decoder_channels=8,
        low_level_channels=4,
    )
    names = ["background"] + [f"thing{i}" for i in range(1, num_classes)]
    return SegmentationModule(net=net, num_classes=num_classes, class_names=names)


def test_denormalize_inverts_imagenet_normalization() -> None:
    pixels = torch.tensor([0.0, 0.5, 1.0])
    mean = torch.tensor(IMAGENET_MEAN)
    std = torch.tensor(IMAGENET_STD)
    normalized = (pixels[None, :, None, None] - mean[None, :, None, None]) / std[
        None, :, None, None
    ]
    out = denormalize_to_uint8(normalized, IMAGENET_MEAN, IMAGENET_STD)
    assert out.shape == (1, 1, 1, 3) and out.dtype == np.uint8
    assert out[0, 0, 0].tolist() == [0, 128, 255]


def _read_pngs(folder: Path) -> list[np.ndarray]:
    return [np.array(Image.open(p)) for p in sorted(folder.rglob("*.png"))]


def test_offline_wandb_run_holds_overlays_table_config_and_final_and_best_miou(
    tmp_path: Path,
) -> None:
    cli = main(
        [
            "fit",
            "--model=synthmask.lightning_modules.segmentation.SegmentationModule",
            "--data=fixtures_segmentation.TinySegDataModule",
            *TINY_NET_ARGS,
            "--trainer.accelerator=cpu",
            "--trainer.max_epochs=3",
            "--trainer.limit_train_batches=2",
            "--trainer.limit_val_batches=2",
            "--trainer.num_sanity_val_steps=0",
            "--trainer.enable_checkpointing=false",
            "--trainer.enable_progress_bar=false",
            "--trainer.enable_model_summary=false",
            "--trainer.logger=lightning.pytorch.loggers.WandbLogger",
            "--trainer.logger.init_args.project=synthmask-test",
            f"--trainer.logger.init_args.save_dir={tmp_path}",
            "--trainer.logger.init_args.offline=true",
            "--trainer.callbacks+=synthmask.callbacks.wandb_media.SegmentationMediaLogger",
            "--trainer.callbacks.max_images=2",
            "--trainer.callbacks+=synthmask.callbacks.iou_table.PerClassIoUTable",
            "--trainer.callbacks+=fixtures_segmentation.RecordValMiou",
        ]
    )
    trainer, module, logger = cli.trainer, cli.model, cli.trainer.logger
    record = next(c for c in trainer.callbacks if isinstance(c, RecordValMiou))
    run = logger.experiment
    assert len(record.values) == 3
    # Summary: val/mIoU of the final weights (the last validation), the best under its own name,
    # per-class IoU at both.
    summary = dict(run.summary)
    assert summary["val/mIoU"] == pytest.approx(record.values[-1])
    assert summary["val/mIoU_best"] == pytest.approx(max(record.values))
    assert module.best_val_miou == pytest.approx(max(record.values))
    for name, last, best in zip(
        module.class_names, module.last_val_iou.tolist(), module.best_val_iou.tolist(), strict=True
    ):
        assert summary.get(f"val/IoU/{name}") == (None if math.isnan(last) else pytest.approx(last))
        assert summary.get(f"val/IoU_best/{name}") == (
            None if math.isnan(best) else pytest.approx(best)
        )
    # The run config holds the full CLI config once, nested (LoggerSaveConfigCallback), and the
    # code / data provenance; the module's hyper-parameters are not logged again flat.
    assert set(run.config.keys()) == {"cli", "provenance"}
    cli_config = run.config["cli"]
    assert cli_config["model"]["init_args"]["net"]["init_args"]["encoder_name"] == "test_resnet"
    assert cli_config["trainer"]["max_epochs"] == 3
    run_dir = Path(run.dir).parent
    run.finish()

    media = run_dir / "files" / "media"
    stored = module.first_val_batch  # the last epoch's first batch
    masks = _read_pngs(media / "images" / "mask")
    for i in range(2):
        for key in ("mask", "pred"):
            expected = stored[key][i].numpy().astype(np.uint8)
            assert any(np.array_equal(expected, m) for m in masks), f"{key} {i} not logged"
    images = [a for a in _read_pngs(media / "images") if a.ndim == 3]
    overlay = denormalize_to_uint8(stored["image"][:1], IMAGENET_MEAN, IMAGENET_STD)[0]
    assert any(np.array_equal(overlay, a[..., :3]) for a in images)

    tables = sorted((media / "table").rglob("*.table.json"), key=lambda p: p.stat().st_mtime)
    assert len(tables) >= 1
    table = json.loads(tables[-1].read_text())
    assert table["columns"] == ["class_id", "class", "IoU"]
    assert [row[1] for row in table["data"]] == ["background", "thing1", "thing2"]
    for row, value in zip(table["data"], module.last_val_iou.tolist(), strict=True):
        assert row[2] is None if math.isnan(value) else row[2] == pytest.approx(value)

    history = next(run_dir.glob("run-*.wandb")).read_bytes()
    assert b"val/mIoU" in history and b"val/overlays" in history


def test_callbacks_without_wandb_logger_warn_once_and_log_nothing(tmp_path: Path) -> None:
    media, table = SegmentationMediaLogger(), PerClassIoUTable()
    trainer = Trainer(
        accelerator="cpu",
        max_epochs=2,
        limit_train_batches=1,
        limit_val_batches=1,
        num_sanity_val_steps=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[media, table],
        default_root_dir=tmp_path,
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.fit(_module(), datamodule=TinySegDataModule(num_classes=3, size=32))
    messages = [str(w.message) for w in caught if "no WandbLogger" in str(w.message)]
    assert sum("SegmentationMediaLogger" in m for m in messages) == 1
    assert sum("PerClassIoUTable" in m for m in messages) == 1
    assert not list(tmp_path.rglob("*.wandb"))
