"""ImageNet-S (LUSSeg) semantic segmentation in its official layout and mask encoding.

```
<root>/ImageNetS50/                 (root may also be ImageNetS50/ itself; 300 and 919 alike)
  train-semi/<wnid>/<wnid>_<n>.JPEG
  train-semi-segmentation/<wnid>/<wnid>_<n>.png
  validation/<wnid>/ILSVRC2012_val_<n>.JPEG
  validation-segmentation/<wnid>/ILSVRC2012_val_<n>.png
```
A mask is an RGB PNG with class = R + 256 * G: 0 = other (background), 1..N = the N sorted
WordNet ids of `ImageNetS_categories_im{50,300,919}.txt` (from the LUSSeg/ImageNet-S repo's
data/categories/), 1000 = ignored part (-> 255 here).

Because 255 means "ignore" in batches, subsets with 255 or more categories (300, 919) shift
ImageNet-S ids >= 255 up by one: class 255 is an unused placeholder and ImageNet-S id k >= 255
is class k + 1 (`imagenet_s_id_to_class_id`). ImageNet-S-50 ids are used unchanged.
"""

from __future__ import annotations

import importlib.util
import os
import re
from functools import partial
from pathlib import Path

import numpy as np
from PIL import Image

from synthmask.datamodules.base import SegmentationDataModule, require_dir
from synthmask.datamodules.dataset import MaskReader, SegmentationSample
from synthmask.datamodules.transforms import IGNORE_INDEX

IMAGENET_S_IGNORE_ID = 1000
SUBSETS = (50, 300, 919)
SPLIT_DIRS = {  # split -> (image dir, mask dir)
    "train": ("train-semi", "train-semi-segmentation"),
    "val": ("validation", "validation-segmentation"),
}
PLACEHOLDER_NAME = "<unused: 255 = ignore>"
IMAGE_SUFFIXES = (".jpeg", ".jpg", ".png")
WNID = re.compile(r"^n\d{8}$")
LAYOUT = (
    "<root>/ImageNetS{50,300,919}/{train-semi, train-semi-segmentation, validation, "
    "validation-segmentation}/<wnid>/<file>.{JPEG,png}; root may be the ImageNetS50 folder itself"
)


def parse_categories_file(path: str | Path) -> list[str]:
    """The WordNet ids of an ImageNet-S category list, sorted (ImageNet-S class i = i-th sorted
    id, 1-based). ValueError naming the line if one is not a WordNet id (n########)."""
    wnids = []
    for number, line in enumerate(Path(path).read_text().splitlines(), start=1):
        line = line.strip()
        if not line:
            continue
        if not WNID.match(line):
            raise ValueError(
                f"{path}, line {number}: {line!r} is not a WordNet id like n01443537. Fix: pass "
                "an ImageNet-S category list (data/categories/ImageNetS_categories_im50.txt of "
                "LUSSeg/ImageNet-S), one id per line."
            )
        wnids.append(line)
    return sorted(wnids)


def timm_info_file(name: str) -> Path | None:
    """A WordNet table bundled with timm (timm/data/_info/<name>), found without importing timm
    (which would import torch and all its models); None if timm or the file is absent."""
    spec = importlib.util.find_spec("timm")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / "_info" / name
    return path if path.is_file() else None


def wnid_display_names(wnids: list[str]) -> list[str]:
    """Human-readable names (first WordNet lemma, from timm's bundled ImageNet tables) for WordNet
    ids; the id itself where no name is known. Repeated names get the id appended."""
    lemmas: dict[str, str] = {}
    table = timm_info_file("imagenet_synset_to_lemma.txt")
    if table is not None:
        for line in table.read_text().splitlines():
            wnid, _, lemma = line.partition("\t")
            lemmas[wnid] = lemma.split(",")[0].strip()
    names = [lemmas.get(wnid) or wnid for wnid in wnids]
    counts: dict[str, int] = {}
    for name in names:
        counts[name] = counts.get(name, 0) + 1
    return [
        n if counts[n] == 1 or n == w else f"{n} ({w})" for n, w in zip(names, wnids, strict=True)
    ]


