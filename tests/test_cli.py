"""CLI mechanics: sweep specs parse through the CLI, ``synthesize`` builds only the data module,
the class count flows from the data into the net and checkpoints, ``python -m synthmask``."""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

import pytest
import torch
import yaml
from fixtures_segmentation import TINY_NET_ARGS
from fixtures_sweep_agent import (
    REPO,
    SWEEPS,
    check_resolved,
    draw_parameters,
    expanded_command,
    load_sweep,
)

from synthmask.cli import SynthmaskCLI, main
from synthmask.lightning_modules.segmentation import SegmentationModule


@pytest.mark.parametrize("last", [False, True], ids=["first", "last"])
@pytest.mark.parametrize("sweep_path", SWEEPS, ids=lambda p: p.stem)
def test_sweep_command_parses_through_cli(
    sweep_path: Path, last: bool, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The agent's command line of a trial (wandb's own expansion of the sweep's ``command``,
    every parameter at its first / last value) parses, from the repository root, into a config
    holding the swept values, on an explicit device count (one agent per GPU, or one DDP trial
    per node; never ``devices: auto``, which gives every trial every GPU)."""
    sweep = load_sweep(sweep_path)
    assert sweep["metric"] == {"name": "val/mIoU", "goal": "maximize"}
    parameters = draw_parameters(sweep, last=last)
    command = expanded_command(sweep, parameters)
    assert command[:3] == ["/usr/bin/env", "synthmask", "fit"], command
    monkeypatch.chdir(REPO)  # where the agent runs: configs are named by relative paths
    with pytest.raises(SystemExit) as exit_info:
        SynthmaskCLI(args=[*command[2:], "--print_config"])
    assert exit_info.value.code in (0, None)
    printed = yaml.safe_load(capsys.readouterr().out)
    check_resolved(printed, parameters)
    assert str(printed["trainer"]["devices"]) != "auto", f"{sweep_path.name}: devices auto"


def test_synthesize_builds_only_the_data_module_and_calls_synthesize(tmp_path: Path) -> None:
    config = {
        "model": {
            "class_path": "synthmask.lightning_modules.segmentation.SegmentationModule",
            "init_args": {
                # Building the net would fail on this name: synthesize must not build it.
                "net": {
                    "class_path": "synthmask.models.DeepLabV3Plus",
                    "init_args": {"encoder_name": "not_a_timm_model"},
                }
            },
        },
        "data": {
            "class_path": "fixtures_segmentation.TinySegDataModule",
            "init_args": {"with_synthesize": True},
        },
        "trainer": {"max_epochs": 1},
    }
    config_path = tmp_path / "synth.yaml"
    config_path.write_text(yaml.safe_dump(config))
    datamodule = main(["synthesize", "--config", str(config_path)])
    assert datamodule.synthesize_calls == 1
    with pytest.raises(ValueError, match="has no synthesize\\(\\) method"):
        main(["synthesize", "--config", str(config_path), "--data.init_args.with_synthesize=false"])


TINY_FIT = [
    "fit",
    "--model=synthmask.lightning_modules.segmentation.SegmentationModule",
    "--data=fixtures_segmentation.TinySegDataModule",
    *TINY_NET_ARGS,
    "--trainer.accelerator=cpu",
    "--trainer.enable_progress_bar=false",
    "--trainer.enable_model_summary=false",
]


def test_net_class_count_contradicting_the_data_is_reported() -> None:
    args = [
        *TINY_FIT,
        "--model.init_args.net.init_args.num_classes=5",
        "--trainer.fast_dev_run=true",
    ]
    with pytest.raises(ValueError, match="outputs 5 classes.*num_classes is 3"):
        main(args)


def test_class_count_from_data_reaches_net_and_checkpoint_reloads(tmp_path: Path) -> None:
    cli = main(
        [
            *TINY_FIT,
            "--data.init_args.num_classes=4",
            "--trainer.max_epochs=1",
            "--trainer.limit_train_batches=1",
            "--trainer.limit_val_batches=1",
            "--trainer.num_sanity_val_steps=0",
            f"--trainer.default_root_dir={tmp_path}",
        ]
    )
    assert cli.model.num_classes == 4 and cli.model.net.num_classes == 4
    assert cli.model.class_names == ["background", "thing1", "thing2", "thing3"]
    checkpoint = next(tmp_path.rglob("*.ckpt"))
    reloaded = SegmentationModule.load_from_checkpoint(checkpoint).eval()
    images = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(reloaded(images), cli.model.eval()(images))
    assert reloaded.class_names == cli.datamodule.class_names
    assert reloaded.net.classifier.out_channels == 4


def test_python_dash_m_synthmask_is_the_cli(monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    monkeypatch.setattr(sys, "argv", ["synthmask", "fit", "--help"])
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_module("synthmask", run_name="__main__")
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "--config" in out and "--model" in out and "--data" in out
