"""Albumentations pipelines for segmentation: train (scale, pad, crop, flip) and validation.

Every parameter is a plain type (int, float, tuple of numbers) so LightningCLI YAML configs can set
it through the data module's init args. Masks are padded with the ignore id (255) and resized with
OpenCV's INTER_NEAREST_EXACT (pixel-centre aligned like INTER_LINEAR for the image; plain
INTER_NEAREST shifts masks by up to a pixel at non-integer scales), so ids are never blended.
"""

from __future__ import annotations

from collections.abc import Sequence

import albumentations as A
import cv2
from albumentations.pytorch import ToTensorV2

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)
IGNORE_INDEX = 255


def crop_hw(crop_size: int | Sequence[int]) -> tuple[int, int]:
    """`crop_size` as (height, width): an int means a square crop, a pair is [height, width]."""
    if isinstance(crop_size, int):
        sizes = (crop_size, crop_size)
    else:
        sizes = tuple(int(s) for s in crop_size)
    if len(sizes) != 2 or min(sizes) <= 0:
        raise ValueError(
            f"crop_size={crop_size!r} is not a positive size; give one int (square crop) "
            "or [height, width], e.g. crop_size: 512 or crop_size: [512, 1024]."
        )
    return sizes[0], sizes[1]


def _check_scale_range(scale_range: Sequence[float]) -> tuple[float, float]:
    if len(scale_range) != 2 or not 0 < scale_range[0] <= scale_range[1]:
        raise ValueError(
            f"scale_range={list(scale_range)!r} is not a range of positive factors; "
            "give [low, high] with 0 < low <= high, e.g. scale_range: [0.5, 2.0]."
        )
    return float(scale_range[0]), float(scale_range[1])


def _pad_bottom_right(height: int, width: int, ignore_index: int) -> A.PadIfNeeded:
    """Pad to at least (height, width) at the bottom/right: image with 0, mask with the ignore id."""
    return A.PadIfNeeded(
        min_height=height,
        min_width=width,
        position="top_left",
        border_mode=cv2.BORDER_CONSTANT,
        fill=0,
        fill_mask=ignore_index,
    )


def _normalize_to_tensor(mean: Sequence[float], std: Sequence[float]) -> list[A.BasicTransform]:
    """uint8 pixels -> (x / 255 - mean) / std -> (3, H, W) float32 tensor (mask as a tensor)."""
    return [A.Normalize(mean=tuple(mean), std=tuple(std), max_pixel_value=255.0), ToTensorV2()]


def build_train_transform(
    crop_size: int | Sequence[int] = 512,
    scale_range: Sequence[float] = (0.5, 2.0),
    hflip_prob: float = 0.5,
    base_size: int | None = None,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    ignore_index: int = IGNORE_INDEX,
    rot90_prob: float = 0.0,
) -> A.Compose:
    """Training pipeline: [resize shorter side to base_size] -> random scale -> pad -> random crop
    -> horizontal flip -> [rotation by a random multiple of 90 degrees] -> normalize -> tensor.

    Padding fills the image with 0 (before normalization) and the mask with `ignore_index`, so
    padded pixels never count in the loss. With chance `rot90_prob` the crop is turned by a random
    multiple of 90 degrees (0, 90, 180 or 270; with the flip at 0.5 and rot90_prob 1 all 8
    symmetries of the square are equally likely), for data whose classes do not depend on
    orientation (the shapes world, aerial or microscopy images; not street scenes). A turn would
    change a non-square crop's shape, so it needs a square crop.

    Shape:
        input image (H, W, 3) uint8 and mask (H, W) integer ids;
        output image (3, crop_h, crop_w) float32 and mask (crop_h, crop_w).
    """
    crop_h, crop_w = crop_hw(crop_size)
    low, high = _check_scale_range(scale_range)
    if not 0.0 <= rot90_prob <= 1.0:
        raise ValueError(f"rot90_prob={rot90_prob}; give a probability in [0, 1] (0 = off).")
    if rot90_prob > 0 and crop_h != crop_w:
        raise ValueError(
            f"rot90_prob={rot90_prob} with the non-square crop {crop_h}x{crop_w}: a 90-degree "
            "turn would change the crop's shape. Fix: use a square crop_size or rot90_prob: 0."
        )
    steps: list[A.BasicTransform] = []
    if base_size is not None:
        steps.append(A.SmallestMaxSize(max_size=int(base_size), interpolation=cv2.INTER_LINEAR))
    if (low, high) != (1.0, 1.0):
        # RandomScale draws a factor 1 + U(limit_low, limit_high), so shift the range by -1.
        steps.append(
            A.RandomScale(
                scale_limit=(low - 1.0, high - 1.0),
                interpolation=cv2.INTER_LINEAR,
                mask_interpolation=cv2.INTER_NEAREST_EXACT,
                p=1.0,
            )
        )
    steps += [
        _pad_bottom_right(crop_h, crop_w, ignore_index),
        A.RandomCrop(height=crop_h, width=crop_w),
        A.HorizontalFlip(p=float(hflip_prob)),
    ]
    if rot90_prob > 0:
        steps.append(A.RandomRotate90(p=float(rot90_prob)))
    steps += _normalize_to_tensor(mean, std)
    return A.Compose(steps)


def build_val_transform(
    resize: int | None = None,
    pad_to: int | Sequence[int] | None = None,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    ignore_index: int = IGNORE_INDEX,
) -> A.Compose:
    """Validation pipeline: [resize longer side to `resize`] -> [pad to `pad_to`] -> normalize.

    With neither option the image keeps its size (the loaders' collate pads a batch to its
    largest image, mask padding = `ignore_index`).

    Shape:
        input image (H, W, 3) uint8 and mask (H, W); output image (3, H', W') float32, mask (H', W').
    """
    steps: list[A.BasicTransform] = []
    if resize is not None:
        steps.append(
            A.LongestMaxSize(
                max_size=int(resize),
                interpolation=cv2.INTER_LINEAR,
                mask_interpolation=cv2.INTER_NEAREST_EXACT,
            )
        )
    if pad_to is not None:
        steps.append(_pad_bottom_right(*crop_hw(pad_to), ignore_index))
    steps += _normalize_to_tensor(mean, std)
    return A.Compose(steps)
