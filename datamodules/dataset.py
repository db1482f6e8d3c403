"""A map-style dataset of (image file, mask file) pairs with checks, plus its collate function.

Each data set (VOC, Cityscapes, ImageNet-S, folders) only lists its samples and says how to
decode a mask file into class ids; reading, checking, augmenting and batching live here.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import albumentations as A
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import Dataset, get_worker_info

from synthmask.datamodules.transforms import IGNORE_INDEX

MaskReader = Callable[[Path], np.ndarray]


@dataclass(frozen=True)
class SegmentationSample:
    """One image and its mask on disk; `name` is the id used in batches and logs."""

    name: str
    image_path: Path
    mask_path: Path


def read_rgb_image(path: Path) -> np.ndarray:
    """Read an image file as RGB uint8.

    Shape:
        returns (H, W, 3) uint8.
    """
    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"))
    except FileNotFoundError:
        raise
    except OSError as err:  # UnidentifiedImageError, truncated files
        raise _unreadable(path, "image", err) from err


def _unreadable(path: Path, what: str, err: OSError) -> OSError:
    return OSError(
        f"cannot read the {what} file {path} ({err}); it is corrupt or not an image. "
        f"Fix: replace it, or remove it together with its {'mask' if what == 'image' else 'image'}."
    )


def read_index_mask(path: Path) -> np.ndarray:
    """Read a mask PNG that stores class ids: palette ("P", the ids are the palette indices),
    grayscale ("L") or 16-bit ("I;16"/"I"). Colour (RGB) masks are refused: colours are not ids.

    Shape:
        returns (H, W) uint8 (or int32 for 16/32-bit PNGs).
    """
    try:
        mask = Image.open(path)
        mask.load()
    except FileNotFoundError:
        raise
    except OSError as err:
        raise _unreadable(path, "mask", err) from err
    with mask:
        if mask.mode in ("P", "L"):
            return np.asarray(mask)  # "P": np.asarray gives palette indices, not colours
        if mask.mode in ("I;16", "I;16B", "I;16L", "I"):
            return np.asarray(mask).astype(np.int32)
        raise ValueError(
            f"mask {path} is a {mask.mode} image, but masks must store one class id per pixel "
            "(a palette 'P' PNG like VOC's SegmentationClass, or a single-channel 'L' PNG). "
            "Fix: convert the colour mask to class ids (e.g. map each palette colour to its "
            "index) and save it as a palette or grayscale PNG."
        )


def check_mask_values(
    mask: np.ndarray,
    num_classes: int,
    mask_path: Path,
    fix_hint: str,
    ignore_index: int = IGNORE_INDEX,
) -> None:
    """Raise ValueError naming the file, the bad ids and the valid range if any id is outside
    0..num_classes-1 and is not `ignore_index`.

    Shape:
        mask (H, W) integer ids.
    """
    valid = ((mask >= 0) & (mask < num_classes)) | (mask == ignore_index)
    if valid.all():
        return
    bad = np.unique(mask[~valid])
    shown = ", ".join(str(v) for v in bad[:12].tolist()) + (" ..." if bad.size > 12 else "")
    raise ValueError(
        f"mask {mask_path} has class ids {{{shown}}} outside the valid range "
        f"0..{num_classes - 1} ({num_classes} classes) plus {ignore_index} = ignore. "
        f"Fix: {fix_hint}"
    )


def check_same_size(image: np.ndarray, mask: np.ndarray, sample: SegmentationSample) -> None:
    """Raise ValueError naming both files and both sizes when the mask is not the image's size."""
    if image.shape[:2] == mask.shape[:2]:
        return
    (ih, iw), (mh, mw) = image.shape[:2], mask.shape[:2]
    raise ValueError(
        f"image/mask size mismatch for sample '{sample.name}': image {sample.image_path} is "
        f"{iw}x{ih} (WxH) but mask {sample.mask_path} is {mw}x{mh}. Fix: save the mask at the "
        "image's size (nearest-neighbour resize, so ids are not blended) or drop the pair from "
        "the split."
    )


class SegmentationFileDataset(Dataset):
    """Reads, checks and transforms (image, mask) file pairs.

    Items follow the batch contract: {"image": float32 (3, H, W), "mask": int64 (H, W), "name": str}.
    A mask is checked when its sample is read: same size as the image, ids in 0..C-1 or 255.
    """

    def __init__(
        self,
        samples: Sequence[SegmentationSample],
        num_classes: int,
        read_mask: MaskReader,
        transform: A.Compose,
        mask_fix_hint: str,
    ) -> None:
        self.samples = list(samples)
        self.num_classes = num_classes
        self.read_mask = read_mask
        self.transform = transform
        self.mask_fix_hint = mask_fix_hint
        # albumentations 2.x draws from the Compose's own generator, seeded here from torch so
        # `seed_everything` makes augmentation reproducible; workers reseed in `seed_worker`.
        self.reseed(torch.initial_seed())

    def reseed(self, seed: int) -> None:
        """Give the augmentation pipeline its own random stream derived from `seed`."""
        rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else 0
        state = np.random.SeedSequence([seed % 2**63, rank]).generate_state(1)[0]
        self.transform.set_random_seed(int(state))

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict[str, Any]:
        sample = self.samples[index]
        image = read_rgb_image(sample.image_path)
        mask = self.read_mask(sample.mask_path)
        check_same_size(image, mask, sample)
        check_mask_values(mask, self.num_classes, sample.mask_path, self.mask_fix_hint)
        # uint8 / uint16 masks go through OpenCV resizes and borders unchanged (no int64 there).
        mask = mask.astype(np.uint8 if self.num_classes < IGNORE_INDEX else np.uint16)
        out = self.transform(image=image, mask=mask)
        return {
            "image": out["image"].float(),
            "mask": torch.as_tensor(np.asarray(out["mask"]).astype(np.int64)),
            "name": sample.name,
        }


def seed_worker(worker_id: int) -> None:
    """DataLoader `worker_init_fn`: without it every forked worker would repeat the same
    augmentations (the transform's generator is copied into each worker)."""
    info = get_worker_info()
    if info is not None and isinstance(info.dataset, SegmentationFileDataset):
        info.dataset.reseed(torch.initial_seed())


def pad_collate(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack items into a batch, padding images (0) and masks (255) at the bottom/right to the
    largest height/width in the batch; strings become lists.

    Shape:
        items: "image" (3, H_i, W_i), "mask" (H_i, W_i); returns "image" (B, 3, H, W),
        "mask" (B, H, W) with H = max H_i, W = max W_i.
    """
    batch: dict[str, Any] = {}
    height = max(item["image"].shape[-2] for item in items)
    width = max(item["image"].shape[-1] for item in items)
    for key, first in items[0].items():
        values = [item[key] for item in items]
        if not isinstance(first, torch.Tensor):
            batch[key] = values
            continue
        fill = IGNORE_INDEX if key == "mask" else 0
        padded = [
            F.pad(v, (0, width - v.shape[-1], 0, height - v.shape[-2]), value=fill)
            if v.dim() >= 2 and v.shape[-2:] != (height, width)
            else v
            for v in values
        ]
        batch[key] = torch.stack(padded)
    return batch