def imagenet_s_id_to_class_id(num_categories: int) -> np.ndarray:
    """Lookup table over ImageNet-S ids 0..1000 -> class ids of this module (255 = ignore).

    Ids above `num_categories` (other than 1000) map to 65535 (invalid; caught when read).
    """
    lookup = np.full(IMAGENET_S_IGNORE_ID + 1, 65535, dtype=np.int64)
    ids = np.arange(num_categories + 1)
    lookup[ids] = np.where(ids >= IGNORE_INDEX, ids + 1, ids) if num_categories >= 255 else ids
    lookup[IMAGENET_S_IGNORE_ID] = IGNORE_INDEX
    return lookup


def decode_imagenet_s_ids(mask: np.ndarray) -> np.ndarray:
    """ImageNet-S ids from an RGB mask: R + 256 * G.

    Shape:
        mask (H, W, 3) or (H, W, 4) uint8, or (H, W) ids already; returns (H, W) int64.
    """
    mask = np.asarray(mask)
    if mask.ndim == 2:
        return mask.astype(np.int64)
    return mask[..., 0].astype(np.int64) + 256 * mask[..., 1].astype(np.int64)


def read_imagenet_s_mask(path: Path, num_categories: int) -> np.ndarray:
    """Read an ImageNet-S mask PNG and return class ids (1000 -> 255, ids >= 255 shifted for the
    300/919 subsets). ValueError naming the file and ids outside 0..N and 1000."""
    with Image.open(path) as image:
        array = np.asarray(image.convert("RGB") if image.mode == "P" else image)
    ids = decode_imagenet_s_ids(array)
    valid = ((ids >= 0) & (ids <= num_categories)) | (ids == IMAGENET_S_IGNORE_ID)
    if not valid.all():
        bad = np.unique(ids[~valid])[:12].tolist()
        raise ValueError(
            f"ImageNet-S mask {path} has ids {bad} (R + 256*G) outside 0..{num_categories} "
            f"(0 = other, {IMAGENET_S_IGNORE_ID} = ignore) for {num_categories} categories. Fix: "
            "use the category list / `subset` that matches these masks (50, 300 or 919)."
        )
    return imagenet_s_id_to_class_id(num_categories)[ids]


def find_dataset_dir(root: Path, subset: int) -> Path:
    """ImageNetS{subset} under root, or root itself when it already is such a folder."""
    named = root / f"ImageNetS{subset}"
    if named.is_dir():
        return named
    if any((root / d).is_dir() for pair in SPLIT_DIRS.values() for d in pair):
        return root
    raise FileNotFoundError(
        f"ImageNetSDataModule: wrong layout under {str(root)!r}: neither {str(named)!r} nor "
        f"{str(root / 'validation-segmentation')!r} exists. Expected layout: {LAYOUT}. Fix: set "
        "`root` to the folder holding ImageNetS50/ (or to ImageNetS50/ itself) and `subset` to "
        "50, 300 or 919."
    )


