"""`synthmask synthesize` as a user runs it: the VOC config, their own SD-1/SD-2/SDXL-style
pipeline directory (written by diffusers), one override choosing the mask method, no capture
settings, and no validation data on disk. Then `synthmask export` of the same config.

The default suite runs one console-script call and one in-process run per pipeline family
(each with another method); the full 3 x 3 matrix through the console script is marked slow.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from fixtures_pipelines import AUTO_SELF_SIDE, FAMILIES, save_family
from torchvision.datasets import VOCSegmentation

from synthmask.cache import SampleCache
from synthmask.cli import main

REPO = Path(__file__).resolve().parents[1]
VOC_SYNTH = REPO / "experiments" / "voc_synth.yaml"
METHODS = {
    "attn2mask": "Attn2MaskConfig",
    "threshold": "ThresholdMaskConfig",
    "self_refine": "SelfRefineMaskConfig",
}
CONSOLE = Path(sys.executable).with_name("synthmask")


@pytest.fixture(scope="module", name="pipelines")
def pipelines_fixture(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("pipelines")
    return {family: save_family(family, root / family) for family in FAMILIES}


def synthesize_args(pipe_dir: Path, cache_dir: Path, method: str) -> list[str]:
    """The user's command line: config, model dir, CPU settings, size, and ONE mask override."""
    pipe = "--data.init_args.pipeline"
    return [
        "--config", str(VOC_SYNTH),
        f"{pipe}.model={pipe_dir}", f"{pipe}.device=cpu", f"{pipe}.dtype=float32",
        f"{pipe}.num_inference_steps=2", f"{pipe}.height=32", f"{pipe}.width=32",
        "--data.init_args.synthesis.num_images=2",
        f"--data.init_args.synthesis.cache_dir={cache_dir}",
        "--data.init_args.synthesis.progress=false",
        f"--data.init_args.mask={METHODS[method]}",
    ]  # fmt: skip


def check_cache(cache_dir: Path, family: str, method: str) -> None:
    """The cache holds 2 samples made with `method` and the capture that method needs."""
    (config_file,) = (cache_dir / "configs").glob("*.json")
    fingerprint = json.loads(config_file.read_text())
    assert fingerprint["mask"]["method"] == method
    capture = fingerprint["capture"]
    if method == "self_refine":
        side = AUTO_SELF_SIDE[family]
        assert capture["self_attention"] is True and capture["self_resolutions"] == [side]
        assert fingerprint["mask"]["params"]["self_resolution"] == side
    else:
        assert capture["self_attention"] is False
    cache = SampleCache(cache_dir, create=False)
    assert len(cache) == 2
    for key in cache.keys():
        record = cache[key]
        assert record.image.shape == (32, 32, 3) and record.mask.shape == (32, 32)
        classes = {int(c) for c in np.unique(record.mask)} - {0, 255}
        assert len(classes) <= 1 and classes <= set(range(1, 21))  # one VOC class per prompt
        assert set(np.unique(record.reliability)) <= {0, 255}


@pytest.mark.parametrize(
    ("family", "method"), [("sd1", "threshold"), ("sd2", "attn2mask"), ("sdxl", "self_refine")]
)
def test_synthesize_in_process_without_validation_data(
    pipelines, family, method, tmp_path, monkeypatch
) -> None:
    monkeypatch.chdir(tmp_path)  # the config's val root data/voc does not exist here
    monkeypatch.setenv("WANDB_MODE", "offline")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        main(["synthesize", *synthesize_args(pipelines[family], tmp_path / "cache", method)])
    assert not [w for w in caught if "args parameter" in str(w.message)]
    check_cache(tmp_path / "cache", family, method)


def _console(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "WANDB_MODE": "offline", "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [str(CONSOLE), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600
    )


