"""A generic image/mask folder data set.

```
<root>/images/<stem>.{jpg,jpeg,png}
<root>/masks/<stem>.png          class ids per pixel (single-channel or palette PNG), 255 = ignore
<root>/classes.txt               one class name per line; line 1 is class id 0
<root>/splits/{train,val}.txt    optional, one stem per line; else a seeded split by val_fraction
```
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from synthmask.datamodules.base import SegmentationDataModule, require_dir
from synthmask.datamodules.dataset import MaskReader, SegmentationSample, read_index_mask

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
FOLDER_LAYOUT = (
    "<root>/images/<stem>.{jpg,png}, <root>/masks/<stem>.png (class ids), <root>/classes.txt "
    "(one name per line, line 1 = id 0), optional <root>/splits/{train,val}.txt"
)


def read_class_names(path: Path) -> list[str]:
    """Class names from a classes.txt (line i+1 = class id i); blank lines only at the end."""
    if not path.is_file():
        raise FileNotFoundError(
            f"FolderSegDataModule: wrong layout, the class list {str(path)!r} is missing. "
            f"Expected layout: {FOLDER_LAYOUT}. Fix: write classes.txt with one class name per "
            "line, starting with class id 0 (e.g. 'background')."
        )
    lines = [line.strip() for line in path.read_text().splitlines()]
    while lines and not lines[-1]:
        lines.pop()
    if not lines:
        raise ValueError(f"{path} lists no classes. Fix: write one class name per line.")
    blank = [number for number, line in enumerate(lines, start=1) if not line]
    if blank:
        raise ValueError(
            f"{path} has empty line(s) {blank} among the class names; line i+1 names class id i, "
            "so a blank line would shift the ids. Fix: remove the blank lines or name the class."
        )
    first: dict[str, int] = {}
    for number, name in enumerate(lines, start=1):
        if name in first:
            raise ValueError(
                f"{path} names class {name!r} twice (lines {first[name]} and {number}); every "
                "class id needs its own name. Fix: rename or remove one of them."
            )
        first[name] = number
    return lines


def read_stem_list(path: Path) -> list[str]:
    """Stems of a split file (file names are accepted; their suffix is dropped)."""
    return [Path(line.strip()).stem for line in path.read_text().splitlines() if line.strip()]


def seeded_split(stems: list[str], val_fraction: float, seed: int) -> dict[str, list[str]]:
    """Deterministic train/val split of sorted stems: a seeded permutation, the first
    ceil(n * val_fraction) stems go to val (each split returned in sorted order)."""
    order = np.random.default_rng(seed).permutation(len(stems))
    num_val = math.ceil(len(stems) * val_fraction)
    shuffled = [sorted(stems)[i] for i in order]
    return {"train": sorted(shuffled[num_val:]), "val": sorted(shuffled[:num_val])}


class FolderSegDataModule(SegmentationDataModule):
    """Images + id masks + classes.txt in one folder.

    Args:
        root: the folder holding images/, masks/ and classes.txt.
        val_fraction: share of images used for validation when there is no splits/ folder.
        split_seed: seed of that split (same seed, same split on every machine).
        **kwargs: `loader`, `augment` and val options of `SegmentationDataModule`.
    """

    layout_hint = FOLDER_LAYOUT
    mask_fix_hint = (
        "add the missing names to classes.txt (line i+1 = class id i) or set those pixels "
        "to 255 (ignore) in the mask."
    )

    def __init__(
        self,
        root: str,
        val_fraction: float = 0.2,
        split_seed: int = 0,
        **kwargs,
    ) -> None:
        super().__init__(root=root, **kwargs)
        if not 0.0 <= val_fraction < 1.0:
            raise ValueError(f"val_fraction={val_fraction} must be in [0, 1), e.g. 0.2.")
        self.image_dir = require_dir(
            self.root / "images", "FolderSegDataModule", "images", FOLDER_LAYOUT
        )
        self.mask_dir = require_dir(
            self.root / "masks", "FolderSegDataModule", "masks", FOLDER_LAYOUT
        )
        self._class_names = read_class_names(self.root / "classes.txt")
        self.val_fraction = val_fraction
        self.split_seed = split_seed
        self._stems: dict[str, list[str]] | None = None

    @property
    def class_names(self) -> list[str]:
        return list(self._class_names)

    def _image_paths(self) -> dict[str, Path]:
        return {
            p.stem: p
            for p in sorted(self.image_dir.iterdir())
            if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
        }

    def split_stems(self) -> dict[str, list[str]]:
        """Stems per split, from splits/{train,val}.txt or the seeded val_fraction split."""
        if self._stems is None:
            split_dir = self.root / "splits"
            if split_dir.is_dir():
                self._stems = {}
                for split in ("train", "val"):
                    path = split_dir / f"{split}.txt"
                    if not path.is_file():
                        raise FileNotFoundError(
                            f"FolderSegDataModule: {split_dir} exists but {path.name} is missing. "
                            "Fix: write both splits/train.txt and splits/val.txt (one image stem "
                            "per line), or delete splits/ to split by val_fraction."
                        )
                    self._stems[split] = read_stem_list(path)
            else:
                stems = list(self._image_paths())
                self._stems = seeded_split(stems, self.val_fraction, self.split_seed)
        return self._stems

    def find_samples(self, split: str) -> list[SegmentationSample]:
        images = self._image_paths()
        samples = []
        for stem in self.split_stems()[split]:
            image_path = images.get(stem, self.image_dir / f"{stem}.jpg")
            samples.append(SegmentationSample(stem, image_path, self.mask_dir / f"{stem}.png"))
        return samples

    def empty_split_hint(self, split: str) -> str:
        if (self.root / "splits").is_dir():
            return f"{self.root / 'splits' / f'{split}.txt'} lists no stems. Fix: add image stems."
        count = len(self._image_paths())
        return (
            f"{count} image(s) in {self.image_dir} with val_fraction={self.val_fraction} leave no "
            f"'{split}' images. Fix: add images (.jpg/.png) to images/, change val_fraction, or "
            "write splits/train.txt and splits/val.txt."
        )

    def mask_reader(self) -> MaskReader:
        return read_index_mask
