"""Tiny data sets written in the real on-disk layouts of VOC, Cityscapes, ImageNet-S and folders.

Scenes are coloured shapes on a flat background; a pixel's colour is set by its class, so a small
net can learn them. Everything is deterministic given `seed`. Use in tests:
`from fixtures_datasets import make_voc` (pytest puts tests/ on sys.path); importing
`voc_root_fixture` (etc.) into a test module makes the pytest fixture `voc_root` available.
"""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

IGNORE = 255
BACKGROUND_COLOUR = (40, 40, 40)
IGNORE_COLOUR = (128, 128, 128)


def voc_palette() -> list[int]:
    """The standard PASCAL VOC colour map (bit-interleaved), flattened for PIL.putpalette."""
    palette = []
    for index in range(256):
        r = g = b = 0
        c = index
        for bit in range(8):
            r |= ((c >> 0) & 1) << (7 - bit)
            g |= ((c >> 1) & 1) << (7 - bit)
            b |= ((c >> 2) & 1) << (7 - bit)
            c >>= 3
        palette += [r, g, b]
    return palette


def class_colour(class_id: int) -> tuple[int, int, int]:
    """A bright, distinct, deterministic RGB colour per class id (golden-angle hues)."""
    hue = (class_id * 0.618034) % 1.0
    sector, frac = divmod(hue * 6.0, 1.0)
    up, down = int(55 + 200 * frac), int(255 - 200 * frac)
    table = [(255, up, 55), (down, 255, 55), (55, 255, up), (55, down, 255), (up, 55, 255)]
    table.append((255, 55, down))
    return table[int(sector) % 6]


