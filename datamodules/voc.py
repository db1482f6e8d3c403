"""PASCAL VOC 2012 segmentation in its official layout (optionally with the SBD-augmented train set).

```
<root>/VOCdevkit/VOC2012/            (root may also be VOCdevkit/ or VOC2012/ itself)
  JPEGImages/<id>.jpg
  SegmentationClass/<id>.png         palette PNGs: index = class id, 255 = object borders
  ImageSets/Segmentation/{train,val}.txt
  SegmentationClassAug/<id>.png      (SBD-augmented masks, only with use_sbd)
  ImageSets/Segmentation/train_aug.txt
  classes.txt                        optional (written by `synthmask export`): line i+1 names
                                     class id i; without it the 21 VOC classes
```
"""

from __future__ import annotations

import warnings
from pathlib import Path

from synthmask.datamodules.base import SegmentationDataModule, require_dir
from synthmask.datamodules.dataset import MaskReader, SegmentationSample, read_index_mask
from synthmask.datamodules.folder import read_class_names

VOC_CLASS_NAMES: tuple[str, ...] = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat",
    "chair", "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant",
    "sheep", "sofa", "train", "tvmonitor",
)  # fmt: skip

VOC_LAYOUT = (
    "VOCdevkit/VOC2012/{JPEGImages/*.jpg, SegmentationClass/*.png, "
    "ImageSets/Segmentation/{train,val}.txt}; root may be the folder holding VOCdevkit, "
    "VOCdevkit itself, or VOC2012"
)


def find_voc2012(root: Path) -> Path:
    """The VOC2012 folder for a root that is VOC2012, VOCdevkit, or the folder holding VOCdevkit."""
    for candidate in (root, root / "VOC2012", root / "VOCdevkit" / "VOC2012"):
        if (candidate / "JPEGImages").is_dir() or (candidate / "SegmentationClass").is_dir():
            return candidate
    raise FileNotFoundError(
        f"VOCDataModule: wrong layout under {str(root)!r}: none of {str(root)!r}, "
        f"{str(root / 'VOC2012')!r}, {str(root / 'VOCdevkit' / 'VOC2012')!r} contains "
        f"JPEGImages/ or SegmentationClass/. Expected layout: {VOC_LAYOUT}. "
        "Fix: point `root` at the folder that holds VOCdevkit (or at VOCdevkit/VOC2012)."
    )


def read_id_list(path: Path) -> list[str]:
    """Image ids of a split list: one id per line, or DeepLab-style lines
    `/JPEGImages/<id>.jpg /SegmentationClassAug/<id>.png` (the id is the first file's stem)."""
    ids = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if line:
            ids.append(Path(line.split()[0]).stem)
    return ids


class VOCDataModule(SegmentationDataModule):
    """PASCAL VOC 2012: 21 classes (background + 20 objects), 255 = border/ignore; a
    ``classes.txt`` beside JPEGImages/ (a `synthmask export` of another vocabulary) names them.

    Args:
        root: folder holding VOCdevkit, or VOCdevkit, or VOCdevkit/VOC2012.
        use_sbd: train on the SBD-augmented list (10,582 images as commonly distributed) with
            masks from `sbd_mask_dir`; val images are removed from it.
        sbd_mask_dir: folder (relative to VOC2012) of the augmented masks.
        sbd_train_list: train list (relative to VOC2012) for `use_sbd`.
        train_split, val_split: names of the lists in ImageSets/Segmentation.
        **kwargs: `loader`, `augment` and val options of `SegmentationDataModule`.
    """

    layout_hint = VOC_LAYOUT
    mask_fix_hint = (
        "VOC masks hold ids 0..20 and 255 (borders); make sure the masks are VOC "
        "SegmentationClass(Aug) PNGs, not SegmentationObject instance masks or colour images."
    )

    def __init__(
        self,
        root: str,
        use_sbd: bool = False,
        sbd_mask_dir: str = "SegmentationClassAug",
        sbd_train_list: str = "ImageSets/Segmentation/train_aug.txt",
        train_split: str = "train",
        val_split: str = "val",
        **kwargs,
    ) -> None:
        super().__init__(root=root, **kwargs)
        self.voc_dir = find_voc2012(self.root)
        self.use_sbd = use_sbd
        self.split_lists = {
            "train": self.voc_dir / "ImageSets" / "Segmentation" / f"{train_split}.txt",
            "val": self.voc_dir / "ImageSets" / "Segmentation" / f"{val_split}.txt",
        }
        self.mask_dirs = {"train": self.voc_dir / "SegmentationClass"}
        self.mask_dirs["val"] = self.mask_dirs["train"]
        if use_sbd:
            self.split_lists["train"] = self.voc_dir / sbd_train_list
            self.mask_dirs["train"] = require_dir(
                self.voc_dir / sbd_mask_dir,
                "VOCDataModule",
                "SBD-augmented masks for use_sbd=true",
                f"VOC2012/{sbd_mask_dir}/<id>.png beside JPEGImages/, and {sbd_train_list}",
            )
        require_dir(self.voc_dir / "JPEGImages", "VOCDataModule", "the images", VOC_LAYOUT)
        require_dir(self.mask_dirs["val"], "VOCDataModule", "the class masks", VOC_LAYOUT)
        classes_file = self.voc_dir / "classes.txt"
        self._class_names = (
            read_class_names(classes_file) if classes_file.is_file() else list(VOC_CLASS_NAMES)
        )

    @property
    def class_names(self) -> list[str]:
        return list(self._class_names)

    def find_samples(self, split: str) -> list[SegmentationSample]:
        list_path = self.split_lists[split]
        if not list_path.is_file():
            if split == "train" and self.use_sbd:
                fix = " plus the SBD train list (set `sbd_train_list` to its path)."
            elif (self.voc_dir / "classes.txt").is_file():  # a `synthmask export`
                fix = ". Fix: rerun `synthmask export` (it writes train.txt and val.txt)."
            else:
                fix = ". Fix: restore the ImageSets folder from the VOC2012 tar."
            raise FileNotFoundError(
                f"VOCDataModule: split list {str(list_path)!r} is missing. Expected layout: "
                f"{VOC_LAYOUT}{fix}"
            )
        ids = read_id_list(list_path)
        if split == "train" and self.use_sbd:
            val_ids = set(read_id_list(self.split_lists["val"]))
            overlap = [i for i in ids if i in val_ids]
            if overlap:
                warnings.warn(
                    f"{list_path} contains {len(overlap)} val images; they were removed from "
                    "the train set.",
                    stacklevel=2,
                )
                ids = [i for i in ids if i not in val_ids]
        return [
            SegmentationSample(
                name=i,
                image_path=self.voc_dir / "JPEGImages" / f"{i}.jpg",
                mask_path=self.mask_dirs[split] / f"{i}.png",
            )
            for i in ids
        ]

    def empty_split_hint(self, split: str) -> str:
        return (
            f"{self.split_lists[split]} lists no image ids. Fix: put one image id per line "
            "(e.g. 2007_000032) in that file, or choose another list with train_split/val_split."
        )

    def mask_reader(self) -> MaskReader:
        return read_index_mask
