"""ShapesCaptionDataModule: captioned shapes-world images for text-to-image (tiny LDM) training."""

from __future__ import annotations

from lightning.pytorch import LightningDataModule
from torch.utils.data import DataLoader

from synthmask.datamodules.loaders import build_loader
from synthmask.datamodules.shapes_world import scene_config_from_args
from synthmask.world import (
    SceneConfig,
    ShapesCaptionDataset,
    ShapesWorld,
    collate_captions,
    get_domain,
)
from synthmask.world.shapes import class_names as world_class_names


class ShapesCaptionDataModule(LightningDataModule):
    """Batches {"image" float32 (B, 3, H, W) in [-1, 1], "caption" list[str], "prompt"
    list[Prompt], "mask" int64 (B, H, W)}; scenes rendered on the fly (each index a fixed seed).

    Args:
        domain: "source" (what the LDM is trained on) or "target" (e.g. LoRA adaptation images).
        image_size, min_objects, max_objects: shortcuts overriding the same fields of `scene`.
        scene: full SceneConfig (captions via `scene.captions`, e.g. synonym_prob).
        n_train, n_val: scenes per split (rendering is cheap: a large n_train gives fresh scenes).
        base_seed, batch_size, num_workers: as usual; the train loader is shuffled, val is not.
    """

    def __init__(
        self,
        domain: str = "source",
        image_size: int | None = None,
        min_objects: int | None = None,
        max_objects: int | None = None,
        scene: SceneConfig | None = None,
        n_train: int = 100_000,
        n_val: int = 64,
        base_seed: int = 0,
        batch_size: int = 16,
        num_workers: int = 0,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.domain = get_domain(domain).name
        self.scene_config = scene_config_from_args(scene, image_size, min_objects, max_objects)
        if n_train < 1 or n_val < 1:
            raise ValueError(
                f"ShapesCaptionDataModule n_train={n_train}, n_val={n_val}; both need >= 1 scene."
            )
        self.sizes = {"train": n_train, "val": n_val}
        self.base_seed = base_seed
        self.batch_size = batch_size
        self.num_workers = num_workers

    @property
    def class_names(self) -> list[str]:
        return world_class_names(self.scene_config.shapes)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def dataset(self, split: str) -> ShapesCaptionDataset:
        if split not in self.sizes:
            raise KeyError(f"unknown split {split!r}; valid splits: {', '.join(self.sizes)}")
        world = ShapesWorld(
            self.sizes[split], self.scene_config, self.domain, split, self.base_seed
        )
        return ShapesCaptionDataset(world)

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        return build_loader(
            self.dataset(split),
            self.batch_size,
            shuffle,
            self.num_workers,
            collate_fn=collate_captions,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)