def draw_objects(
    rng: np.random.Generator,
    ids: np.ndarray,
    class_ids: Sequence[int],
    num_objects: int,
) -> None:
    """Paint `num_objects` shapes with ids drawn from `class_ids` into `ids`: odd ids are
    ellipses, even ids rectangles (so shape and colour both tell the class).

    Shape:
        ids (H, W) integer, modified in place.
    """
    height, width = ids.shape
    yy, xx = np.mgrid[:height, :width]
    for _ in range(num_objects):
        class_id = int(rng.choice(class_ids))
        h = int(rng.integers(height // 4, height // 2 + 1))
        w = int(rng.integers(width // 4, width // 2 + 1))
        top = int(rng.integers(0, height - h + 1))
        left = int(rng.integers(0, width - w + 1))
        if class_id % 2 == 0:
            inside = (yy >= top) & (yy < top + h) & (xx >= left) & (xx < left + w)
        else:
            cy, cx = top + h / 2, left + w / 2
            inside = ((yy - cy) / (h / 2)) ** 2 + ((xx - cx) / (w / 2)) ** 2 <= 1.0
        ids[inside] = class_id


def add_borders(ids: np.ndarray, background_id: int = 0, width: int = 1) -> np.ndarray:
    """VOC-style ignore borders: object pixels within `width` of a class boundary become 255.

    Shape:
        ids (H, W); returns a new (H, W) array of the same dtype.
    """
    out = ids.copy()
    edge = np.zeros(ids.shape, dtype=bool)
    for value in np.unique(ids):
        region = ids == value
        edge |= region & ~ndimage.binary_erosion(region, iterations=width, border_value=1)
    # Only the object side of a boundary becomes ignore; the background keeps its pixels.
    out[edge & (ids != background_id)] = IGNORE
    return out


def render(ids: np.ndarray, rng: np.random.Generator, colour_of: dict[int, tuple]) -> np.ndarray:
    """RGB image whose pixel colour is the class colour (+ small noise).

    Shape:
        ids (H, W); returns (H, W, 3) uint8.
    """
    image = np.zeros((*ids.shape, 3), dtype=np.int16)
    for value in np.unique(ids):
        image[ids == value] = colour_of.get(int(value), IGNORE_COLOUR)
    image += rng.integers(-8, 9, size=image.shape, dtype=np.int16)
    return np.clip(image, 0, 255).astype(np.uint8)


def scene(
    rng: np.random.Generator,
    size: tuple[int, int],
    background_id: int,
    class_ids: Sequence[int],
    num_objects: int = 2,
) -> np.ndarray:
    """Class ids of one scene: a background id with shapes on top. Shape: returns (H, W) int64."""
    ids = np.full(size, background_id, dtype=np.int64)
    draw_objects(rng, ids, class_ids, num_objects)
    return ids


def save_palette_png(ids: np.ndarray, path: Path) -> None:
    """Save class ids as a VOC palette ("P") PNG."""
    image = Image.fromarray(ids.astype(np.uint8), mode="P")
    image.putpalette(voc_palette())
    image.save(path)


# ---- PASCAL VOC -----------------------------------------------------------------------------
def make_voc(
    root: Path,
    n_train: int = 4,
    n_val: int = 2,
    size: tuple[int, int] = (48, 64),
    class_ids: Sequence[int] = (1, 8, 15),
    with_sbd: bool = False,
    seed: int = 0,
) -> Path:
    """Write root/VOCdevkit/VOC2012 with JPEG images, palette PNG masks (255 borders) and
    ImageSets/Segmentation/{train,val}.txt; with_sbd adds SegmentationClassAug (grayscale PNGs)
    and train_aug.txt (train + 2 extra ids + one val id, as the common list overlaps nothing but
    tests the filter). `size` is (height, width). Returns `root` (the folder holding VOCdevkit)."""
    rng = np.random.default_rng(seed)
    voc = Path(root) / "VOCdevkit" / "VOC2012"
    for sub in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (voc / sub).mkdir(parents=True, exist_ok=True)
    colours = {0: BACKGROUND_COLOUR} | {c: class_colour(c) for c in class_ids}
    ids_per_split = {
        "train": [f"2008_{i:06d}" for i in range(n_train)],
        "val": [f"2009_{i:06d}" for i in range(n_val)],
    }
    extra = [f"2010_{i:06d}" for i in range(2)] if with_sbd else []
    for name in ids_per_split["train"] + ids_per_split["val"] + extra:
        ids = scene(rng, size, 0, class_ids)
        Image.fromarray(render(ids, rng, colours)).save(
            voc / "JPEGImages" / f"{name}.jpg", quality=95
        )
        mask = add_borders(ids)
        if name not in extra:
            save_palette_png(mask, voc / "SegmentationClass" / f"{name}.png")
        if with_sbd:
            (voc / "SegmentationClassAug").mkdir(exist_ok=True)
            Image.fromarray(mask.astype(np.uint8), mode="L").save(
                voc / "SegmentationClassAug" / f"{name}.png"
            )
    for split, names in ids_per_split.items():
        (voc / "ImageSets/Segmentation" / f"{split}.txt").write_text("\n".join(names) + "\n")
    if with_sbd:
        aug = ids_per_split["train"] + extra + ids_per_split["val"][:1]
        lines = [f"/JPEGImages/{n}.jpg /SegmentationClassAug/{n}.png" for n in aug]
        (voc / "ImageSets/Segmentation/train_aug.txt").write_text("\n".join(lines) + "\n")
    return Path(root)


# ---- Cityscapes -----------------------------------------------------------------------------
# label id -> colour drawn in the image (by its train id); void ids get one grey.
CITYSCAPES_SCENE_IDS = {"sky": 23, "building": 11, "road": 7, "car": 26, "person": 24}
CITYSCAPES_VOID_IDS = {"unlabeled": 0, "ego vehicle": 1, "static": 4, "parking": 9}
CITYSCAPES_TRAIN_ID = {23: 10, 11: 2, 7: 0, 26: 13, 24: 11}


def make_cityscapes(
    root: Path,
    n_train: int = 2,
    n_val: int = 2,
    size: tuple[int, int] = (32, 64),
    seed: int = 0,
) -> Path:
    """Write root/leftImg8bit/{train,val}/<city>/*_leftImg8bit.png and root/gtFine/... with
    *_gtFine_labelIds.png (incl. void ids 0, 1, 4, 9 and 255 as license plate -1), plus
    *_gtFine_labelTrainIds.png (expected mapping) and *_gtFine_color.png as in the real set.
    Scenes: sky / building / road bands, cars and persons. Returns `root`."""
    rng = np.random.default_rng(seed)
    height, width = size
    colours = {lid: class_colour(tid + 100) for lid, tid in CITYSCAPES_TRAIN_ID.items()}
    cities = {"train": ["aachen", "bochum"], "val": ["frankfurt"]}
    for split, count in (("train", n_train), ("val", n_val)):
        for index in range(count):
            city = cities[split][index % len(cities[split])]
            name = f"{city}_{index:06d}_{19 + index:06d}"
            ids = np.full(size, 11, dtype=np.int64)  # building
            ids[: height // 4] = 23  # sky
            ids[height // 2 :] = 7  # road
            draw_objects(rng, ids[height // 4 :], (26, 24), 2)
            ids[-2:] = 1  # ego vehicle (void)
            ids[height // 2 : height // 2 + 2, : width // 4] = 9  # parking (void)
            ids[:2, :2] = 0  # unlabeled
            ids[height // 4, -4:] = 4  # static
            ids[-4:-2, width // 2 : width // 2 + 3] = 255  # license plate (id -1 as uint8)
            train_ids = np.full(size, IGNORE, dtype=np.uint8)
            for lid, tid in CITYSCAPES_TRAIN_ID.items():
                train_ids[ids == lid] = tid
            image_dir = Path(root) / "leftImg8bit" / split / city
            gt_dir = Path(root) / "gtFine" / split / city
            image_dir.mkdir(parents=True, exist_ok=True)
            gt_dir.mkdir(parents=True, exist_ok=True)
            Image.fromarray(render(ids, rng, colours)).save(image_dir / f"{name}_leftImg8bit.png")
            Image.fromarray(ids.astype(np.uint8), mode="L").save(
                gt_dir / f"{name}_gtFine_labelIds.png"
            )
            Image.fromarray(train_ids, mode="L").save(gt_dir / f"{name}_gtFine_labelTrainIds.png")
            colour = render(ids, np.random.default_rng(0), colours)
            Image.fromarray(colour).save(gt_dir / f"{name}_gtFine_color.png")
            (gt_dir / f"{name}_gtFine_polygons.json").write_text(
                json.dumps({"imgHeight": height, "imgWidth": width, "objects": []})
            )
    return Path(root)


# ---- ImageNet-S -----------------------------------------------------------------------------
def imagenet_wnids(count: int) -> list[str]:
    """`count` real ImageNet-1k WordNet ids (sorted), from timm's bundled synset list."""
    # Read the file without importing timm (slow: it imports torch and its model zoo).
    spec = importlib.util.find_spec("timm")
    assert spec is not None and spec.submodule_search_locations, "timm is a synthmask dependency"
    table = Path(next(iter(spec.submodule_search_locations))) / "data/_info/imagenet_synsets.txt"
    return sorted(table.read_text().split())[:count]


def encode_imagenet_s(ids: np.ndarray) -> np.ndarray:
    """ImageNet-S mask encoding: class id -> RGB (id % 256, id // 256, 0).

    Shape:
        ids (H, W) integer; returns (H, W, 3) uint8.
    """
    rgb = np.zeros((*ids.shape, 3), dtype=np.uint8)
    rgb[..., 0] = ids % 256
    rgb[..., 1] = ids // 256
    return rgb


def make_imagenet_s(
    root: Path,
    subset: int = 50,
    class_ids: Sequence[int] = (1, 2, 3),
    n_train_per_class: int = 1,
    n_val_per_class: int = 1,
    size: tuple[int, int] = (40, 48),
    write_categories: bool = True,
    seed: int = 0,
) -> Path:
    """Write root/ImageNetS{subset}/{train-semi, train-semi-segmentation, validation,
    validation-segmentation}/<wnid>/... with RGB masks (class = R + 256 G, 0 = other, a 1000
    ignore ring around each object) and, if asked, root/ImageNetS_categories_im{subset}.txt.
    Each image shows one class (its folder's). Class ids are ImageNet-S ids (1-based, sorted
    wnids). Returns `root`."""
    rng = np.random.default_rng(seed)
    wnids = imagenet_wnids(subset)
    data = Path(root) / f"ImageNetS{subset}"
    colours = {0: BACKGROUND_COLOUR} | {c: class_colour(c) for c in class_ids}
    val_number = 1
    for class_id in class_ids:
        wnid = wnids[class_id - 1]
        for split, count in (("train", n_train_per_class), ("val", n_val_per_class)):
            image_dir, mask_dir = (
                ("train-semi", "train-semi-segmentation")
                if split == "train"
                else ("validation", "validation-segmentation")
            )
            for index in range(count):
                if split == "train":
                    stem = f"{wnid}_{1000 + index}"
                else:
                    stem, val_number = f"ILSVRC2012_val_{val_number:08d}", val_number + 1
                ids = scene(rng, size, 0, (class_id,), num_objects=1)
                ring = add_borders(ids) == IGNORE
                masked = np.where(ring, 1000, ids)
                (data / image_dir / wnid).mkdir(parents=True, exist_ok=True)
                (data / mask_dir / wnid).mkdir(parents=True, exist_ok=True)
                image = Image.fromarray(render(ids, rng, colours))
                image.save(data / image_dir / wnid / f"{stem}.JPEG", format="JPEG", quality=95)
                Image.fromarray(encode_imagenet_s(masked)).save(
                    data / mask_dir / wnid / f"{stem}.png"
                )
    if write_categories:
        # The official list is unsorted for 919 in some copies; write it reversed to prove sorting.
        text = "\n".join(reversed(wnids)) + "\n"
        (Path(root) / f"ImageNetS_categories_im{subset}.txt").write_text(text)
    return Path(root)


# ---- generic folder -------------------------------------------------------------------------
def make_folder_dataset(
    root: Path,
    n_images: int = 8,
    size: tuple[int, int] = (32, 32),
    class_names: Sequence[str] = ("background", "circle", "square"),
    with_splits: bool = False,
    palette_masks: bool = False,
    seed: int = 0,
) -> Path:
    """Write root/images/*.png, root/masks/*.png (grayscale ids, or palette PNGs), classes.txt and,
    if asked, splits/{train,val}.txt (last quarter = val). Class i > 0 is drawn with its own
    colour on a dark background, 1-px 255 borders. Returns `root`."""
    rng = np.random.default_rng(seed)
    root = Path(root)
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(parents=True, exist_ok=True)
    foreground = list(range(1, len(class_names)))
    colours = {0: BACKGROUND_COLOUR} | {c: class_colour(c) for c in foreground}
    stems = [f"img_{i:04d}" for i in range(n_images)]
    for stem in stems:
        ids = scene(rng, size, 0, foreground)
        Image.fromarray(render(ids, rng, colours)).save(root / "images" / f"{stem}.png")
        mask = add_borders(ids)
        if palette_masks:
            save_palette_png(mask, root / "masks" / f"{stem}.png")
        else:
            Image.fromarray(mask.astype(np.uint8), mode="L").save(root / "masks" / f"{stem}.png")
    (root / "classes.txt").write_text("\n".join(class_names) + "\n")
    if with_splits:
        (root / "splits").mkdir(exist_ok=True)
        num_val = max(1, n_images // 4)
        (root / "splits" / "train.txt").write_text("\n".join(stems[:-num_val]) + "\n")
        (root / "splits" / "val.txt").write_text("\n".join(stems[-num_val:]) + "\n")
    return root


# ---- pytest fixtures ------------------------------------------------------------------------
@pytest.fixture(name="voc_root")
def voc_root_fixture(tmp_path: Path) -> Path:
    """A tiny VOC set (4 train, 2 val, 48x64): pass as VOCDataModule(root=...)."""
    return make_voc(tmp_path / "voc")


@pytest.fixture(name="cityscapes_root")
def cityscapes_root_fixture(tmp_path: Path) -> Path:
    """A tiny Cityscapes set (2 train, 2 val, 32x64): pass as CityscapesDataModule(root=...)."""
    return make_cityscapes(tmp_path / "cityscapes")


@pytest.fixture(name="imagenet_s_root")
def imagenet_s_root_fixture(tmp_path: Path) -> Path:
    """A tiny ImageNet-S-50 set (classes 1-3, 1 train + 1 val image each) with its category list."""
    return make_imagenet_s(tmp_path / "imagenet-s")


@pytest.fixture(name="folder_root")
def folder_root_fixture(tmp_path: Path) -> Path:
    """A tiny folder set (8 images 32x32, background/circle/square): FolderSegDataModule(root=...)."""
    return make_folder_dataset(tmp_path / "folder")
