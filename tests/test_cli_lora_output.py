"""A step-limited LoRA fine-tune prints neither "Epoch 0/-2" nor "no val/mIoU was logged"
(it has no validation step)."""

from __future__ import annotations

from pathlib import Path

import yaml
from fixtures_synthetic import tiny_pipeline_dir
from test_cli_experiments import tiny_overrides

from synthmask.cli import main

CONFIG = Path(__file__).resolve().parents[1] / "experiments" / "shapes_target_lora.yaml"


def test_lora_finetune_output_has_no_negative_epoch_total_or_missing_metric(
    tmp_path, monkeypatch, capsys
) -> None:
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.chdir(tmp_path)
    args = tiny_overrides(yaml.safe_load(CONFIG.read_text()), tmp_path, tiny_pipeline_dir)
    args = [a for a in args if not a.startswith(("--trainer.fast_dev_run", "--trainer.enable_pro"))]
    cli = main(
        ["fit", "--config", str(CONFIG), *args, "--trainer.max_steps=2",
         f"--trainer.default_root_dir={tmp_path}", "--trainer.enable_checkpointing=false"]
    )  # fmt: skip
    assert cli.trainer.global_step == 2 and cli.trainer.max_epochs == -1
    bar = cli.trainer.progress_bar_callback
    assert bar._get_train_description(0) == "Epoch 0"
    out = capsys.readouterr().out
    assert "no val/mIoU" not in out and "/-2" not in out
