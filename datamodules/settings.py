"""Settings blocks of the segmentation data modules, so a config reads as a few named blocks.

`LoaderConfig` and `AugmentConfig` are shared by the real-data modules (`SegmentationDataModule`:
VOC, Cityscapes, ImageNet-S, folders) and `SyntheticSegDataModule`; `SynthesisConfig` and
`PruningConfig` are the synthetic module's own. Each is a plain dataclass (no Lightning), so
LightningCLI parses a YAML block into it and one value is set with
`--data.init_args.<block>.<field>=...`, e.g. `--data.init_args.synthesis.num_images=8000`.

    loader: {batch_size: 16, num_workers: 8, pin_memory: true}
    augment: {crop_size: 512, scale_range: [0.5, 2.0], hflip_prob: 0.5}
    synthesis: {num_images: 2000, batch_size: 8, cache_dir: synthmask_cache}
    pruning: {share: 0.25}

Where a value is wrong, `check(...)` raises a ValueError naming the option path and the fix.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import albumentations as A

from synthmask.datamodules.transforms import IMAGENET_MEAN, IMAGENET_STD, build_train_transform
from synthmask.synthesis_plan import check_num_images

SYNTHESIS_MODES = ("ahead", "on_the_fly")


def _at_least(path: str, value: int, low: int) -> None:
    if value < low:
        raise ValueError(f"{path}={value}; it must be at least {low}.")


@dataclass
class LoaderConfig:
    """The training DataLoader.

    Args:
        batch_size: training batch size.
        num_workers: DataLoader worker processes (persistent when > 0).
        pin_memory: pin host memory in the loaders (helps on GPU).
    """

    batch_size: int = 8
    num_workers: int = 0
    pin_memory: bool = False

    def check(self, block: str = "loader") -> None:
        """ValueError naming `<block>.<field>` for a batch size below 1 or negative workers."""
        _at_least(f"{block}.batch_size", self.batch_size, 1)
        _at_least(f"{block}.num_workers", self.num_workers, 0)


@dataclass
class AugmentConfig:
    """Training augmentation (scale, pad, crop, flip, quarter turns) and the normalization.

    Args:
        crop_size: train crop, an int (square) or [height, width].
        scale_range: [low, high] random scale factors for training.
        hflip_prob: probability of a horizontal flip in training.
        rot90_prob: probability of a turn by a random multiple of 90 degrees in training (for
            orientation-free classes; needs a square crop; 0 = off).
        base_size: if set, training images are first resized so their shorter side is this.
        mean, std: normalization (default ImageNet); the validation transform uses them too.
    """

    crop_size: int | list[int] = 512
    scale_range: tuple[float, float] = (0.5, 2.0)
    hflip_prob: float = 0.5
    rot90_prob: float = 0.0
    base_size: int | None = None
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD

    def train_transform(self, block: str = "augment") -> A.Compose:
        """The training pipeline (`build_train_transform`); a bad value raises a ValueError
        that names `<block>.<field>`.

        Shape:
            input image (H, W, 3) uint8 and mask (H, W); output (3, crop_h, crop_w) float32 and
            mask (crop_h, crop_w).
        """
        try:
            return build_train_transform(
                self.crop_size,
                self.scale_range,
                self.hflip_prob,
                self.base_size,
                self.mean,
                self.std,
                rot90_prob=self.rot90_prob,
            )
        except ValueError as err:
            raise ValueError(f"{block}: {err}") from err


@dataclass
class SynthesisConfig:
    """How many synthetic samples, where they are cached and how they are generated.

    The cache keys depend on the plan (`num_images`, `seed`, prompts) and the pipeline, capture
    and mask settings only; `batch_size`, `processes`, `mode`, `shard_size` and `progress`
    change how samples are made, never which.

    Args:
        num_images: size of the synthetic training set.
        batch_size: diffusion batch size.
        processes: ahead-of-time synthesis on a CPU in this many processes, each with an equal
            share of torch's threads (1 = in the training process). On 2 cores, 2 one-thread
            processes draw 1.3x as many images/s as one two-thread process.
        cache_dir: the sample cache (shared by every run with the same settings).
        mode: "ahead" (fill the cache before training) or "on_the_fly" (the training data
            pipeline generates what it does not find); see `SyntheticSegDataModule`.
        seed: seed of the plan (prompt i and image seed i depend only on it and i).
        shard_size: samples per cache shard in ahead-of-time synthesis.
        progress: show the synthesis progress bar (images/s, cache hits).
    """

    num_images: int = 2000
    batch_size: int = 8
    processes: int = 1
    cache_dir: str | Path = "synthmask_cache"
    mode: str = "ahead"
    seed: int = 0
    shard_size: int = 64
    progress: bool = True

    def check(self, block: str = "synthesis") -> None:
        """ValueError naming `<block>.<field>` and the fix for a value that cannot work."""
        if self.mode not in SYNTHESIS_MODES:
            raise ValueError(f"{block}.mode={self.mode!r}; use one of {list(SYNTHESIS_MODES)}.")
        for name in ("num_images", "batch_size", "shard_size"):
            _at_least(f"{block}.{name}", getattr(self, name), 1)
        check_num_images(self.num_images, f"{block}.num_images")  # the plan is built in memory
        if not str(self.cache_dir).strip():
            raise ValueError(
                f"{block}.cache_dir is empty; give the folder of the sample cache, e.g. "
                f"`--data.init_args.{block}.cache_dir=synthmask_cache` (the default)."
            )


@dataclass
class PruningConfig:
    """Reliability-based pruning of the synthetic training set.

    Args:
        share: drop this share of the training samples whose pseudo-masks are least reliable
            (mean margin; 0 = keep all). Reads every sample (generating missing ones) when the
            training loader is built.
        per_class: prune within each dominant class instead of over the whole set.
    """

    share: float = 0.0
    per_class: bool = True

    def check(self, block: str = "pruning") -> None:
        """ValueError naming `<block>.share` unless it is a fraction in [0, 1)."""
        if not 0.0 <= self.share < 1.0:
            raise ValueError(
                f"{block}.share={self.share}; use a fraction in [0, 1) (0 = no pruning)."
            )
