"""Cityscapes fine annotations in the official layout, labelIds mapped to the 19 train ids.

```
<root>/leftImg8bit/{train,val}/<city>/<city>_<seq>_<frame>_leftImg8bit.png
<root>/gtFine/{train,val}/<city>/<city>_<seq>_<frame>_gtFine_labelIds.png
```
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import numpy as np

from synthmask.datamodules.base import SegmentationDataModule, require_dir
from synthmask.datamodules.dataset import MaskReader, SegmentationSample, read_index_mask
from synthmask.datamodules.transforms import IGNORE_INDEX

# (label id -> train id) for the 19 evaluated classes, from cityscapesScripts
# helpers/labels.py; every other id (void classes, 'license plate' = -1) becomes 255.
CITYSCAPES_ID_TO_TRAIN_ID: dict[int, int] = {
    7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10,
    24: 11, 25: 12, 26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18,
}  # fmt: skip

CITYSCAPES_CLASS_NAMES: tuple[str, ...] = (
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign",
    "vegetation", "terrain", "sky", "person", "rider", "car", "truck", "bus", "train",
    "motorcycle", "bicycle",
)  # fmt: skip

CITYSCAPES_LAYOUT = (
    "<root>/leftImg8bit/{train,val}/<city>/*_leftImg8bit.png and "
    "<root>/gtFine/{train,val}/<city>/*_gtFine_labelIds.png (root = the folder holding both)"
)


def label_id_lookup() -> np.ndarray:
    """A 256-entry table: lookup[label_id] = train id (255 for ids outside the 19 classes)."""
    lookup = np.full(256, IGNORE_INDEX, dtype=np.uint8)
    for label_id, train_id in CITYSCAPES_ID_TO_TRAIN_ID.items():
        lookup[label_id] = train_id
    return lookup


def label_ids_to_train_ids(label_ids: np.ndarray) -> np.ndarray:
    """Map Cityscapes labelIds to train ids 0..18, everything else (incl. negative) to 255.

    Shape:
        label_ids (H, W) integer; returns (H, W) uint8.
    """
    ids = np.asarray(label_ids).astype(np.int64)
    inside = (ids >= 0) & (ids < 256)
    out = np.full(ids.shape, IGNORE_INDEX, dtype=np.uint8)
    out[inside] = label_id_lookup()[ids[inside]]
    return out


def read_cityscapes_mask(path: Path, lookup: np.ndarray) -> np.ndarray:
    """Read a *_gtFine_labelIds.png and map it to train ids (255 = ignore)."""
    label_ids = read_index_mask(path)
    if label_ids.dtype == np.uint8:
        return lookup[label_ids]
    return label_ids_to_train_ids(label_ids)


class CityscapesDataModule(SegmentationDataModule):
    """Cityscapes (gtFine): 19 classes (no background class), 255 = void / not evaluated.

    Args:
        root: the folder holding `leftImg8bit/` and `gtFine/`.
        train_split, val_split: split folder names (e.g. "train", "val", or "train_extra" ...).
        **kwargs: `loader`, `augment` and val options of `SegmentationDataModule` (the usual
            Cityscapes recipe: augment.crop_size [512, 1024], augment.scale_range [0.5, 2.0]).
    """

    layout_hint = CITYSCAPES_LAYOUT
    mask_fix_hint = "train ids are always 0..18 or 255; this should not happen."

    def __init__(
        self,
        root: str,
        train_split: str = "train",
        val_split: str = "val",
        **kwargs,
    ) -> None:
        super().__init__(root=root, **kwargs)
        self.splits = {"train": train_split, "val": val_split}
        for sub in ("leftImg8bit", "gtFine"):
            require_dir(
                self.root / sub, "CityscapesDataModule", f"the '{sub}' folder", CITYSCAPES_LAYOUT
            )

    @property
    def class_names(self) -> list[str]:
        return list(CITYSCAPES_CLASS_NAMES)

    def find_samples(self, split: str) -> list[SegmentationSample]:
        folder = self.splits[split]
        image_dir = require_dir(
            self.root / "leftImg8bit" / folder,
            "CityscapesDataModule",
            f"{split} images",
            CITYSCAPES_LAYOUT,
        )
        mask_dir = require_dir(
            self.root / "gtFine" / folder,
            "CityscapesDataModule",
            f"{split} masks",
            CITYSCAPES_LAYOUT,
        )
        samples = []
        for image_path in sorted(image_dir.glob("*/*_leftImg8bit.png")):
            name = image_path.name[: -len("_leftImg8bit.png")]
            city = image_path.parent.name
            mask_path = mask_dir / city / f"{name}_gtFine_labelIds.png"
            samples.append(SegmentationSample(name, image_path, mask_path))
        return samples

    def empty_split_hint(self, split: str) -> str:
        folder = self.root / "leftImg8bit" / self.splits[split]
        return (
            f"no <city>/*_leftImg8bit.png files in {folder}. Fix: unpack leftImg8bit_trainvaltest"
            f".zip into {self.root} (layout: {CITYSCAPES_LAYOUT})."
        )

    def mask_reader(self) -> MaskReader:
        return partial(read_cityscapes_mask, lookup=label_id_lookup())
