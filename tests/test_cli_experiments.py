"""Every experiment config runs through the CLI in-process (fast_dev_run, tiny overrides).
(CLI mechanics, sweep specs and ``synthesize`` are tested in test_cli.py.)

How a config is shrunk (``tiny_overrides``): trainer keys for one CPU step; the keys in
``SMALL_DATA_ARGS`` only where the config sets them (a dotted key inside its block); a DeepLabV3+
net becomes a tiny ``test_resnet`` one; data classes in ``fixture_data_args`` get a fixture set in
the real layout; diffusion modules get the tiny random SD pipeline instead of hub / shipped /
previous-run weights. The run's working directory is a tmp dir holding symlinks to the
repository's top-level entries, so repository-relative inputs resolve while outputs (``runs/``
...) land in tmp.

Owners of other configs can add overrides without editing this file: a ``tests/fixtures_*.py``
module may define ``EXPERIMENT_OVERRIDES = {"<config stem>": fn(tmp_path) -> list[str]}``
(appended last, so they win), ``EXPERIMENT_SKIPS = {"<config stem>": "reason"}`` and
``EXPERIMENT_SLOW = {"<config stem>", ...}`` (run only with ``-m slow``).
A config on synthetic data (``SYNTHETIC_DATA_CLASSES``) needs a diffusion pipeline, LoRA weights
and config-specific capture settings that only its owner can shrink: without such a hook it is
skipped, with that reason.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from fixtures_datasets import make_cityscapes, make_folder_dataset, make_imagenet_s, make_voc
from fixtures_segmentation import TINY_NET_ARGS

from synthmask.cli import SynthmaskCLI, main
from synthmask.lightning_modules.segmentation import SegmentationModule

REPO = Path(__file__).resolve().parents[1]
EXPERIMENTS = sorted((REPO / "experiments").glob("*.yaml"))
SWEEPS = sorted((REPO / "experiments" / "sweeps").glob("*.yaml"))
# Top-level entries not mirrored into a test's working directory (outputs of earlier runs).
NOT_MIRRORED = {"runs", "outputs", "data", "wandb", "lightning_logs", "checkpoints", "cache"}

# Dotted keys name a field of a settings block (`loader:`, `augment:`); flat ones a data module's
# own argument (modules without blocks, e.g. the shapes world, keep batch_size / num_workers).
SMALL_DATA_ARGS = {
    "batch_size": 2,
    "loader.batch_size": 2,
    "val_batch_size": 2,
    "num_workers": 0,
    "loader.num_workers": 0,
    "augment.crop_size": 32,
    # Not `null`: after some parses jsonargparse reads it as the string "None" for these types.
    "val_pad_to": 32,  # no-op: fixture images are at least 32 px
    "val_resize": 64,
    "loader.pin_memory": "false",
    "resolution": 32,
    "max_images": 2,
}

FixtureBuilder = Callable[[Path], list[str]]

SYNTHETIC_DATA_CLASSES = {"synthmask.datamodules.synthetic.SyntheticSegDataModule"}


def fixture_data_args() -> dict[str, FixtureBuilder]:
    """Data class path -> builder of a tiny real-layout data set, returning CLI overrides."""
    return {
        "synthmask.datamodules.voc.VOCDataModule": lambda tmp: [
            f"--data.init_args.root={make_voc(tmp / 'voc')}",
            "--data.init_args.use_sbd=false",
        ],
        "synthmask.datamodules.cityscapes.CityscapesDataModule": lambda tmp: [
            f"--data.init_args.root={make_cityscapes(tmp / 'cityscapes')}"
        ],
        "synthmask.datamodules.folder.FolderSegDataModule": lambda tmp: [
            f"--data.init_args.root={make_folder_dataset(tmp / 'folder')}"
        ],
        "synthmask.datamodules.imagenet_s.ImageNetSDataModule": lambda tmp: [
            f"--data.init_args.root={make_imagenet_s(tmp / 'imagenet-s')}",
            "--data.init_args.subset=50",
        ],
        # Either layout is satisfied by the Cityscapes fixture (its images are under root).
        "synthmask.datamodules.unlabeled_images.UnlabeledImagesDataModule": lambda tmp: [
            f"--data.init_args.root={make_cityscapes(tmp / 'cityscapes')}"
        ],
    }


@pytest.fixture(scope="module")
def tiny_pipeline(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random SD pipeline directory (built on first use, once per module)."""
    from synthmask.diffusion.tiny import build_tiny_pipeline

    save_dir = tmp_path_factory.mktemp("tiny_sd") / "pipe"
    build_tiny_pipeline(save_dir, sample_size=16, text_layers=1)
    return save_dir


def diffusion_overrides(model_init: dict, pipeline: Callable[[], Path]) -> list[str]:
    """Point diffusion modules at the tiny pipeline (keys only where the config sets them)."""
    args = []
    if isinstance(model_init.get("model"), str):  # a pipeline path or hub id
        args.append(f"--model.init_args.model={pipeline()}")
    if model_init.get("vae_dir"):
        args.append(f"--model.init_args.vae_dir={pipeline() / 'vae'}")
    if "base_dtype" in model_init:
        args.append("--model.init_args.base_dtype=float32")
    if "gradient_checkpointing" in model_init:
        args.append("--model.init_args.gradient_checkpointing=false")
    return args


def _hooks(name: str) -> dict:
    """Merge dict ``name`` over the tests/fixtures_*.py modules that define it."""
    merged: dict = {}
    for path in sorted(Path(__file__).parent.glob("fixtures_*.py")):
        if name in path.read_text():
            merged |= getattr(importlib.import_module(path.stem), name, {})
    return merged


