"""DDP on 2 CPU processes: training works and its validation mIoU is the one a single process
computes for the same weights on the same data (slow).

A 2-process CPU DDP run trains 3 epochs and prints its final val/mIoU (validation split over the
processes, confusion matrices synced by torchmetrics). One process then validates the run's last
checkpoint on the same 5 validation images. 5 images on 2 processes is uneven on purpose (3 + 2
images, 2 + 1 batches): Lightning's own DistributedSampler would repeat an image to even them out
and skew the mIoU; the data modules' UnpaddedDistributedSampler (datamodules/loaders.py) does
not. (Training itself cannot be made bit-identical between 1 and 2 processes on CPU: SyncBatchNorm
is GPU-only, so BatchNorm sees per-process batches.) A metric computed per process and averaged,
instead of synced, would in general not equal the single-process value.

A 2-process DDP sweep trial launched the way ``wandb agent`` launches it (logger on, on-the-fly
synthesis with reliability pruning on an empty cache, so both ranks read every sample): each
sample is generated once over the ranks and the trial is one W&B run, the agent's (slow).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from fixtures_diffusion import tiny_pipeline_dir_fixture  # noqa: F401  (fixture tiny_pipeline_dir)
from fixtures_sweep_agent import (
    PLAN,
    REPO,
    SWEEP_ID,
    draw_parameters,
    launch_trial,
    load_sweep,
    mirror_repository,
    offline_run,
    shapes_budget,
)

TESTS = Path(__file__).resolve().parent

COMMON = [
    "--seed_everything=0",
    "--model=synthmask.lightning_modules.segmentation.SegmentationModule",
    "--model.init_args.net=synthmask.models.DeepLabV3Plus",
    "--model.init_args.net.init_args.encoder_name=test_resnet",
    "--model.init_args.net.init_args.aspp_channels=16",
    "--model.init_args.net.init_args.decoder_channels=16",
    "--model.init_args.net.init_args.low_level_channels=8",
    "--data=fixtures_segmentation.TinySegDataModule",
    "--data.init_args.train_length=8",
    "--data.init_args.val_length=5",
    "--data.init_args.batch_size=2",
    "--trainer.accelerator=cpu",
    "--trainer.logger=false",
    "--trainer.enable_progress_bar=false",
    "--trainer.enable_model_summary=false",
]


def _synthmask(tmp_path: Path, *args: str) -> str:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env["PYTHONPATH"] = os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])
    result = subprocess.run(
        [sys.executable, "-m", "synthmask", *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout


def _printed(stdout: str, label: str) -> float:
    found = re.findall(rf"synthmask: {label} = ([0-9.]+)", stdout)
    assert len(found) == 1, stdout[-3000:]  # printed by global rank zero only
    return float(found[0])


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_ddp_validation_miou_equals_single_process_on_same_weights(tmp_path: Path) -> None:
    run_dir = tmp_path / "ddp"
    stdout = _synthmask(
        tmp_path,
        "fit",
        *COMMON,
        "--trainer.devices=2",
        "--trainer.strategy=ddp",
        "--trainer.max_epochs=3",
        "--trainer.num_sanity_val_steps=0",
        f"--trainer.default_root_dir={run_dir}",
        "--trainer.callbacks+=fixtures_segmentation.PrintValSampleCount",
    )
    # Every epoch validated each of the 5 images exactly once over both processes (a padding
    # sampler would show 6; the mIoU check alone can miss it when every image scores alike).
    assert re.findall(r"synthmask-test: val samples = (\d+)", stdout) == ["5"] * 3
    ddp_miou = _printed(stdout, "final val/mIoU")
    checkpoint = next(run_dir.rglob("*.ckpt"))
    single = _synthmask(
        tmp_path, "validate", *COMMON, "--trainer.devices=1", f"--ckpt_path={checkpoint}"
    )
    assert 0.0 < ddp_miou < 1.0
    assert _printed(single, "val/mIoU") == pytest.approx(ddp_miou, abs=1e-6)


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_ddp_agent_trial_generates_each_sample_once_into_the_agents_run(
    tiny_pipeline_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sweep = load_sweep(REPO / "experiments" / "sweeps" / "robust_modes.yaml")
    params = draw_parameters(sweep, last=True)
    assert params["data.init_args.pruning.share"] > 0  # every rank reads every sample
    workdir = mirror_repository(tmp_path / "agent")
    ddp = ["--trainer.accelerator=cpu", "--trainer.devices=2", "--trainer.strategy=ddp"]
    budget = [
        *shapes_budget(workdir, tiny_pipeline_dir),
        "--data.init_args.synthesis.mode=on_the_fly",
        *ddp,
    ]
    trial = launch_trial(sweep, params, budget, workdir, "ddptrial", monkeypatch)
    assert trial.wait(1500) == 0
    assert len(list(tmp_path.rglob("run-*.wandb"))) == 1  # rank 1 logs nothing of its own
    run = offline_run(workdir, "ddptrial")
    assert (run.run_id, run.sweep_id) == ("ddptrial", SWEEP_ID)
    assert run.summary["synth/generated"] == PLAN  # summed over both ranks: once per sample
    assert run.summary["synth/cached"] == 0
    assert 0.0 <= run.summary["val/mIoU"] <= 1.0
    assert str(run.config["cli"]["trainer"]["devices"]) == "2"
