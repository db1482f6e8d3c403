"""Runs that can be told apart and compared: names and tags follow the command line and the
resolved config, user tags are added, the config is logged once, every run has its own
directory (config.yaml, run.json, checkpoints/), a run stopped by max_time validates and saves
its final weights and says so, W&B's mode comes from W&B (offline fallback with one line, a
sweep trial logs into the agent's run), and ``synthmask runs`` compares runs from run.json."""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from synthmask.cli import main
from synthmask.run_identity import command_line_overrides, run_name, run_tags, short_key
from synthmask.run_records import find_run_records, read_run_record
from synthmask.wandb_mode import resolve_wandb_mode

REPO = Path(__file__).resolve().parents[1]
TINY_NET = {
    "class_path": "synthmask.models.DeepLabV3Plus",
    "init_args": {
        "encoder_name": "test_resnet",
        "aspp_channels": 16,
        "decoder_channels": 16,
        "low_level_channels": 8,
    },
}


def tiny_config(path: Path, runs: Path, **trainer: Any) -> Path:
    """A tiny experiment config (TinySegDataModule, W&B logger into ``runs``) at ``path``."""
    config = {
        "seed_everything": 0,
        "model": {
            "class_path": "synthmask.lightning_modules.segmentation.SegmentationModule",
            "init_args": {"net": TINY_NET, "reliability_mode": "ignore"},
        },
        "data": {
            "class_path": "fixtures_segmentation.TinySegDataModule",
            "init_args": {"reliability": True},
        },
        "trainer": {
            "accelerator": "cpu",
            "max_epochs": 2,
            "limit_train_batches": 2,
            "limit_val_batches": 2,
            "num_sanity_val_steps": 0,
            "enable_progress_bar": False,
            "enable_model_summary": False,
            "logger": {
                "class_path": "lightning.pytorch.loggers.WandbLogger",
                "init_args": {"project": "synthmask-test", "save_dir": str(runs), "tags": ["tiny"]},
            },
            **trainer,
        },
    }
    path.write_text(yaml.safe_dump(config))
    return path


