"""Shapes-world scenes as indexable data sets (plain, segmentation tensors, captioned images)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from synthmask.prompt_types import Prompt
from synthmask.world.config import SceneConfig
from synthmask.world.domains import Domain, get_domain
from synthmask.world.render import Scene, render_scene
from synthmask.world.seeds import scene_seed
from synthmask.world.shapes import class_names

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class ShapesWorld:
    """`length` scenes of one split and domain; scene i is rendered from `scene_seed(base_seed, split, i)`.

    Scenes are rendered on access (no state besides the config), so DataLoader workers can share it.
    """

    def __init__(
        self,
        length: int,
        config: SceneConfig | None = None,
        domain: str | Domain = "source",
        split: str = "train",
        base_seed: int = 0,
    ) -> None:
        if length < 0:
            raise ValueError(f"ShapesWorld length={length} is negative; use the number of scenes.")
        self.length = int(length)
        self.config = config or SceneConfig()
        self.domain = get_domain(domain)
        self.split = split
        self.base_seed = int(base_seed)

    @property
    def class_names(self) -> list[str]:
        return class_names(self.config.shapes)

    @property
    def num_classes(self) -> int:
        return len(self.config.shapes) + 1

    def seed(self, index: int) -> int:
        return scene_seed(self.base_seed, self.split, index)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> Scene:
        if not -self.length <= index < self.length:
            raise IndexError(f"scene index {index} out of range for {self.length} scenes")
        return render_scene(self.seed(index % self.length), self.config, self.domain)


def image_to_tensor(image: np.ndarray) -> torch.Tensor:
    """uint8 image to float in [0, 1], channels first.

    Shape:
        (H, W, 3) uint8 -> (3, H, W) float32
    """
    return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float().div_(255.0)


class ShapesSegmentationDataset(Dataset):
    """Segmentation samples per the batch contract: {"image", "mask", "name"}.

    `image` is float32 (3, H, W), ImageNet-normalized when `normalize` (else [0, 1]); `mask` is
    int64 (H, W) class ids. `hflip` mirrors image and mask with probability 0.5 (torch RNG).
    `cache` keeps every rendered scene (uint8, 4 bytes a pixel, allocated up front but filled on
    first access), so epochs after the first cost no rendering. Each DataLoader worker process
    fills its own copy.
    """

    def __init__(
        self, world: ShapesWorld, normalize: bool = True, hflip: bool = False, cache: bool = False
    ) -> None:
        self.world = world
        self.normalize = normalize
        self.hflip = hflip
        self._mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
        self._std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
        self.cache = cache
        if cache:
            n, size = len(world), world.config.image_size
            self._images = np.zeros((n, size, size, 3), dtype=np.uint8)
            self._masks = np.zeros((n, size, size), dtype=np.uint8)
            self._filled = np.zeros(n, dtype=bool)

    def __len__(self) -> int:
        return len(self.world)

    def _arrays(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        if not self.cache:
            scene = self.world[index]
            return scene.image, scene.mask
        if not self._filled[index]:
            scene = self.world[index]
            self._images[index], self._masks[index] = scene.image, scene.mask
            self._filled[index] = True
        return self._images[index], self._masks[index]

    def __getitem__(self, index: int) -> dict[str, Any]:
        image_u8, mask_u8 = self._arrays(index)
        image = image_to_tensor(image_u8)
        mask = torch.from_numpy(mask_u8.astype(np.int64))
        if self.normalize:
            image = (image - self._mean) / self._std
        if self.hflip and bool(torch.rand(()) < 0.5):
            image, mask = image.flip(-1), mask.flip(-1)
        return {"image": image, "mask": mask, "name": f"{self.world.split}_{index:06d}"}


class ShapesCaptionDataset(Dataset):
    """Captioned images for text-to-image training: {"image", "caption", "prompt", "mask"}.

    `image` is float32 (3, H, W) in [-1, 1]; `caption` the text; `prompt` the Prompt (class word
    spans); `mask` int64 (H, W) class ids (for evaluation). No flips: captions name positions.
    Batch with `collate_captions` (the default collate cannot stack Prompt objects).
    """

    def __init__(self, world: ShapesWorld) -> None:
        self.world = world

    def __len__(self) -> int:
        return len(self.world)

    def __getitem__(self, index: int) -> dict[str, Any]:
        scene = self.world[index]
        return {
            "image": image_to_tensor(scene.image) * 2.0 - 1.0,
            "caption": scene.prompt.text,
            "prompt": scene.prompt,
            "mask": torch.from_numpy(scene.mask.astype(np.int64)),
        }


def collate_captions(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack tensors, keep captions and prompts as lists.

    Shape:
        -> image (B, 3, H, W), mask (B, H, W), caption list[str], prompt list[Prompt]
    """
    prompts: list[Prompt] = [s["prompt"] for s in samples]
    return {
        "image": torch.stack([s["image"] for s in samples]),
        "mask": torch.stack([s["mask"] for s in samples]),
        "caption": [s["caption"] for s in samples],
        "prompt": prompts,
    }
