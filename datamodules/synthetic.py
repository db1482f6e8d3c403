"""SyntheticSegDataModule: train on diffusion-synthetic images with attention pseudo-masks,
validate on a real data module.

Two modes:
- `ahead`: `setup("fit")` (and `synthmask synthesize --config X.yaml`, which calls
  `synthesize()`) fills the cache first. Under DDP / torchrun each rank generates the plan
  indices `rank::world_size`, so every sample is generated exactly once; then all ranks read.
  In `fit` the ranks meet at a process-group barrier after synthesis, so a plan that takes
  longer than the group's timeout (30 min by default) should be synthesized first with
  `torchrun ... synthmask synthesize` (resumable; `fit` then finds everything cached).
- `on_the_fly`: nothing is generated up front; the training data pipeline generates the
  samples it does not find in the cache (inside the DataLoader workers, one writer each) and
  writes them through, so the second epoch and every rerun only read. A missing key is claimed
  first, as in `ahead` mode, so ranks and concurrent runs that need the same sample (reliability
  pruning reads all of them on every rank) generate it once.

A cached sample is never generated twice: keys are content addressed (model, sampler, capture,
mask settings, prompt, seed), so changing any of them makes new keys while old ones stay valid.
`synthesis_totals()` says how many samples this process generated and which it used; the
`SynthesisStatsCallback` sums them over ranks into `synth/generated` and `synth/cached`.
"""

from __future__ import annotations

import dataclasses
import json
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lightning.pytorch import LightningDataModule
from torch.utils.data import DataLoader

from synthmask.cache import SampleCache, SampleRecord
from synthmask.datamodules.dataset import pad_collate
from synthmask.datamodules.reliability_pruning import pruned_subset
from synthmask.datamodules.settings import (
    AugmentConfig,
    LoaderConfig,
    PruningConfig,
    SynthesisConfig,
)
from synthmask.datamodules.synthetic_dataset import (
    SynthesisCounters,
    SyntheticSegDataset,
    rank_and_world,
    seed_synthetic_worker,
)
from synthmask.diffusion.capture import CaptureConfig
from synthmask.diffusion.pipeline import PipelineConfig, resolve_local_dir
from synthmask.diffusion.resolutions import attention_geometry
from synthmask.masks import Attn2MaskConfig, MaskConfig, MaskMethodConfig
from synthmask.prompts import get_vocabulary
from synthmask.prompts.scene_config import ScenePromptConfig
from synthmask.synthesis import SampleSynthesizer, SynthesisReport
from synthmask.synthesis_plan import (
    LabelSpace,
    PromptConfig,
    SampleSpec,
    build_plan,
    config_digest,
    owned_indices,
)
from synthmask.synthesis_processes import check_processes, synthesize_in_processes


