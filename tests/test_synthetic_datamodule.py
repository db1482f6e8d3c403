"""SyntheticSegDataModule: tiny pipeline -> cache -> DataLoader batches, determinism, cache reuse,
on-the-fly write-through, bad input, stats callback, DDP exactly-once (slow)."""

from __future__ import annotations

import json
import os
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from fixtures_datasets import make_voc
from fixtures_diffusion import tiny_pipeline_dir_fixture  # noqa: F401  (fixture tiny_pipeline_dir: 32 px)
from fixtures_synthetic import make_synthetic_dm

from synthmask import synthesis
from synthmask.cache import CacheNotWritableError, SampleCache
from synthmask.datamodules.settings import LoaderConfig
from synthmask.datamodules.voc import VOCDataModule
from synthmask.diffusion.pipeline import PipelineConfig
from synthmask.prompts import get_vocabulary, imagenet_s_vocabulary, load_wordnet_table
from synthmask.synthesis import SampleSynthesizer
from synthmask.synthesis_plan import PLACEHOLDER_NAME, LabelSpace, PromptConfig

VOC = get_vocabulary("voc")
CAT, DOG = VOC.class_id("cat"), VOC.class_id("dog")  # 8, 12


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _load_each_pipeline_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """from_pretrained costs ~2 s on a busy CPU: share loaded pipelines between the tests."""
    load = synthesis.load_pipeline

    def cached(cfg: PipelineConfig):
        key = json.dumps(cfg.to_json(), sort_keys=True)
        if key not in _PIPELINES:
            _PIPELINES[key] = load(cfg)
        return _PIPELINES[key]

    monkeypatch.setattr(synthesis, "load_pipeline", cached)


_PIPELINES: dict = {}


make_dm = make_synthetic_dm


def manifest_keys(cache_dir: Path) -> list[str]:
    """Every sample key recorded in any manifest line (duplicates kept)."""
    return [
        sample["key"]
        for path in (cache_dir / "manifest").glob("*.jsonl")
        for line in path.read_text().splitlines()
        for sample in json.loads(line)["samples"]
    ]


