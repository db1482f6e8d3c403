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

from synthmask.cli import SynthmaskCLI, main
from synthmask.lightning_modules.segmentation import SegmentationModule

REPO = Path(__file__).resolve().parents[1]
SWEEPS = sorted((REPO / "experiments" / "sweeps").glob("*.yaml"))


def _parameter_value(spec: dict):
    if "value" in spec:
        return spec["value"]
    if "values" in spec:
        return spec["values"][-1]
    return spec["min"]


@pytest.mark.parametrize("sweep_path", SWEEPS, ids=lambda p: p.stem)
def test_sweep_spec_parses_through_cli(sweep_path: Path, capsys) -> None:
    sweep = yaml.safe_load(sweep_path.read_text())
    assert sweep["metric"]["name"] == "val/mIoU" and sweep["metric"]["goal"] == "maximize"
    command = sweep["command"]
    assert "${args}" in command and "fit" in command
    fixed = command[command.index("fit") + 1 : command.index("${args}")]
    config = REPO / fixed[fixed.index("--config") + 1]
    assert config.is_file(), f"{sweep_path.name} points at a missing config {config}"
    fixed[fixed.index("--config") + 1] = str(config)
    # ${args} expands to --<name>=<value> (wandb's create_sweep_command_args).
    swept = {name: _parameter_value(spec) for name, spec in sweep["parameters"].items()}
    args = ["fit", *fixed, *[f"--{k}={v}" for k, v in swept.items()], "--print_config"]
    with pytest.raises(SystemExit) as exit_info:
        SynthmaskCLI(args=args)
    assert exit_info.value.code in (0, None)
    printed = yaml.safe_load(capsys.readouterr().out)
    for name, value in swept.items():
        node = printed
        for part in name.split("."):
            node = node[part]
        assert node == value, name


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
