"""SegmentationDataModule: the shared base of the real-data modules (VOC, Cityscapes, ImageNet-S,
folders). Subclasses resolve their on-disk layout and class names in `__init__`, list samples per
split, and say how to decode a mask file; loaders, transforms and checks live here.
"""

from __future__ import annotations

from pathlib import Path

from lightning.pytorch import LightningDataModule
from torch.utils.data import DataLoader

from synthmask.datamodules.dataset import (
    MaskReader,
    SegmentationFileDataset,
    SegmentationSample,
    pad_collate,
    seed_worker,
)
from synthmask.datamodules.loaders import build_loader
from synthmask.datamodules.settings import AugmentConfig, LoaderConfig
from synthmask.datamodules.transforms import build_val_transform

SPLITS = ("train", "val")


def require_root(root: str | Path, module_name: str, layout_hint: str) -> Path:
    """The data root as a Path; FileNotFoundError naming the path and the expected layout."""
    path = Path(root).expanduser()
    if not path.is_dir():
        raise FileNotFoundError(
            f"{module_name}: data root {str(path)!r} does not exist or is not a directory. "
            f"Fix: set its `root` to the folder that holds the data set ({layout_hint}): "
            "`--data.init_args.root=...`, or `--data.init_args.val_data.init_args.root=...` for "
            "the validation data of a synthetic data module."
        )
    return path


def require_dir(path: Path, module_name: str, what: str, layout: str) -> Path:
    """FileNotFoundError naming the missing subdirectory and the layout expected around it."""
    if not path.is_dir():
        raise FileNotFoundError(
            f"{module_name}: wrong layout, expected directory {str(path)!r} ({what}) is missing. "
            f"Expected layout: {layout}. Fix: point `root` at the folder with that layout."
        )
    return path


def check_files_exist(
    samples: list[SegmentationSample], module_name: str, split: str, layout: str
) -> None:
    """FileNotFoundError listing (up to 5 of) the split's missing image/mask files."""
    missing = [
        str(path)
        for sample in samples
        for path in (sample.image_path, sample.mask_path)
        if not path.is_file()
    ]
    if missing:
        shown = ", ".join(missing[:5]) + (
            f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        )
        raise FileNotFoundError(
            f"{module_name}: {len(missing)} file(s) of the '{split}' split are missing: {shown}. "
            f"Expected layout: {layout}. Fix: restore these files or remove their ids from the "
            "split."
        )


class SegmentationDataModule(LightningDataModule):
    """Base data module: train loader with scale/pad/crop/flip augmentation, val loader without.

    Args:
        root: data set folder (meaning depends on the subclass).
        loader: the loaders (`LoaderConfig`: batch_size, num_workers, pin_memory), shared with
            `SyntheticSegDataModule`.
        augment: training augmentation and normalization (`AugmentConfig`: crop_size,
            scale_range, hflip_prob, rot90_prob, base_size, mean, std), shared likewise.
        val_resize: if set, validation images are resized so their longer side is this.
        val_pad_to: if set, validation images are padded (mask 255) to at least this size.
        val_batch_size: validation batch size (default: `loader.batch_size`); batches are padded
            to their largest image (mask 255), so sizes may differ within a batch.

    Every batch is a dict: "image" float32 (B, 3, H, W), "mask" int64 (B, H, W) with ids
    0..num_classes-1 and 255 = ignore, "name" list[str]. `num_classes` and `class_names` are set
    right after `__init__`. The test loader is the validation split.
    """

    layout_hint = "see the data module's docstring"
    mask_fix_hint = "check the masks against the data set's class list."

    def __init__(
        self,
        root: str,
        loader: LoaderConfig | None = None,
        augment: AugmentConfig | None = None,
        val_resize: int | None = None,
        val_pad_to: int | list[int] | None = None,
        val_batch_size: int | None = None,
    ) -> None:
        super().__init__()
        loader = loader or LoaderConfig()
        augment = augment or AugmentConfig()
        self.save_hyperparameters()
        loader.check()
        self.root = require_root(root, type(self).__name__, self.layout_hint)
        self.loader = loader
        self.augment = augment
        self.batch_size = loader.batch_size
        self.val_batch_size = val_batch_size or loader.batch_size
        self.num_workers = loader.num_workers
        self.pin_memory = loader.pin_memory
        # Built now so a bad crop/scale config fails at instantiation, not mid-training.
        self.train_transform = augment.train_transform()
        self.val_transform = build_val_transform(val_resize, val_pad_to, augment.mean, augment.std)
        self.datasets: dict[str, SegmentationFileDataset] = {}

    # ---- subclass interface -------------------------------------------------------------
    @property
    def class_names(self) -> list[str]:
        """Class names, index = class id (background first where the data set has one)."""
        raise NotImplementedError

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def find_samples(self, split: str) -> list[SegmentationSample]:
        """All (image, mask) pairs of `split` ("train" or "val")."""
        raise NotImplementedError

    def empty_split_hint(self, split: str) -> str:
        """Where the split's samples were looked for and how to fix an empty split."""
        return f"no samples found under {self.root}"

    def mask_reader(self) -> MaskReader:
        """A picklable function decoding a mask file into (H, W) class ids."""
        raise NotImplementedError

    # ---- Lightning hooks ----------------------------------------------------------------
    def build_dataset(self, split: str) -> SegmentationFileDataset:
        """The checked dataset of one split (ValueError if it is empty)."""
        samples = self.find_samples(split)
        if not samples:
            raise ValueError(
                f"{type(self).__name__}: the '{split}' split is empty: "
                f"{self.empty_split_hint(split)}"
            )
        check_files_exist(samples, type(self).__name__, split, self.layout_hint)
        transform = self.train_transform if split == "train" else self.val_transform
        return SegmentationFileDataset(
            samples, self.num_classes, self.mask_reader(), transform, self.mask_fix_hint
        )

    def setup(self, stage: str | None = None) -> None:
        wanted = ("train", "val") if stage in (None, "fit") else ("val",)
        for split in wanted:
            if split not in self.datasets:
                self.datasets[split] = self.build_dataset(split)

    def _loader(self, split: str, batch_size: int, shuffle: bool) -> DataLoader:
        if split not in self.datasets:
            self.setup("fit" if split == "train" else "validate")
        return build_loader(
            self.datasets[split],
            batch_size,
            shuffle,
            self.num_workers,
            collate_fn=pad_collate,
            pin_memory=self.pin_memory,
            worker_init_fn=seed_worker,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", self.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", self.val_batch_size, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("val", self.val_batch_size, shuffle=False)
