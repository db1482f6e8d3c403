"""ShapesWorldDataModule: real rendered shapes-world scenes with exact masks (the embedded data set)."""

from __future__ import annotations

from lightning.pytorch import LightningDataModule
from torch.utils.data import DataLoader

from synthmask.datamodules.loaders import build_loader
from synthmask.world import SceneConfig, ShapesSegmentationDataset, ShapesWorld, get_domain
from synthmask.world.shapes import class_names as world_class_names

SPLITS = ("train", "val", "test")


def scene_config_from_args(
    scene: SceneConfig | None,
    image_size: int | None,
    min_objects: int | None,
    max_objects: int | None,
) -> SceneConfig:
    """`scene` (default SceneConfig()) with the shortcut arguments that are not None applied."""
    base = scene if scene is not None else SceneConfig()
    return base.with_overrides(
        image_size=image_size, min_objects=min_objects, max_objects=max_objects
    )


class ShapesWorldDataModule(LightningDataModule):
    """Rendered shapes-world scenes for segmentation, per the batch contract.

    Scene i of a split is rendered from a seed fixed by (base_seed, split, i); train, val and
    test seeds never coincide. Batches: "image" float32 (B, 3, H, W) (ImageNet-normalized when
    `normalize`), "mask" int64 (B, H, W) class ids (0 background, shapes 1..K), "name" list[str].

    Args:
        domain: "source" or "target" (see synthmask.world.DOMAINS).
        image_size, min_objects, max_objects: shortcuts overriding the same fields of `scene`
            (None keeps the scene's value).
        scene: the full SceneConfig (shapes, sizes, occlusion, backgrounds, captions).
        n_train, n_val, n_test: scenes per split.
        base_seed: seed of the whole data set.
        batch_size, val_batch_size: loader batch sizes (val default = batch_size).
        num_workers: DataLoader workers (persistent when > 0).
        normalize: ImageNet mean/std normalization (else pixels in [0, 1]).
        hflip: random horizontal flips in training.
        cache: keep rendered scenes in memory (each is rendered once, on first access).
    """

    def __init__(
        self,
        domain: str = "source",
        image_size: int | None = None,
        min_objects: int | None = None,
        max_objects: int | None = None,
        scene: SceneConfig | None = None,
        n_train: int = 2000,
        n_val: int = 200,
        n_test: int = 200,
        base_seed: int = 0,
        batch_size: int = 16,
        val_batch_size: int | None = None,
        num_workers: int = 0,
        normalize: bool = True,
        hflip: bool = False,
        cache: bool = True,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.domain = get_domain(domain).name
        self.scene_config = scene_config_from_args(scene, image_size, min_objects, max_objects)
        for name, n in (("n_train", n_train), ("n_val", n_val), ("n_test", n_test)):
            if n < 1:
                raise ValueError(f"ShapesWorldDataModule.{name}={n}; every split needs >= 1 scene.")
        self.sizes = {"train": n_train, "val": n_val, "test": n_test}
        self.base_seed = base_seed
        self.batch_size = batch_size
        self.val_batch_size = val_batch_size or batch_size
        self.num_workers = num_workers
        self.normalize = normalize
        self.hflip = hflip
        self.cache = cache
        self.datasets: dict[str, ShapesSegmentationDataset] = {}

    @property
    def class_names(self) -> list[str]:
        """["background", *shapes]; index = class id."""
        return world_class_names(self.scene_config.shapes)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def world(self, split: str) -> ShapesWorld:
        """The scenes of one split ("train", "val" or "test")."""
        if split not in SPLITS:
            raise KeyError(f"unknown split {split!r}; valid splits: {', '.join(SPLITS)}")
        return ShapesWorld(self.sizes[split], self.scene_config, self.domain, split, self.base_seed)

    def setup(self, stage: str | None = None) -> None:
        wanted = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",)}.get(
            stage or "", SPLITS
        )
        for split in wanted:
            if split not in self.datasets:
                self.datasets[split] = ShapesSegmentationDataset(
                    self.world(split),
                    normalize=self.normalize,
                    hflip=self.hflip and split == "train",
                    cache=self.cache,
                )

    def _loader(self, split: str, batch_size: int, shuffle: bool) -> DataLoader:
        if split not in self.datasets:
            self.setup({"train": "fit", "val": "validate", "test": "test"}[split])
        return build_loader(self.datasets[split], batch_size, shuffle, self.num_workers)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", self.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", self.val_batch_size, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", self.val_batch_size, shuffle=False)