# ------------------------------------------------------------------- end to end
def test_ahead_mode_fills_cache_and_yields_contract_batches(tiny_pipeline_dir, tmp_path):
    dm = make_dm(tiny_pipeline_dir, tmp_path / "cache")
    assert dm.num_classes == 21 and dm.class_names[CAT] == "cat"  # right after __init__
    dm.setup("fit")
    assert (dm.synthesis_report.generated, dm.synthesis_report.cache_hits) == (6, 0)
    assert sorted(manifest_keys(tmp_path / "cache")) == sorted(s.key for s in dm.plan())

    batches = list(dm.train_dataloader())
    assert len(batches) == 2
    batch = batches[0]
    assert batch["image"].dtype == torch.float32 and batch["image"].shape == (3, 3, 32, 32)
    assert batch["mask"].dtype == torch.int64 and batch["mask"].shape == (3, 32, 32)
    assert batch["reliability"].dtype == torch.float32 and batch["margin"].shape == (3, 32, 32)
    assert len(batch["prompt"]) == 3 and len(batch["name"]) == 3
    for b in batches:
        for i, prompt in enumerate(b["prompt"]):
            named = CAT if "cat" in prompt else DOG
            assert set(b["mask"][i].unique().tolist()) <= {0, named, 255}
            assert set(b["reliability"][i].unique().tolist()) <= {0.0, 1.0}
            assert (b["reliability"][i][b["mask"][i] == 255] == 0).all()
    # reliability rule: top 50% of each class's pixels (ceil) are reliable
    record = SampleCache(tmp_path / "cache")[dm.plan()[0].key]
    for class_id in np.unique(record.mask):
        if class_id != 255:
            n = int((record.mask == class_id).sum())
            assert int((record.reliability[record.mask == class_id] > 0).sum()) == -(-n // 2)
    assert dm.synthesis_stats()["cache_hit_rate"] == 1.0  # every item came from the cache


def test_same_key_gives_same_sample_regardless_of_batch(tiny_pipeline_dir, tmp_path):
    dm = make_dm(tiny_pipeline_dir, tmp_path / "cache")
    dm.setup("fit")
    cache = SampleCache(tmp_path / "cache")
    specs = dm.plan()
    fresh = SampleSynthesizer(dm.synthesizer.pipeline, dm.labels)
    assert fresh.fingerprint() == dm.synthesizer.fingerprint()
    alone = fresh.generate([specs[4]])[0]  # cached from a batch of 3 (specs 3, 4, 5)
    cached = cache[specs[4].key]
    assert np.abs(alone.image.astype(int) - cached.image.astype(int)).max() <= 1
    assert (alone.mask == cached.mask).mean() >= 0.99
    assert alone.meta["key"] == cached.meta["key"] == specs[4].key
    # the plan itself is deterministic and keyed by content
    again = make_dm(tiny_pipeline_dir, tmp_path / "cache").plan()
    assert [s.key for s in again] == [s.key for s in specs]
    assert len({s.key for s in specs}) == 6 and len({s.seed for s in specs}) == 6


def test_rerun_hits_cache_and_growing_plan_generates_only_new(tiny_pipeline_dir, tmp_path):
    make_dm(tiny_pipeline_dir, tmp_path / "cache").synthesize()
    shards_before = sorted((tmp_path / "cache" / "shards").iterdir())
    rerun = make_dm(tiny_pipeline_dir, tmp_path / "cache").synthesize()
    assert (rerun.generated, rerun.cache_hits) == (0, 6)
    assert sorted((tmp_path / "cache" / "shards").iterdir()) == shards_before
    grown = make_dm(tiny_pipeline_dir, tmp_path / "cache", synthesis={"num_images": 8}).synthesize()
    assert (grown.generated, grown.cache_hits) == (2, 6)
    steps3 = PipelineConfig(model=str(tiny_pipeline_dir), num_inference_steps=3)
    changed = make_dm(
        tiny_pipeline_dir, tmp_path / "cache", pipeline=steps3, synthesis={"num_images": 3}
    )
    assert changed.synthesize().generated == 3  # another sampler setting: other keys
    assert (
        len(set(manifest_keys(tmp_path / "cache"))) == len(manifest_keys(tmp_path / "cache")) == 11
    )


def test_on_the_fly_writes_through_and_second_epoch_reads(tiny_pipeline_dir, tmp_path):
    dm = make_dm(tiny_pipeline_dir, tmp_path / "cache", synthesis={"mode": "on_the_fly"})
    dm.setup("fit")
    assert dm.synthesis_report is None and not manifest_keys(tmp_path / "cache")
    loader = dm.train_dataloader()
    first = {n: m for b in loader for n, m in zip(b["name"], b["mask"], strict=True)}
    stats = dm.synthesis_stats()
    assert (stats["generated"], stats["cache_hits"]) == (6, 0) and stats["images_per_second"] > 0
    assert sorted(manifest_keys(tmp_path / "cache")) == sorted(s.key for s in dm.plan())
    second = {n: m for b in loader for n, m in zip(b["name"], b["mask"], strict=True)}
    stats = dm.synthesis_stats()
    assert (stats["generated"], stats["cache_hits"], stats["items"]) == (6, 6, 12)
    assert first.keys() == second.keys() and len(first) == 6
    assert all(torch.equal(first[n], second[n]) for n in first)  # same crop: scale 1, crop 32
    dm.teardown("fit")


def test_on_the_fly_workers_each_write_their_own_shards(tiny_pipeline_dir, tmp_path):
    dm = make_dm(
        tiny_pipeline_dir,
        tmp_path / "cache",
        synthesis={"mode": "on_the_fly"},
        loader={"num_workers": 2},
    )
    dm.setup("fit")
    names = [n for b in dm.train_dataloader() for n in b["name"]]
    assert len(names) == len(set(names)) == 6
    keys = manifest_keys(tmp_path / "cache")
    assert sorted(keys) == sorted(s.key for s in dm.plan())  # each generated exactly once
    writers = {p.stem.rsplit("-", 1)[0] for p in (tmp_path / "cache" / "manifest").iterdir()}
    assert writers == {"r0w0", "r0w1"}
    assert dm.synthesis_stats()["generated"] == 6  # worker counters reach the main process


# ------------------------------------------------------------------- label spaces
def test_label_spaces_keep_255_for_ignore() -> None:
    cityscapes = LabelSpace.from_vocabulary(get_vocabulary("cityscapes"))
    assert cityscapes.num_classes == 19 and cityscapes.class_names[0] == "road"
    assert cityscapes.vocab_to_label[:3] == (255, 0, 1)
    wnids = sorted(load_wordnet_table().imagenet1k_wnids)[:919]
    imagenet = LabelSpace.from_vocabulary(imagenet_s_vocabulary("imagenet_s919", wnids))
    assert imagenet.num_classes == 921 and imagenet.class_names[255] == PLACEHOLDER_NAME
    assert imagenet.vocab_to_label[254:257] == (254, 256, 257) and imagenet.mask_dtype == np.uint16


def test_919_class_vocabulary_stores_uint16_masks(tiny_pipeline_dir, tmp_path):
    wnids = sorted(load_wordnet_table().imagenet1k_wnids)[:919]
    vocab = imagenet_s_vocabulary("imagenet_s919", wnids)
    name = vocab.classes[299].name  # vocabulary id 300 -> label 301
    dm = make_dm(
        tiny_pipeline_dir,
        tmp_path / "cache",
        vocabulary="imagenet_s919",
        categories=wnids,
        prompts=PromptConfig(classes=[name]),
        synthesis={"num_images": 2},
    )
    dm.synthesize()
    record = SampleCache(tmp_path / "cache")[dm.plan()[0].key]
    assert record.mask.dtype == np.uint16 and set(np.unique(record.mask)) <= {0, 255, 301}
    assert record.meta["class_ids"] and set(record.meta["class_ids"]) <= {0, 301}


# ------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    ("overrides", "error", "match"),
    [
        (
            {"prompts": PromptConfig(texts=["a photo of nothing at all"])},
            ValueError,
            "names no class",
        ),
        ({"prompts": PromptConfig(classes=["unicorn"])}, KeyError, "not in vocabulary"),
        ({"prompts": PromptConfig(templates=["a photo of a thing"])}, ValueError, "class word"),
        ({"synthesis": {"mode": "sometimes"}}, ValueError, r"synthesis\.mode.*on_the_fly"),
        ({"vocabulary": "vocc"}, KeyError, "Did you mean"),
    ],
)
def test_bad_config_fails_at_init(tiny_pipeline_dir, tmp_path, overrides, error, match):
    with pytest.raises(error, match=match):
        dm = make_dm(tiny_pipeline_dir, tmp_path / "cache", **overrides)
        dm.plan()


