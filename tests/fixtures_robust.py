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


# ---- tests/test_cli_experiments.py hooks: shrink the robust-training configs ---------------------

_TINY_PIPELINE: list[Path] = []


def _tiny_pipeline() -> Path:
    """A tiny random SD pipeline (latent 16, image 32) built once per process, in place of SD 1.5
    and of the shipped shapes LDM (which may not exist yet in a checkout)."""
    if not _TINY_PIPELINE:
        import tempfile

        from synthmask.diffusion.tiny import build_tiny_pipeline

        save_dir = Path(tempfile.mkdtemp(prefix="robust_tiny_sd_")) / "pipe"
        build_tiny_pipeline(save_dir, sample_size=16, text_layers=1)
        _TINY_PIPELINE.append(save_dir)
    return _TINY_PIPELINE[0]


def _synthetic_overrides(tmp_path: Path) -> list[str]:
    return [
        f"--data.init_args.pipeline.model={_tiny_pipeline()}",
        "--data.init_args.pipeline.dtype=float32",
        "--data.init_args.pipeline.device=cpu",
        "--data.init_args.pipeline.num_inference_steps=2",
        "--data.init_args.synthesis.num_images=4",
        "--data.init_args.synthesis.batch_size=2",
        f"--data.init_args.synthesis.cache_dir={tmp_path / 'synth_cache'}",
        "--data.init_args.synthesis.progress=false",
        "--data.init_args.pruning.share=0.25",  # exercises the pruning path (drops 1 of 4)
    ]


def _voc_synth_beco(tmp_path: Path) -> list[str]:
    from fixtures_datasets import make_voc

    return [
        *_synthetic_overrides(tmp_path),
        "--data.init_args.pipeline.height=32",
        "--data.init_args.pipeline.width=32",
        f"--data.init_args.val_data.init_args.root={make_voc(tmp_path / 'voc')}",
        "--data.init_args.val_data.init_args.val_batch_size=2",
        "--data.init_args.val_data.init_args.loader.num_workers=0",
        "--data.init_args.val_data.init_args.val_pad_to=64",
        "--data.init_args.val_data.init_args.loader.pin_memory=false",
    ]


def _shapes_synth(tmp_path: Path) -> list[str]:
    return [
        *_synthetic_overrides(tmp_path),
        "--data.init_args.val_data.init_args.n_val=4",
        "--data.init_args.val_data.init_args.n_test=4",
        "--data.init_args.val_data.init_args.val_batch_size=2",
    ]


EXPERIMENT_OVERRIDES = {
    "voc_synth_beco": _voc_synth_beco,
    "shapes_synth_robust": _shapes_synth,
    "shapes_synth_beco": _shapes_synth,
}