class ImageNetSDataModule(SegmentationDataModule):
    """ImageNet-S-50/300/919: class 0 = other (background), then the sorted WordNet ids.

    Args:
        root: folder holding ImageNetS{subset}/, or that folder itself.
        subset: 50, 300 or 919.
        categories_file: `ImageNetS_categories_im{subset}.txt`; default: looked for in the data
            folder and its parent, else the sorted <wnid> folder names of the annotated splits
            (used only when there are exactly `subset` of them).
        readable_names: class names as words ("goldfish") instead of WordNet ids.
        **kwargs: `loader`, `augment` and val options of `SegmentationDataModule`.
    """

    layout_hint = LAYOUT
    mask_fix_hint = "use the category list / `subset` that matches these masks."

    def __init__(
        self,
        root: str,
        subset: int = 50,
        categories_file: str | None = None,
        readable_names: bool = True,
        **kwargs,
    ) -> None:
        super().__init__(root=root, **kwargs)
        if subset not in SUBSETS:
            raise ValueError(
                f"subset={subset!r} is not an ImageNet-S subset; use one of {SUBSETS}."
            )
        self.subset = subset
        self.split_dirs = SPLIT_DIRS
        self.data_dir = find_dataset_dir(self.root, subset)
        self.wnids = self._load_wnids(categories_file)
        names = wnid_display_names(self.wnids) if readable_names else list(self.wnids)
        self._class_names = ["other"] + names
        if len(self._class_names) > IGNORE_INDEX:
            self._class_names.insert(IGNORE_INDEX, PLACEHOLDER_NAME)

    def _load_wnids(self, categories_file: str | None) -> list[str]:
        if categories_file is not None:
            path = Path(categories_file).expanduser()
            if not path.is_file():
                raise FileNotFoundError(
                    f"ImageNetSDataModule: categories_file {str(path)!r} does not exist. Fix: "
                    f"download ImageNetS_categories_im{self.subset}.txt from LUSSeg/ImageNet-S "
                    "(data/categories/) and give its path."
                )
            wnids = parse_categories_file(path)
        else:
            name = f"ImageNetS_categories_im{self.subset}.txt"
            found = [p for p in (self.data_dir / name, self.data_dir.parent / name) if p.is_file()]
            wnids = parse_categories_file(found[0]) if found else self._wnids_from_folders()
        if len(wnids) != self.subset:
            raise ValueError(
                f"ImageNetSDataModule: the category list has {len(wnids)} WordNet ids but "
                f"subset={self.subset}. Fix: give ImageNetS_categories_im{self.subset}.txt, or "
                "set `subset` to the list's size."
            )
        return wnids

    def _wnids_from_folders(self) -> list[str]:
        wnids = set()
        for _, mask_dir in SPLIT_DIRS.values():
            if (self.data_dir / mask_dir).is_dir():
                wnids |= {e.name for e in os.scandir(self.data_dir / mask_dir) if e.is_dir()}
        if len(wnids) != self.subset:
            raise FileNotFoundError(
                f"ImageNetSDataModule: no ImageNetS_categories_im{self.subset}.txt in "
                f"{str(self.data_dir)!r} or its parent, and the <wnid> folders there number "
                f"{len(wnids)}, not {self.subset}. Fix: set `categories_file` to "
                f"ImageNetS_categories_im{self.subset}.txt (LUSSeg/ImageNet-S, data/categories/)."
            )
        return sorted(wnids)

    @property
    def class_names(self) -> list[str]:
        return list(self._class_names)

    def find_samples(self, split: str) -> list[SegmentationSample]:
        image_name, mask_name = self.split_dirs[split]
        image_dir = require_dir(self.data_dir / image_name, "ImageNetSDataModule", "images", LAYOUT)
        mask_dir = require_dir(self.data_dir / mask_name, "ImageNetSDataModule", "masks", LAYOUT)
        images = {
            (p.parent.name, p.stem): p
            for p in image_dir.glob("*/*")
            if p.suffix.lower() in IMAGE_SUFFIXES
        }
        samples = []
        for mask_path in sorted(mask_dir.glob("*/*.png")):
            key = (mask_path.parent.name, mask_path.stem)
            image_path = images.get(key, image_dir / key[0] / f"{key[1]}.JPEG")
            samples.append(SegmentationSample(mask_path.stem, image_path, mask_path))
        return samples

    def empty_split_hint(self, split: str) -> str:
        mask_dir = self.data_dir / self.split_dirs[split][1]
        return (
            f"no <wnid>/*.png masks in {mask_dir}. Fix: download the ImageNet-S annotations "
            "(datapreparation_anno.sh of LUSSeg/ImageNet-S) into that folder."
        )

    def mask_reader(self) -> MaskReader:
        return partial(read_imagenet_s_mask, num_categories=len(self.wnids))