def test_bad_model_dirs_and_cache_dirs(tiny_pipeline_dir, tmp_path):
    missing = PipelineConfig(model=str(tmp_path / "nope"))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        make_dm(tiny_pipeline_dir, tmp_path / "cache", pipeline=missing)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="not a diffusers pipeline"):
        make_dm(
            tiny_pipeline_dir,
            tmp_path / "cache",
            pipeline=PipelineConfig(model=str(tmp_path / "empty")),
        )
    (tmp_path / "file").write_text("x")
    dm = make_dm(tiny_pipeline_dir, tmp_path / "file" / "cache")
    with pytest.raises(CacheNotWritableError, match=r"file/cache is not writable.*cache_dir"):
        dm.prepare_data()


def test_unet_without_cross_attention_is_refused(tiny_pipeline_dir, tmp_path):
    from diffusers import UNet2DConditionModel

    shutil.copytree(tiny_pipeline_dir, tmp_path / "no_xattn", ignore=shutil.ignore_patterns("unet"))
    UNet2DConditionModel(
        sample_size=16, block_out_channels=(32, 64), layers_per_block=1, norm_num_groups=8,
        down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"),
        mid_block_type="UNetMidBlock2D", cross_attention_dim=32,
    ).save_pretrained(tmp_path / "no_xattn" / "unet")  # fmt: skip
    dm = make_dm(
        tiny_pipeline_dir,
        tmp_path / "cache",
        pipeline=PipelineConfig(model=str(tmp_path / "no_xattn")),
    )
    with pytest.raises(ValueError, match="cross-attention"):
        dm.synthesize()


def test_corrupt_shard_is_quarantined_and_regenerated(tiny_pipeline_dir, tmp_path):
    dm = make_dm(tiny_pipeline_dir, tmp_path / "cache")
    dm.setup("fit")
    cache = SampleCache(tmp_path / "cache")
    key = dm.plan()[1].key
    shard = cache.shard_of(key)
    begin, end = cache.entry(key).fields["mask"]
    data = bytearray(shard.read_bytes())
    data[begin + 20] ^= 0xFF
    shard.write_bytes(bytes(data))
    with pytest.warns(RuntimeWarning, match="corrupt"):
        items = dm._train.__getitems__([1, 0, 2])  # reading 1 finds the (only) shard bad
    assert [item["name"][6:13] for item in items] == ["0000001", "0000000", "0000002"]
    assert dm.synthesis_stats()["generated"] == 3  # the requested samples came back at once
    assert (tmp_path / "cache" / "quarantine" / shard.name).exists()
    assert len(SampleCache(tmp_path / "cache")) == 3
    dm._train.__getitems__([3, 4, 5])  # the rest of the bad shard: regenerated when read
    assert dm.synthesis_stats()["generated"] == 6 and len(SampleCache(tmp_path / "cache")) == 6