class SyntheticSegDataModule(LightningDataModule):
    """Synthetic training data (diffusion + attention pseudo-masks) with real validation data.

    Args:
        pipeline: diffusion model and sampler (`PipelineConfig`: model hub id or local dir,
            steps, guidance, scheduler, dtype, device, height/width, LoRA).
        vocabulary: class vocabulary name ("voc", "cityscapes", "imagenet1k", "imagenet_s50",
            "imagenet_s300", "imagenet_s919").
        categories: category list for the ImageNet-S vocabularies (file, folder or wnids).
        prompts: prompt recipe: `PromptConfig` (templates, augmentation, classes, multi-class,
            texts) or `ScenePromptConfig` (multi-class street / shapes scenes).
        mask: pseudo-mask method and reliability rule: one of `synthmask.masks`'
            `Attn2MaskConfig` (default), `ThresholdMaskConfig`, `SelfRefineMaskConfig`, chosen by
            class_path (one override switches: `--data.init_args.mask=ThresholdMaskConfig`).
            What the method needs captured (self-attention and its side) is added to `capture`
            at the sides the pipeline's UNet has at the sampling size.
        capture: attention capture (`CaptureConfig`: step window, cross-attention sides); only
            needed to narrow the step window or the sides, never for a mask method's needs.
        synthesis: how many samples, where cached, how generated (`SynthesisConfig`:
            num_images, batch_size (diffusion), processes, cache_dir, mode ("ahead" or
            "on_the_fly", see the module docstring), seed of the plan, shard_size, progress).
        val_data: a real-data module for validation/test (e.g. VOCDataModule); its class count
            must equal this module's.
        loader: the training loader (`LoaderConfig`: batch_size, num_workers, pin_memory), as in
            the real data modules.
        augment: training augmentation (`AugmentConfig`: crop_size, scale_range, hflip_prob,
            rot90_prob, base_size, mean, std), as in the real data modules.
        pruning: reliability-based pruning (`PruningConfig`: share of the least reliable samples
            to drop, 0 = keep all; per_class). Reads every sample (generating missing ones) when
            the training loader is built.
        wandb_log: after `synthmask synthesize`, the config's `SynthesisStatsCallback` logs a
            sample grid (images, pseudo-masks, reliability) and the synthesis stats to W&B: None =
            when a W&B run is active, True = always (starts a run if needed), False = never (the
            data module itself never calls W&B).
        wandb_samples: images in that grid.
        wandb_project: project of a run started by `wandb_log: true`.

    A config reads as named blocks (cache keys depend on what is synthesized, not on this
    layout):

        synthesis: {num_images: 1280, batch_size: 32, cache_dir: synthmask_cache}
        loader: {batch_size: 16}
        augment: {crop_size: 32, scale_range: [1.0, 1.0]}
        pruning: {share: 0.25}
    """

    def __init__(
        self,
        pipeline: PipelineConfig,
        vocabulary: str = "voc",
        categories: str | list[str] | None = None,
        prompts: PromptConfig | ScenePromptConfig | None = None,
        mask: MaskMethodConfig | None = None,
        capture: CaptureConfig | None = None,
        synthesis: SynthesisConfig | None = None,
        val_data: LightningDataModule | None = None,
        loader: LoaderConfig | None = None,
        augment: AugmentConfig | None = None,
        pruning: PruningConfig | None = None,
        wandb_log: bool | None = None,
        wandb_samples: int = 16,
        wandb_project: str = "synthmask",
    ) -> None:
        super().__init__()
        synthesis = synthesis or SynthesisConfig()
        loader = loader or LoaderConfig()
        augment = augment or AugmentConfig()
        pruning = pruning or PruningConfig()
        self.save_hyperparameters(ignore=["val_data"])
        synthesis.check()
        loader.check()
        pruning.check()
        resolve_local_dir(pipeline.model)  # a missing / non-pipeline local dir fails here
        if isinstance(mask, MaskConfig):  # Python callers may pass the engine's MaskConfig
            mask = MaskMethodConfig.from_mask_config(mask)
        self.mask_method = mask if mask is not None else Attn2MaskConfig()
        capture_settings, mask_settings = self.mask_method.resolve(
            capture or CaptureConfig(), attention_geometry(pipeline)
        )
        self.vocabulary = get_vocabulary(vocabulary, categories)
        self.labels = LabelSpace.from_vocabulary(self.vocabulary)
        self.prompt_config = prompts or PromptConfig()
        # unknown classes/templates fail now
        self.prompt_config.prompts(self.vocabulary, 1, synthesis.seed)
        self.synthesizer = SampleSynthesizer(pipeline, self.labels, capture_settings, mask_settings)
        check_processes(synthesis.processes, pipeline.device)
        self.synthesis = synthesis
        self.loader = loader
        self.augment = augment
        self.pruning = pruning
        self.cache_dir = Path(synthesis.cache_dir).expanduser()
        self.val_data = val_data
        self.wandb_log = wandb_log
        self.wandb_samples = wandb_samples
        self.wandb_project = wandb_project
        self.train_transform = augment.train_transform()
        self.train_transform.add_targets({"reliability": "mask", "margin": "mask"})
        self.counters = SynthesisCounters()
        self._ahead_generated = 0
        self.synthesis_report: SynthesisReport | None = None
        self._specs: list[SampleSpec] | None = None
        self._train: SyntheticSegDataset | None = None
        self._check_val_classes()

    # ------------------------------------------------------------------ classes
    @property
    def class_names(self) -> list[str]:
        return list(self.labels.class_names)

    @property
    def num_classes(self) -> int:
        return self.labels.num_classes

    def _check_val_classes(self) -> None:
        if self.val_data is None:
            return
        val_classes = getattr(self.val_data, "num_classes", None)
        if val_classes is not None and val_classes != self.num_classes:
            raise ValueError(
                f"val_data {type(self.val_data).__name__} has {val_classes} classes but vocabulary "
                f"{self.vocabulary.name!r} gives {self.num_classes}. Fix: pick the vocabulary of "
                "the validation data set (e.g. voc for VOCDataModule)."
            )
        val_names = list(getattr(self.val_data, "class_names", []) or [])
        if val_names and val_names[1:] != self.class_names[1:]:
            warnings.warn(
                f"class names of val_data differ from vocabulary {self.vocabulary.name!r} "
                f"(e.g. {val_names[1:4]} vs {self.class_names[1:4]}); check that ids match.",
                stacklevel=2,
            )

    # ------------------------------------------------------------------ plan
    def plan(self) -> list[SampleSpec]:
        """The (prompt, seed, key) of every training sample (built once)."""
        if self._specs is None:
            prompts = self.prompt_config.prompts(
                self.vocabulary, self.synthesis.num_images, self.synthesis.seed
            )
            self._specs = build_plan(prompts, self.synthesis.seed, self.synthesizer.fingerprint())
        return self._specs

    def _open_cache(self) -> SampleCache:
        cache = SampleCache(self.cache_dir)
        fingerprint = self.synthesizer.fingerprint()
        record = cache.root / "configs" / f"{config_digest(fingerprint)}.json"
        if not record.exists():  # what produced the keys, for humans and audits
            try:
                record.parent.mkdir(exist_ok=True)
                temp = record.with_suffix(f".tmp{os.getpid()}")
                temp.write_text(json.dumps(fingerprint, indent=1, sort_keys=True))
                os.replace(temp, record)
            except OSError:
                pass  # a read-only cache can still be read; writers report the problem
        return cache

    # ------------------------------------------------------------------ synthesis
    def _pin_cuda_device(self) -> None:
        """`device: cuda` -> this rank's GPU, fixed before DataLoader workers copy the config
        (spawned workers do not inherit the current device)."""
        cfg = self.synthesizer.pipeline
        if cfg.device != "cuda" or not torch.cuda.is_available():
            return
        local_rank = int(os.environ.get("LOCAL_RANK", -1))
        index = local_rank if 0 <= local_rank < torch.cuda.device_count() else None
        if index is None:
            index = torch.cuda.current_device()
        self.synthesizer.pipeline = dataclasses.replace(cfg, device=f"cuda:{index}")

    def synthesize(self, log_to_wandb: bool = False) -> SynthesisReport:
        """Fill the cache with this rank's share of the plan (`rank::world_size`), resumably.

        Under an initialized process group all ranks wait for each other at the end. Nothing is
        logged here (`log_to_wandb` is accepted for old callers and unused): the config's
        `SynthesisStatsCallback` logs the sample grid and stats, during `fit` and after
        `synthmask synthesize` (following `wandb_log`).
        """
        self._pin_cuda_device()
        rank, world = rank_and_world()
        specs = self.plan()
        owned = owned_indices(len(specs), rank, world)
        mine = [specs[i] for i in owned]
        report = synthesize_in_processes(
            self.synthesizer,
            self._open_cache(),
            mine,
            self.synthesis.batch_size,
            self.synthesis.processes,
            writer_label=f"r{rank}",
            shard_size=self.synthesis.shard_size,
            progress=self.synthesis.progress,
            desc=f"synthesize rank {rank}/{world}" if world > 1 else "synthesize",
        )
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.barrier()
        self.synthesis_report = report
        self._ahead_generated += report.generated
        self.counters.track(len(specs))
        self.counters.mark_used(owned)
        return report

    def sample_records(self, count: int) -> list[SampleRecord]:
        """The first `count` cached samples of the plan (none generated)."""
        cache = SampleCache(self.cache_dir, create=False) if self.cache_dir.is_dir() else None
        if cache is None:
            return []
        found = (cache.get(spec.key) for spec in self.plan()[: max(0, count) * 4])
        return [record for record in found if record is not None][:count]

    def synthesis_stats(self) -> dict[str, float]:
        """Counters of the training data pipeline (hits, generated, images/s, hit rate)."""
        return self.counters.snapshot()

    def synthesis_totals(self) -> tuple[int, np.ndarray]:
        """This process's part of the run's synthesis: the samples it and its DataLoader
        workers generated (ahead pass and training pipeline), and (num_images,) uint8 flags
        of the plan indices they used (generated or read from the cache)."""
        generated = self._ahead_generated + int(self.counters.snapshot()["generated"])
        return generated, self.counters.used()

    # ------------------------------------------------------------------ Lightning hooks
    def prepare_data(self) -> None:
        SampleCache(self.cache_dir)  # creates it; a clear error if it cannot be written
        if self.val_data is not None:
            self.val_data.prepare_data()

    def setup(self, stage: str | None = None) -> None:
        if stage in (None, "fit") and self._train is None:
            self._pin_cuda_device()
            if self.synthesis.mode == "ahead":
                self.synthesize()  # fit logs via SynthesisStatsCallback
                self.synthesizer.release()  # training needs the memory; reloaded on a miss
            self._open_cache()
            self.counters.track(len(self.plan()))  # before any DataLoader worker starts
            self._train = SyntheticSegDataset(
                self.plan(),
                self.cache_dir,
                self.train_transform,
                synthesizer=self.synthesizer,  # regenerates samples lost to corruption too
                synthesis_batch_size=self.synthesis.batch_size,
                counters=self.counters,
            )
        if self.val_data is not None:
            # Only the real data's evaluation split is used: never build its train split.
            self.val_data.setup("test" if stage == "test" else "validate")

    def train_dataloader(self) -> DataLoader:
        if self._train is None:
            self.setup("fit")
        uses_cuda = str(self.synthesizer.pipeline.device).startswith("cuda")
        spawn = self.synthesis.mode == "on_the_fly" and uses_cuda and self.loader.num_workers > 0
        dataset = self._train
        if self.pruning.share > 0:
            dataset = pruned_subset(
                self._train, self.num_classes, self.pruning.share, self.pruning.per_class
            )
        return DataLoader(
            dataset,
            batch_size=self.loader.batch_size,
            shuffle=True,
            num_workers=self.loader.num_workers,
            persistent_workers=self.loader.num_workers > 0,
            pin_memory=self.loader.pin_memory,
            collate_fn=pad_collate,
            worker_init_fn=seed_synthetic_worker,
            drop_last=len(dataset) >= self.loader.batch_size,
            # CUDA cannot be used in forked workers: generate in spawned ones.
            multiprocessing_context="spawn" if spawn else None,
        )

    def val_dataloader(self) -> Any:
        return self.val_data.val_dataloader() if self.val_data is not None else []

    def test_dataloader(self) -> Any:
        return self.val_data.test_dataloader() if self.val_data is not None else []

    def teardown(self, stage: str | None = None) -> None:
        if self._train is not None:
            self._train.close()
        if self.val_data is not None:
            self.val_data.teardown(stage)