def _slow_stems() -> set[str]:
    """Union of the ``EXPERIMENT_SLOW`` sets of the tests/fixtures_*.py modules."""
    stems: set[str] = set()
    for path in sorted(Path(__file__).parent.glob("fixtures_*.py")):
        if "EXPERIMENT_SLOW" in path.read_text():
            stems |= set(getattr(importlib.import_module(path.stem), "EXPERIMENT_SLOW", ()))
    return stems


def _sets(init_args: dict, dotted: str) -> bool:
    """Whether ``init_args`` sets ``dotted`` (``"loader.batch_size"``: key batch_size of block
    loader)."""
    node: object = init_args
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


def tiny_overrides(config: dict, tmp_path: Path, pipeline: Callable[[], Path]) -> list[str]:
    """CLI arguments that make ``config`` run in seconds on a CPU (see the module docstring)."""
    args = [
        "--trainer.accelerator=cpu",
        "--trainer.devices=1",
        "--trainer.strategy=auto",
        "--trainer.precision=32-true",
        "--trainer.sync_batchnorm=false",
        "--trainer.fast_dev_run=true",
        "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false",
    ]
    logger = (config.get("trainer") or {}).get("logger") or {}
    if isinstance(logger, dict) and str(logger.get("class_path", "")).endswith("WandbLogger"):
        args += [
            f"--trainer.logger.init_args.save_dir={tmp_path / 'runs'}",
            "--trainer.logger.init_args.offline=true",
        ]
    model = config.get("model") or {}
    model_init = model.get("init_args") or {}
    net = model_init.get("net") or {}
    if str(net.get("class_path", "")).endswith("DeepLabV3Plus"):
        args += TINY_NET_ARGS + ["--model.init_args.net.init_args.pretrained=false"]
    if "diffusion" in str(model.get("class_path")) or "lora" in str(model.get("class_path")):
        args += diffusion_overrides(model_init, pipeline)
    data = config.get("data") or {}
    data_init = data.get("init_args") or {}
    args += [f"--data.init_args.{k}={v}" for k, v in SMALL_DATA_ARGS.items() if _sets(data_init, k)]
    builder = fixture_data_args().get(data.get("class_path", ""))
    if builder is not None:
        args += builder(tmp_path)
    return args


def mirror_repository(workdir: Path) -> None:
    """Symlink the repository's top-level entries into ``workdir`` (outputs excluded)."""
    workdir.mkdir(parents=True, exist_ok=True)
    for entry in REPO.iterdir():
        if not entry.name.startswith(".") and entry.name not in NOT_MIRRORED:
            (workdir / entry.name).symlink_to(entry)


def test_experiments_exist() -> None:
    names = {p.name for p in EXPERIMENTS}
    assert {"voc_real.yaml", "cityscapes_real.yaml", "folder_example.yaml"} <= names
    assert SWEEPS, "experiments/sweeps/ holds no sweep spec"


def _config_params() -> list:
    slow = _slow_stems()
    return [
        pytest.param(p, id=p.stem, marks=[pytest.mark.slow] if p.stem in slow else [])
        for p in EXPERIMENTS
    ]


@pytest.mark.parametrize("config_path", _config_params())
def test_experiment_config_runs_through_cli(
    config_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys, request
) -> None:
    reason = _hooks("EXPERIMENT_SKIPS").get(config_path.stem)
    if reason:
        pytest.skip(reason)
    config = yaml.safe_load(config_path.read_text())
    hook = _hooks("EXPERIMENT_OVERRIDES").get(config_path.stem)
    data_class = (config.get("data") or {}).get("class_path", "")
    if hook is None and data_class in SYNTHETIC_DATA_CLASSES:
        pytest.skip(
            f"{config_path.name} trains on synthetic data and no tests/fixtures_*.py defines "
            f"EXPERIMENT_OVERRIDES[{config_path.stem!r}] (tiny pipeline, cache dir, val data)"
        )
    workdir = tmp_path / "work"
    mirror_repository(workdir)
    monkeypatch.chdir(workdir)
    args = [
        "fit",
        "--config",
        str(config_path),
        *tiny_overrides(config, tmp_path, lambda: request.getfixturevalue("tiny_pipeline")),
    ]
    if hook is not None:
        args += hook(tmp_path)
    cli = main(args)
    assert isinstance(cli, SynthmaskCLI)
    assert cli.trainer.state.finished and cli.trainer.global_step >= 1  # it optimized
    if not isinstance(cli.model, SegmentationModule):
        return
    model, data = cli.model, cli.datamodule
    # data -> model links: one class count everywhere, names passed through.
    assert model.num_classes == data.num_classes
    assert list(model.class_names) == list(data.class_names)
    if hasattr(model.net, "classifier"):
        assert model.net.num_classes == data.num_classes
        assert model.net.classifier.out_channels == data.num_classes
    miou = float(cli.trainer.callback_metrics["val/mIoU"])
    assert 0.0 <= miou <= 1.0
    assert f"final val/mIoU = {miou:.6f}" in capsys.readouterr().out
    opt_cfg = (config["model"].get("init_args") or {}).get("optimizer") or {}
    lr = (opt_cfg.get("init_args") or {}).get("lr")
    if lr is not None:
        assert cli.trainer.optimizers[0].param_groups[0]["initial_lr"] == lr


def test_fixture_registry_names_importable_classes() -> None:
    import importlib

    for class_path in fixture_data_args():
        module, name = class_path.rsplit(".", 1)
        assert hasattr(importlib.import_module(module), name), class_path