# ------------------------------------------------------------------- callback and W&B
def test_stats_callback_logs_synthesis_metrics(tiny_pipeline_dir, tmp_path):
    from lightning.pytorch import LightningModule, Trainer
    from lightning.pytorch.loggers import Logger

    from synthmask.callbacks.synthesis_stats import SynthesisStatsCallback

    class Recorder(Logger):
        name, version = "recorder", "0"
        logged: list[dict] = []

        def log_metrics(self, metrics, step=None):
            self.logged.append(dict(metrics))

        def log_hyperparams(self, params, *args, **kwargs):
            pass

    class PixelClassifier(LightningModule):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 21, 1)

        def training_step(self, batch, batch_idx):
            return torch.nn.functional.cross_entropy(
                self.conv(batch["image"]), batch["mask"], ignore_index=255
            )

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.01)

    dm = make_dm(tiny_pipeline_dir, tmp_path / "cache", val_data=None)
    recorder = Recorder()
    trainer = Trainer(
        max_epochs=1, logger=recorder, callbacks=[SynthesisStatsCallback(log_every_n_steps=1)],
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        default_root_dir=tmp_path, log_every_n_steps=1,
    )  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(PixelClassifier(), datamodule=dm)
    ahead = next(m for m in recorder.logged if "synth/ahead_generated" in m)
    assert ahead["synth/ahead_generated"] == 6 and ahead["synth/ahead_cache_hit_rate"] == 0.0
    assert trainer.callback_metrics["synth/epoch_cache_hit_rate"] == 1.0
    assert any("synth/cache_hit_rate" in m for m in recorder.logged)


def test_wandb_sample_images_carry_mask_and_reliability_overlays(tiny_pipeline_dir, tmp_path):
    from synthmask.callbacks.synthesis_stats import synthesis_wandb_images

    dm = make_dm(tiny_pipeline_dir, tmp_path / "cache", synthesis={"num_images": 3})
    dm.synthesize()
    images = synthesis_wandb_images(dm.sample_records(2), dm.class_names)
    assert len(images) == 2
    masks = images[0]._masks
    assert set(masks) == {"pseudo_mask", "reliability"}
    record = dm.sample_records(1)[0]
    assert masks["pseudo_mask"]._val["class_labels"][CAT] == "cat"
    np.testing.assert_array_equal(masks["pseudo_mask"]._val["mask_data"], record.mask)
    np.testing.assert_array_equal(masks["reliability"]._val["mask_data"], record.reliability // 255)
    assert "a photograph of a" in images[0]._caption


def test_validation_comes_from_the_real_data_module(tiny_pipeline_dir, tmp_path):
    val = VOCDataModule(root=str(make_voc(tmp_path / "voc")), loader=LoaderConfig(batch_size=2))
    dm = make_dm(
        tiny_pipeline_dir, tmp_path / "cache", val_data=val, synthesis={"mode": "on_the_fly"}
    )
    dm.setup("validate")
    batch = next(iter(dm.val_dataloader()))
    assert batch["image"].shape[0] == 2 and batch["name"][0].startswith("2009_")
    with pytest.raises(ValueError, match="classes"):
        make_dm(
            tiny_pipeline_dir, tmp_path / "c2", val_data=val, vocabulary="cityscapes", prompts=None
        )


# ------------------------------------------------------------------- DDP (slow)
def _ddp_worker(rank: int, world: int, pipe_dir: str, cache_dir: str, port: int) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.distributed.init_process_group("gloo", rank=rank, world_size=world)
    torch.set_num_threads(1)
    try:
        dm = make_dm(Path(pipe_dir), Path(cache_dir), synthesis={"num_images": 8, "batch_size": 2})
        dm.setup("fit")  # each rank: its share, then a barrier, then all read
        assert dm.synthesis_report.generated == 4 and len(SampleCache(cache_dir)) == 8
    finally:
        torch.distributed.destroy_process_group()


@pytest.mark.slow
def test_ddp_two_cpu_processes_generate_each_sample_exactly_once(tiny_pipeline_dir, tmp_path):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    torch.multiprocessing.spawn(
        _ddp_worker, args=(2, str(tiny_pipeline_dir), str(tmp_path / "cache"), port), nprocs=2
    )
    keys = manifest_keys(tmp_path / "cache")
    assert len(keys) == len(set(keys)) == 8
    per_rank = {}
    for path in (tmp_path / "cache" / "manifest").iterdir():
        rank = path.stem.split("-")[0]
        per_rank[rank] = per_rank.get(rank, 0) + sum(
            len(json.loads(line)["samples"]) for line in path.read_text().splitlines()
        )
    assert per_rank == {"r0": 4, "r1": 4}


def test_deep_copies_share_the_synthesis_counters(tiny_pipeline_dir, tmp_path):
    """Lightning's weight-averaging callbacks deep-copy the module with its trainer and data
    module; shared-memory counters cannot be copied, so a copy shares them."""
    import copy

    dm = make_dm(tiny_pipeline_dir, tmp_path / "cache")
    twin = copy.deepcopy(dm)
    assert twin.counters is dm.counters and twin is not dm
    twin.counters.add(items=3, cache_hits=3)
    assert dm.synthesis_stats()["cache_hits"] == 3
