"""The data modules' settings blocks (loader, augment, synthesis, pruning): shared by the real and
synthetic modules, parsed from YAML blocks and dotted command-line overrides, errors naming the
option path, and cache keys that do not depend on the constructor's layout."""

from __future__ import annotations

import hashlib
import inspect
import json
from pathlib import Path

import pytest
import yaml
from fixtures_datasets import make_folder_dataset
from jsonargparse import ArgumentParser
from lightning.pytorch import LightningDataModule

from synthmask.datamodules.base import SegmentationDataModule
from synthmask.datamodules.folder import FolderSegDataModule
from synthmask.datamodules.settings import (
    AugmentConfig,
    LoaderConfig,
    PruningConfig,
    SynthesisConfig,
)
from synthmask.datamodules.synthetic import SyntheticSegDataModule

REPO = Path(__file__).resolve().parents[1]

# sha256 over the newline-joined plan keys of each config's data module, computed with the
# constructor's former flat layout (num_images, synthesis_batch_size, ... as top-level init
# args). Equal digests: every sample cached before the settings were grouped is found again.
# Recomputed once when the model fingerprint became a sha256 of every byte of the weight files
# (the flat layout's digests under the former sampled fingerprint, bce72e42... and 14add4fa...,
# are still what the grouped layout gives with that fingerprint).
PLAN_DIGESTS = {
    "shapes_synth": (1280, "4f5231fbc4d87fa08f17a981a0f9979023cb3b973375000e7fe3b4282767a478"),
    "shapes_synth_promptaug": (
        640,
        "725ce3d877012e31c4ef69b62ec95866bb5a83fa2ffc4c17c160024ebffd1e2c",
    ),
}


def data_parser() -> ArgumentParser:
    parser = ArgumentParser(exit_on_error=False)
    parser.add_subclass_arguments(LightningDataModule, "data")
    return parser


def config_data(stem: str) -> dict:
    return yaml.safe_load((REPO / "experiments" / f"{stem}.yaml").read_text())["data"]


@pytest.mark.parametrize("stem", sorted(PLAN_DIGESTS))
def test_grouped_configs_keep_their_cache_keys(stem: str) -> None:
    data = config_data(stem)
    assert {"synthesis", "loader", "augment"} <= set(data["init_args"])  # the grouped layout
    parser = data_parser()
    dm = parser.instantiate_classes(parser.parse_object({"data": data})).data
    keys = [spec.key for spec in dm.plan()]
    count, digest = PLAN_DIGESTS[stem]
    assert len(keys) == count
    assert hashlib.sha256("\n".join(keys).encode()).hexdigest() == digest


def test_dotted_override_sets_one_field_and_keeps_the_block(tmp_path: Path) -> None:
    data = config_data("shapes_synth")
    data["init_args"].pop("val_data")
    parser = data_parser()
    cfg = parser.parse_args(
        [
            "--data=" + json.dumps(data),
            "--data.init_args.synthesis.num_images=8",
            f"--data.init_args.synthesis.cache_dir={tmp_path / 'cache'}",
            "--data.init_args.loader.batch_size=4",
            "--data.init_args.pruning.share=0.25",
        ]
    )
    dm = parser.instantiate_classes(cfg).data
    assert isinstance(dm.synthesis, SynthesisConfig) and dm.synthesis.num_images == 8
    assert (dm.synthesis.batch_size, dm.synthesis.processes, dm.synthesis.seed) == (32, 2, 0)
    assert dm.cache_dir == tmp_path / "cache" and len(dm.plan()) == 8
    assert (dm.loader.batch_size, dm.loader.num_workers) == (4, 0)
    assert dm.augment == AugmentConfig(crop_size=32, scale_range=(1.0, 1.0), rot90_prob=1.0)
    assert dm.pruning == PruningConfig(share=0.25, per_class=True)
    assert dm.hparams["synthesis"].num_images == 8  # logged as the run's config


def test_real_and_synthetic_modules_share_the_loader_and_augment_blocks() -> None:
    real = inspect.signature(SegmentationDataModule.__init__).parameters
    synthetic = inspect.signature(SyntheticSegDataModule.__init__).parameters
    for name, block in (("loader", LoaderConfig), ("augment", AugmentConfig)):
        assert real[name].annotation == synthetic[name].annotation == f"{block.__name__} | None"
        assert real[name].default is None and synthetic[name].default is None  # no shared object
    flat = {"batch_size", "crop_size", "num_images", "synthesis_batch_size", "prune_share"}
    assert not flat & (set(real) | set(synthetic))


def test_real_module_reads_its_blocks(tmp_path: Path) -> None:
    root = make_folder_dataset(tmp_path / "folder")
    dm = FolderSegDataModule(
        root=str(root),
        loader=LoaderConfig(batch_size=3),
        augment=AugmentConfig(crop_size=[16, 24], scale_range=(1.0, 1.0)),
    )
    batch = next(iter(dm.train_dataloader()))
    assert tuple(batch["image"].shape) == (3, 3, 16, 24) and dm.val_batch_size == 3
    first, second = FolderSegDataModule(root=str(root)), FolderSegDataModule(root=str(root))
    assert first.loader == LoaderConfig() and first.loader is not second.loader


@pytest.mark.parametrize(
    ("check", "message"),
    [
        (lambda: SynthesisConfig(num_images=0).check(), r"synthesis\.num_images=0; it must be"),
        (lambda: SynthesisConfig(batch_size=0).check(), r"synthesis\.batch_size=0"),
        (lambda: SynthesisConfig(mode="later").check(), r"synthesis\.mode='later'.*on_the_fly"),
        (
            lambda: SynthesisConfig(cache_dir=" ").check(),
            r"synthesis\.cache_dir is empty.*--data\.init_args\.synthesis\.cache_dir=",
        ),
        (lambda: LoaderConfig(batch_size=0).check(), r"loader\.batch_size=0"),
        (lambda: PruningConfig(share=1.0).check(), r"pruning\.share=1\.0; use a fraction"),
        (
            lambda: AugmentConfig(crop_size=[40, 56], rot90_prob=0.5).train_transform(),
            r"augment: rot90_prob=0\.5 with the non-square crop.*Fix",
        ),
        (lambda: AugmentConfig(scale_range=(2.0, 1.0)).train_transform(), r"augment: scale_range"),
    ],
)
def test_bad_values_name_the_option_path(check, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        check()


def test_real_module_refuses_a_bad_block_at_init(tmp_path: Path) -> None:
    root = make_folder_dataset(tmp_path / "folder")
    with pytest.raises(ValueError, match=r"loader\.batch_size=0"):
        FolderSegDataModule(root=str(root), loader=LoaderConfig(batch_size=0))
    with pytest.raises(ValueError, match=r"augment: crop_size=\[0, 8\]"):
        FolderSegDataModule(root=str(root), augment=AugmentConfig(crop_size=[0, 8]))
