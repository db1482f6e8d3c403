"""UnlabeledImagesDataModule: images without labels + one caption, for LoRA domain adaptation.

Two layouts:
- ``layout="folder"``: every image under ``root`` (recursive; png/jpg/jpeg/webp/bmp).
- ``layout="cityscapes"``: ``<root>/leftImg8bit/<split>/<city>/*_leftImg8bit.png``.

Batches: ``pixel_values`` float32 (B, 3, R, R) in [-1, 1] (resized so the short side is R,
then center- or random-cropped), ``caption`` list[str], ``name`` list[str] (relative paths).
No ``mask``: this is not a segmentation data module.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import LightningDataModule
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import v2

from synthmask.datamodules.base import require_dir, require_root

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
LAYOUTS = ("folder", "cityscapes")
CITYSCAPES_IMAGES_LAYOUT = "<root>/leftImg8bit/<split>/<city>/*_leftImg8bit.png"


def list_images(folder: Path, extensions: tuple[str, ...] = IMAGE_EXTENSIONS) -> list[Path]:
    """All image files under ``folder`` (recursive), sorted for a deterministic order."""
    exts = {e.lower() for e in extensions}
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in exts)


def diffusion_image_transform(resolution: int, center_crop: bool = True, random_flip: bool = False):
    """PIL RGB image -> float32 (3, R, R) in [-1, 1] (diffusers' text-to-image recipe)."""
    crop = v2.CenterCrop(resolution) if center_crop else v2.RandomCrop(resolution)
    steps = [
        v2.PILToTensor(),
        v2.Resize(resolution, interpolation=v2.InterpolationMode.BILINEAR, antialias=True),
        crop,
    ]
    if random_flip:
        steps.append(v2.RandomHorizontalFlip())
    steps += [v2.ToDtype(torch.float32, scale=True), v2.Normalize([0.5] * 3, [0.5] * 3)]
    return v2.Compose(steps)


class UnlabeledImageDataset(Dataset):
    """Image files + one caption each (the same template for all)."""

    def __init__(self, paths: list[Path], root: Path, caption: str, transform) -> None:
        self.paths = paths
        self.root = root
        self.caption = caption
        self.transform = transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> dict[str, Any]:
        path = self.paths[index]
        with Image.open(path) as image:
            pixels = self.transform(image.convert("RGB"))
        return {
            "pixel_values": pixels,
            "caption": self.caption,
            "name": path.relative_to(self.root).as_posix(),
        }


class UnlabeledImagesDataModule(LightningDataModule):
    """Unlabeled target-domain images with one generic caption (e.g. Cityscapes train images).

    Args:
        root: image folder (``layout="folder"``) or Cityscapes root (``layout="cityscapes"``).
        caption: the caption of every image, e.g. "a photo of a street scene, cityscapes".
        layout: "folder" (recursive) or "cityscapes" (``leftImg8bit/<split>``).
        split: Cityscapes split to read ("train" by default; ignored for folders).
        resolution: output side length (the model's image size: 512 for SD 1.5).
        center_crop: center crop (else random crop) after resizing the short side.
        random_flip: random horizontal flip.
        max_images: use only the first n images (sorted by path), None = all.
        batch_size, num_workers: DataLoader settings.
    """

    def __init__(
        self,
        root: str,
        caption: str = "a photo",
        layout: str = "folder",
        split: str = "train",
        resolution: int = 512,
        center_crop: bool = True,
        random_flip: bool = True,
        max_images: int | None = None,
        batch_size: int = 4,
        num_workers: int = 2,
    ) -> None:
        super().__init__()
        if layout not in LAYOUTS:
            raise ValueError(f"unknown layout {layout!r}; choose one of {LAYOUTS}.")
        if resolution < 8:
            raise ValueError(f"resolution must be >= 8 pixels, got {resolution}.")
        if not caption.strip():
            raise ValueError("caption is empty; give a generic caption such as 'a photo'.")
        if max_images is not None and max_images < 1:
            raise ValueError(f"max_images must be >= 1 or None, got {max_images}.")
        self.save_hyperparameters()
        self.root = require_root(root, type(self).__name__, self._layout_hint(layout))
        self.layout = layout
        self.split = split
        self.caption = caption
        self.resolution = resolution
        self.center_crop = center_crop
        self.random_flip = random_flip
        self.max_images = max_images
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.image_dir = self._image_dir()
        self.paths = self._find_images()
        self.train_dataset: UnlabeledImageDataset | None = None

    @staticmethod
    def _layout_hint(layout: str) -> str:
        if layout == "cityscapes":
            return CITYSCAPES_IMAGES_LAYOUT
        return f"any folder with {'/'.join(IMAGE_EXTENSIONS)} images, searched recursively"

    def _image_dir(self) -> Path:
        if self.layout == "folder":
            return self.root
        left = require_dir(
            self.root / "leftImg8bit", type(self).__name__, "Cityscapes images",
            CITYSCAPES_IMAGES_LAYOUT,
        )  # fmt: skip
        return require_dir(
            left / self.split, type(self).__name__, f"the '{self.split}' split",
            CITYSCAPES_IMAGES_LAYOUT,
        )  # fmt: skip

    def _find_images(self) -> list[Path]:
        paths = list_images(self.image_dir)
        if self.layout == "cityscapes":
            paths = [p for p in paths if p.name.endswith("_leftImg8bit.png")]
        if not paths:
            raise FileNotFoundError(
                f"{type(self).__name__}: no images found under {str(self.image_dir)!r} "
                f"(expected {self._layout_hint(self.layout)}). Fix: point `root` at a folder "
                "that holds the target-domain images."
            )
        return paths[: self.max_images] if self.max_images else paths

    def setup(self, stage: str | None = None) -> None:
        transform = diffusion_image_transform(self.resolution, self.center_crop, self.random_flip)
        self.train_dataset = UnlabeledImageDataset(
            self.paths, self.image_dir, self.caption, transform
        )

    def train_dataloader(self) -> DataLoader:
        if self.train_dataset is None:
            self.setup("fit")
        return DataLoader(
            self.train_dataset,
            batch_size=self.batch_size,
            shuffle=True,
            num_workers=self.num_workers,
            drop_last=len(self.train_dataset) > self.batch_size,
            persistent_workers=self.num_workers > 0,
        )
