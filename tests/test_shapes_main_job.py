"""The README main job (experiments/shapes_synth.yaml) end to end with the SHIPPED tiny LDM and a
reduced budget: synthesis -> pseudo-masks -> DeepLabV3+ -> val mIoU on real rendered scenes.

Slow (about a CPU-minute): run with ``WANDB_MODE=offline pytest tests/test_shapes_main_job.py -m slow``.
The fast CLI check of the same config (tiny random pipeline) is in test_cli_experiments.py.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from synthmask.cli import main

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "experiments" / "shapes_synth.yaml"
N_VAL = 64
# Measured 2026-12-05 at this test's budget with the shipped LDM (step 46,441 + fine-tuned
# decoder), seeds S = 0-7 (--seed_everything=S --data.init_args.synthesis.seed=S, each
# synthesizing its own 96 images), one thread under `nice -n 10` on a busy 2-core CPU: val mIoU
# 0.198 / 0.186 / 0.185 / 0.179 / 0.195 / 0.173 / 0.180 / 0.193, mean 0.186, sd 0.009. The floor sits 3 sd below
# the mean (0.013 below the lowest seed); this test runs seed 0 (0.198). The all-background
# prediction scores ~0.12; the full main job 0.61 (benchmarks/RESULTS.md, "Main job").
MIOU_FLOOR = 0.16


def all_background_miou(val_init: dict) -> float:
    """val mIoU of a segmenter that predicts background everywhere (the trivial floor):
    background IoU = background share, every class present in the targets scores 0."""
    from synthmask.datamodules.shapes_world import ShapesWorldDataModule
    from synthmask.world import SceneConfig

    scene = SceneConfig(**val_init.get("scene", {}))
    data = ShapesWorldDataModule(**{**val_init, "scene": scene, "n_val": N_VAL})
    data.setup("fit")
    masks = np.concatenate([batch["mask"].numpy() for batch in data.val_dataloader()])
    masks = masks[masks != 255]
    return float((masks == 0).mean() / len(np.unique(masks)))


@pytest.mark.slow
def test_main_job_with_shipped_ldm_reaches_the_measured_floor(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.chdir(tmp_path)
    config = yaml.safe_load(CONFIG.read_text())
    assert config["data"]["init_args"]["pipeline"]["model"] == "synthmask:shapes-ldm"
    cli = main(
        [
            "fit",
            "--config",
            str(CONFIG),
            "--data.init_args.synthesis.num_images=96",
            "--data.init_args.pipeline.num_inference_steps=10",
            "--data.init_args.synthesis.batch_size=32",
            f"--data.init_args.synthesis.cache_dir={tmp_path / 'cache'}",
            "--data.init_args.synthesis.progress=false",
            f"--data.init_args.val_data.init_args.n_val={N_VAL}",
            "--data.init_args.val_data.init_args.n_test=8",
            "--trainer.max_epochs=12",
            "--trainer.check_val_every_n_epoch=12",
            "--trainer.max_time=00:00:08:00",
            f"--trainer.logger.init_args.save_dir={tmp_path / 'runs'}",
        ]
    )
    assert cli.trainer.state.finished
    assert cli.trainer.global_step == 12 * 6  # 96 images / batch 16, every epoch ran
    miou = float(cli.trainer.callback_metrics["val/mIoU"])
    assert f"final val/mIoU = {miou:.6f}" in capsys.readouterr().out
    assert 0.0 <= miou <= 1.0
    background = all_background_miou(config["data"]["init_args"]["val_data"]["init_args"])
    assert 0.05 < background < MIOU_FLOOR - 0.02  # ~0.75 background share over 7 classes
    assert miou >= MIOU_FLOOR, f"val mIoU {miou:.3f} below the measured floor {MIOU_FLOOR}"
    assert any((tmp_path / "runs" / "wandb").glob("offline-run-*"))