def test_console_script_synthesize_then_export(pipelines, tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    args = synthesize_args(pipelines["sd1"], tmp_path / "cache", "self_refine")
    done = _console(["synthesize", *args], tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "args parameter" not in done.stderr and "Traceback" not in done.stderr
    check_cache(tmp_path / "cache", "sd1", "self_refine")
    out = tmp_path / "export"  # in-process: a second console call would cost its import time
    report = main(["export", *args, "--format", "voc", "--output", str(out)])
    assert (report.written, report.skipped) == (2, 0)
    voc = [VOCSegmentation(str(out), year="2012", image_set=split) for split in ("train", "val")]
    assert [len(split) for split in voc] == [1, 1]  # the held-out share: one of two samples
    cache = SampleCache(tmp_path / "cache", create=False)
    masks = sorted(cache[key].mask.tobytes() for key in cache.keys())
    assert sorted(np.asarray(s[i][1]).tobytes() for s in voc for i in range(len(s))) == masks


@pytest.mark.slow
@pytest.mark.parametrize("method", list(METHODS))
@pytest.mark.parametrize("family", FAMILIES)
def test_console_script_synthesize_matrix(pipelines, family, method, tmp_path) -> None:
    done = _console(
        ["synthesize", *synthesize_args(pipelines[family], tmp_path / "c", method)], tmp_path
    )
    assert done.returncode == 0, done.stderr[-3000:]
    check_cache(tmp_path / "c", family, method)


def test_help_lists_synthesize_and_export_with_their_own_help(capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "synthesize" in out and "export" in out and "fit" in out
    cache_line = " ".join(out[out.index("    cache") :].split()[:40])
    for command in ("verify", "repair", "stats"):
        assert f"synthmask cache {command} DIR" in cache_line
    for command in ("synthesize", "export"):
        with pytest.raises(SystemExit) as exit_info:
            main([command, "--help"])
        assert exit_info.value.code == 0
        out = capsys.readouterr().out
        assert f"usage: synthmask {command}" in out and "--data" in out
        # README: `synthmask synthesize --help` lists every option, settings blocks included.
        data_options = out[out.index("Options of the data module (SyntheticSegDataModule)") :]
        for option in (
            "--data.init_args.pipeline.model MODEL",
            "--data.init_args.pipeline.device DEVICE",
            "--data.init_args.synthesis.num_images NUM_IMAGES",
            "--data.init_args.synthesis.processes PROCESSES",
            "--data.init_args.capture.step_window",
            "--data.init_args.prompts.augment",
            "[--data.init_args.mask=Attn2MaskConfig]",
            "[--data.init_args.mask=ThresholdMaskConfig]",
            "[--data.init_args.mask=SelfRefineMaskConfig]",
            "--data.init_args.mask.tau TAU",
            "--data.init_args.augment.crop_size",
            "--data.init_args.pruning.share SHARE",
        ):
            assert option in data_options, option
    assert "--format" in out and "--output" in out and "--val-share" in out
    force_help = " ".join(out[out.index("  --force") :].split()[:30])
    assert "files of the same name are OVERWRITTEN" in force_help


def test_multi_device_synthesis_is_refused_with_the_torchrun_command(tmp_path) -> None:
    args = synthesize_args(tmp_path / "missing", tmp_path / "c", "attn2mask")
    with pytest.raises(ValueError, match=r"torchrun --nproc_per_node=2 -m synthmask synthesize"):
        main(["synthesize", *args, "--trainer.devices=2", "--trainer.strategy=ddp"])
    with pytest.raises(ValueError, match="does not start ranks"):
        main(["synthesize", *args, "--trainer.devices=1", "--trainer.strategy=ddp"])


def test_synthesize_logs_its_sample_grid_to_wandb_when_asked(
    pipelines, tmp_path, monkeypatch
) -> None:
    """The data module never calls W&B; after `synthesize` the config's SynthesisStatsCallback
    logs the sample grid and stats, as `wandb_log` says (true: starts an offline run here)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    import wandb

    # The run's own directory, not WANDB_DIR: W&B reads its settings once per process, so after
    # another test's run a new run may land in that test's directory.
    if wandb.run is not None:  # a run another test left open would receive the logging
        wandb.finish()
    started = []
    real_init = wandb.init

    def recording_init(*init_args, **init_kwargs):
        started.append(real_init(*init_args, **init_kwargs))
        return started[-1]

    monkeypatch.setattr(wandb, "init", recording_init)
    args = synthesize_args(pipelines["sd1"], tmp_path / "cache", "attn2mask")
    main(["synthesize", *args, "--data.init_args.wandb_log=false"])
    assert not started
    main(["synthesize", *args, "--data.init_args.wandb_log=true"])
    (run,) = started
    (history,) = Path(run.settings.sync_dir).glob("run-*.wandb")
    assert (
        b"synth/samples" in history.read_bytes()
        and b"synth/ahead_cache_hit_rate" in history.read_bytes()
    )