def wandb_facts(cli: Any) -> dict[str, Any]:
    """What the W&B run of a finished command holds (read before a later command ends it)."""
    run = cli.trainer.logger.experiment
    return {
        "id": run.id,
        "name": run.name,
        "tags": list(run.tags),
        "group": run.group,
        "job_type": run.job_type,
        "config_keys": sorted(run.config.keys()),
        "summary": dict(run.summary),
        "mode": run.settings.mode,
    }


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Two fits of one config with different overrides, the first with a user tag."""
    root = tmp_path_factory.mktemp("two_runs")
    config = tiny_config(root / "tiny_seg.yaml", root / "runs")
    overrides = [
        ["--model.init_args.reliability_mode=none", "--trainer.logger.init_args.tags+=[mytag]"],
        ["--seed_everything", "1"],
    ]
    runs = []
    for extra in overrides:
        with contextlib.redirect_stdout(io.StringIO()):
            cli = main(["fit", "--config", str(config), *extra])
        runs.append({"cli": cli, "wandb": wandb_facts(cli), "run_dir": cli.run_dir})
    return {"root": root, "runs": runs}


def test_run_names_follow_the_command_line_overrides(two_runs: dict[str, Any]) -> None:
    first, second = (r["wandb"] for r in two_runs["runs"])
    assert first["name"] == "tiny-seg reliability_mode=none"
    assert second["name"] == "tiny-seg seed_everything=1"
    assert first["group"] == second["group"] == "tiny-seg"
    assert first["job_type"] == second["job_type"] == "fit"
    assert first["id"] != second["id"]


def test_tags_follow_the_resolved_config_and_user_tags_are_added(two_runs: dict) -> None:
    first, second = (r["wandb"] for r in two_runs["runs"])
    assert "reliability:none" in first["tags"] and "reliability:ignore" not in first["tags"]
    assert "reliability:ignore" in second["tags"]  # the config's own value
    # The config's tag stays and the user's is added (tags+=), next to the computed ones.
    assert {"tiny", "mytag", "model:segmentation", "data:tiny-seg"} <= set(first["tags"])
    assert "mytag" not in second["tags"] and "tiny" in second["tags"]


def test_config_is_logged_once_nested_with_provenance(two_runs: dict) -> None:
    facts, run_dir = two_runs["runs"][0]["wandb"], two_runs["runs"][0]["run_dir"]
    # No flat copies of the module's hyper-parameters next to the nested CLI config.
    assert facts["config_keys"] == ["cli", "provenance"]
    record = read_run_record(run_dir)
    assert record["provenance"]["code"].get("git_sha") or record["provenance"]["code"]["version"]
    saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert saved["model"]["init_args"]["reliability_mode"] == "none"


def test_each_run_has_its_own_directory_with_config_record_and_checkpoints(
    two_runs: dict,
) -> None:
    runs_dir = two_runs["root"] / "runs"
    dirs = [r["run_dir"] for r in two_runs["runs"]]
    assert dirs[0] != dirs[1]
    for run, run_dir in zip(two_runs["runs"], dirs, strict=True):
        assert run_dir.parent == runs_dir and run_dir.name == f"tiny-seg-{run['wandb']['id']}"
        assert (run_dir / "config.yaml").is_file()
        assert [p.name for p in (run_dir / "checkpoints").glob("*.ckpt")] == ["epoch=1-step=4.ckpt"]
        record = read_run_record(run_dir)
        assert record["status"] == "finished" and record["stopped_early"] is False
        # run.json and the W&B summary hold the final and the best val/mIoU.
        summary = run["wandb"]["summary"]
        final = float(run["cli"].trainer.callback_metrics["val/mIoU"])
        assert record["metrics"]["val/mIoU"] == pytest.approx(final)
        assert summary["val/mIoU"] == pytest.approx(final)
        assert summary["val/mIoU_best"] == pytest.approx(record["metrics"]["val/mIoU_best"])
        assert summary["val/mIoU_best"] >= summary["val/mIoU"] - 1e-9
        best_iou = record["metrics"]["val/IoU_best"]
        assert set(best_iou) == {"background", "thing1", "thing2"}
        assert summary["val/IoU_best/background"] == pytest.approx(best_iou["background"])
    assert not (runs_dir / "config.yaml").exists()  # no shared file that runs overwrite


def test_synthmask_runs_lists_runs_with_their_differing_setting_and_csv(
    two_runs: dict, capsys: pytest.CaptureFixture[str]
) -> None:
    runs_dir, out_csv = two_runs["root"] / "runs", two_runs["root"] / "table.csv"
    with pytest.raises(SystemExit) as exit_info:
        main(["runs", str(runs_dir), "--csv", str(out_csv)])
    assert exit_info.value.code == 0
    lines = capsys.readouterr().out.splitlines()
    header = lines[0].split()
    assert header[:4] == ["name", "group", "reliability_mode", "seed_everything"]
    assert {"val/mIoU", "val/mIoU_best", "wall", "stopped_early"} <= set(header)
    first = next(line for line in lines if line.startswith("tiny-seg reliability_mode=none"))
    assert " none " in first and " no " in first
    with out_csv.open() as handle:
        rows = list(csv.DictReader(handle))
    by_name = {row["name"]: row for row in rows}
    assert set(by_name) == {"tiny-seg reliability_mode=none", "tiny-seg seed_everything=1"}
    assert by_name["tiny-seg reliability_mode=none"]["reliability_mode"] == "none"
    assert by_name["tiny-seg seed_everything=1"]["seed_everything"] == "1"
    for run in two_runs["runs"]:
        row = by_name[run["wandb"]["name"]]
        record = read_run_record(run["run_dir"])
        assert float(row["val/mIoU"]) == pytest.approx(record["metrics"]["val/mIoU"])
        assert row["stopped_early"] == "False" and float(row["wall_time_s"]) > 0


def test_help_lists_the_runs_command(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    words = " ".join(capsys.readouterr().out.split())  # independent of the terminal's width
    assert "runs Compare local runs (synthmask runs [DIR] [--csv FILE])" in words
    with pytest.raises(SystemExit) as exit_info:
        main(["runs", "--help"])
    assert exit_info.value.code == 0
    words = " ".join(capsys.readouterr().out.split())
    assert "usage: synthmask runs [-h] [--csv CSV] [dir]" in words


def test_max_time_validates_and_checkpoints_the_final_weights_and_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # 1000 epochs of 8 batches, validation only every 1000 epochs: the 1-second cap fires long
    # before any scheduled validation, so a val/mIoU can only come from the final validation.
    config = tiny_config(
        tmp_path / "tiny_timed.yaml",
        tmp_path / "runs",
        max_epochs=1000,
        limit_train_batches=None,
        check_val_every_n_epoch=1000,
        max_time="00:00:00:01",
    )
    cli = main(
        [
            "fit", "--config", str(config), "--data.init_args.train_length=16",
            # A checkpoint callback that never saves on its own: the final weights are saved anyway.
            "--trainer.callbacks+=lightning.pytorch.callbacks.ModelCheckpoint",
            "--trainer.callbacks.every_n_epochs=0",
        ]
    )  # fmt: skip
    trainer = cli.trainer
    steps = trainer.global_step
    assert 0 < steps < 8000
    final = float(trainer.callback_metrics["val/mIoU"])
    record = read_run_record(cli.run_dir)
    assert record["stopped_early"] is True and record["stopped_reason"] == "max_time"
    assert record["budget_steps"] == 8000 and record["global_step"] == steps
    assert record["final_validated"] is True
    assert record["metrics"]["val/mIoU"] == pytest.approx(final)
    assert cli.model.best_val_step == steps  # the only validation ran on the final weights
    last = cli.run_dir / "checkpoints" / "last.ckpt"
    assert torch.load(last, map_location="cpu", weights_only=True)["global_step"] == steps
    summary = dict(trainer.logger.experiment.summary)
    assert summary["stopped_early"] is True and summary["stopped_reason"] == "max_time"
    assert summary["val/mIoU"] == pytest.approx(final)
    out = capsys.readouterr().out
    assert f"training stopped early (max_time, 1 s) at step {steps} of 8000" in out
    assert f"val/mIoU = {final:.6f}) and saved to {last}" in out


def test_overrides_names_and_short_keys() -> None:
    args = [
        "fit", "--config", "experiments/shapes_synth_robust.yaml",
        "--seed_everything", "1", "--model.init_args.reliability_mode=none",
        "--trainer.logger.init_args.tags+=[mine]", "--trainer.callbacks+=X",
        "--data.init_args.mask=synthmask.masks.SelfRefineMaskConfig",
    ]  # fmt: skip
    overrides = command_line_overrides(args)
    assert overrides == {
        "seed_everything": "1",
        "model.init_args.reliability_mode": "none",
        "data.init_args.mask": "synthmask.masks.SelfRefineMaskConfig",
    }
    assert run_name("shapes-synth-robust", overrides) == (
        "shapes-synth-robust mask=SelfRefineMaskConfig reliability_mode=none seed_everything=1"
    )
    assert run_name("x", {"model.init_args.reliability_mode": "weight"}) != run_name(
        "x", {"model.init_args.reliability_mode": "none"}
    )
    assert short_key("model.init_args.optimizer.init_args.lr") == "optimizer.lr"
    assert short_key("data.init_args.synthesis.num_images") == "synthesis.num_images"


def test_tags_of_a_synthetic_config_follow_its_settings() -> None:
    config = yaml.safe_load((REPO / "experiments" / "shapes_synth.yaml").read_text())
    tags = run_tags(config)
    assert {
        "reliability:ignore",
        "mask:self_refine",
        "generator:shapes-ldm",
        "prompts:shapes-scenes",
        "images:1280",
        "net:deeplabv3plus-resnet10t",
        "data:synthetic-seg",
    } <= set(tags)
    data = config["data"]["init_args"]
    config["model"]["init_args"]["reliability_mode"] = "none"
    data["mask"] = {"class_path": "synthmask.masks.Attn2MaskConfig"}
    data["prompts"]["synonyms"] = True
    data["synthesis"]["num_images"] = 640
    data["pipeline"]["lora_path"] = "adapters/target"
    changed = set(run_tags(config))
    assert {"reliability:none", "mask:attn2mask", "prompts:shapes-scenes+synonyms"} <= changed
    assert {"images:640", "generator:shapes-ldm+lora"} <= changed
    assert not changed & {"reliability:ignore", "mask:self_refine", "images:1280"}


def test_wandb_mode_follows_wandb_and_falls_back_to_offline(tmp_path: Path) -> None:
    home = {"HOME": str(tmp_path / "home"), "WANDB_CONFIG_DIR": str(tmp_path / "cfg")}
    nothing = resolve_wandb_mode(home, workdir=tmp_path)
    assert (nothing.mode, nothing.is_fallback) == ("offline", True)
    for extra, source in [
        ({"WANDB_MODE": "online"}, "WANDB_MODE"),
        ({"WANDB_MODE": "offline"}, "WANDB_MODE"),
        ({"WANDB_API_KEY": "k" * 40}, "login (WANDB_API_KEY)"),
        ({"WANDB_SWEEP_ID": "abc", "WANDB_RUN_ID": "r1"}, "sweep agent"),
    ]:
        decision = resolve_wandb_mode({**home, **extra}, workdir=tmp_path)
        assert (decision.mode, decision.source) == (None, source)
    netrc = tmp_path / "netrc"
    netrc.write_text("machine api.wandb.ai\n  login user\n  password " + "p" * 40 + "\n")
    logged_in = resolve_wandb_mode({**home, "NETRC": str(netrc)}, workdir=tmp_path)
    assert (logged_in.mode, logged_in.source) == (None, f"login ({netrc})")
    other_host = resolve_wandb_mode(
        {**home, "NETRC": str(netrc), "WANDB_BASE_URL": "https://wandb.example.org"}, tmp_path
    )
    assert other_host.mode == "offline"
    (tmp_path / "wandb").mkdir()
    (tmp_path / "wandb" / "settings").write_text("[default]\nmode = offline\n")
    from_file = resolve_wandb_mode(home, workdir=tmp_path)
    assert from_file.mode is None and from_file.source.startswith("settings file")


def _tiny_fit(tmp_path: Path, *extra: str) -> Any:
    config = tiny_config(tmp_path / "tiny_mode.yaml", tmp_path / "runs", max_epochs=1)
    return main(["fit", "--config", str(config), *extra])


def test_without_mode_or_login_a_run_logs_offline_and_says_how_to_sync(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import wandb

    wandb.setup()  # W&B reads its settings once per process: not from this test's environment
    for name in ("WANDB_MODE", "WANDB_API_KEY", "WANDB_IDENTITY_TOKEN_FILE", "NETRC"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "home" / "wandb-config"))
    monkeypatch.chdir(tmp_path)
    cli = _tiny_fit(tmp_path)
    logger = cli.trainer.logger
    run_id = logger.experiment.id
    out = capsys.readouterr().out
    fallback = [line for line in out.splitlines() if "W&B has no login" in line]
    assert len(fallback) == 1
    assert f"wandb sync {tmp_path / 'runs' / 'wandb' / f'offline-run-*-{run_id}'}" in fallback[0]
    assert logger._wandb_init["mode"] == "offline" and logger.experiment.settings.mode == "offline"
    assert list((tmp_path / "runs" / "wandb").glob(f"offline-run-*-{run_id}"))
    assert read_run_record(cli.run_dir)["wandb"]["decided_by"] == "no login"


def test_a_sweep_trial_logs_into_the_agents_run_and_group(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import wandb

    wandb.setup()  # keep the agent's variables out of W&B's process-wide settings
    monkeypatch.setenv("WANDB_SWEEP_ID", "sweep42")
    monkeypatch.setenv("WANDB_RUN_ID", "trial0001")
    cli = _tiny_fit(tmp_path, "--trainer.logger.init_args.offline=true")
    run = cli.trainer.logger.experiment
    assert (run.id, run.group) == ("trial0001", "sweep42")
    assert cli.trainer.logger._wandb_init["mode"] is None  # the agent's mode, not the config's
    assert "logs into the agent's run trial0001" in capsys.readouterr().out
    assert cli.run_dir.name == "tiny-mode-trial0001"
    assert dict(run.summary)["val/mIoU"] == pytest.approx(
        float(cli.trainer.callback_metrics["val/mIoU"])
    )


def test_provenance_of_synthetic_data_names_generator_settings_and_plan() -> None:
    from types import SimpleNamespace

    from synthmask.callbacks.run_record import synthesis_provenance
    from synthmask.synthesis_plan import config_digest

    fingerprint = {"generator": "f" * 64, "steps": 10, "mask": {"method": "self_refine"}}
    plan = [SimpleNamespace(key=f"key{i}") for i in range(3)]
    datamodule = SimpleNamespace(
        synthesizer=SimpleNamespace(fingerprint=lambda: fingerprint), plan=lambda: plan
    )
    found = synthesis_provenance(datamodule, with_plan=True)
    assert found["generator_fingerprint"] == "f" * 64
    assert found["synthesis_config_sha256"] == config_digest(fingerprint)
    assert found["plan_samples"] == 3
    assert found["plan_sha256"] == hashlib.sha256(b"key0\nkey1\nkey2").hexdigest()
    plan.reverse()  # another plan (same keys, other order): another digest
    assert synthesis_provenance(datamodule, with_plan=True)["plan_sha256"] != found["plan_sha256"]
    assert "plan_sha256" not in synthesis_provenance(datamodule, with_plan=False)
    assert synthesis_provenance(SimpleNamespace(), with_plan=True) == {}  # real data


def test_runs_of_a_missing_directory_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="runs directory .* does not exist"):
        find_run_records(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    assert find_run_records(tmp_path / "empty") == []
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "run.json").write_text("{not json")
    assert find_run_records(tmp_path) == []  # an unreadable run.json is skipped
