"""Real-layout data modules: VOC, Cityscapes, ImageNet-S, folders; transforms; bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from fixtures_datasets import (
    cityscapes_root_fixture,  # noqa: F401  (pytest fixtures by name: cityscapes_root, ...)
    class_colour,
    encode_imagenet_s,
    folder_root_fixture,  # noqa: F401
    imagenet_s_root_fixture,  # noqa: F401
    make_folder_dataset,
    make_imagenet_s,
    make_voc,
    save_palette_png,
    voc_root_fixture,  # noqa: F401
)
from PIL import Image
from torch.utils.data import SequentialSampler

from synthmask.datamodules.cityscapes import (
    CityscapesDataModule,
    label_ids_to_train_ids,
    read_cityscapes_mask,
)
from synthmask.datamodules.dataset import pad_collate, read_index_mask
from synthmask.datamodules.folder import FolderSegDataModule
from synthmask.datamodules.imagenet_s import (
    PLACEHOLDER_NAME,
    ImageNetSDataModule,
    decode_imagenet_s_ids,
    parse_categories_file,
    read_imagenet_s_mask,
)
from synthmask.datamodules.settings import AugmentConfig, LoaderConfig
from synthmask.datamodules.transforms import IMAGENET_MEAN, IMAGENET_STD, build_train_transform
from synthmask.datamodules.voc import VOC_CLASS_NAMES, VOCDataModule

SMALL = {"loader": LoaderConfig(batch_size=2), "augment": AugmentConfig(crop_size=32)}


def values(mask: torch.Tensor) -> set[int]:
    return set(torch.unique(mask).tolist())


def check_batch(batch: dict, batch_size: int, height: int, width: int) -> None:
    assert batch["image"].shape == (batch_size, 3, height, width)
    assert batch["image"].dtype == torch.float32
    assert batch["mask"].shape == (batch_size, height, width)
    assert batch["mask"].dtype == torch.int64
    assert isinstance(batch["name"], list) and len(batch["name"]) == batch_size


def unnormalize(image: torch.Tensor) -> np.ndarray:
    """(3, H, W) normalized float -> (H, W, 3) float in 0..255."""
    mean = torch.tensor(IMAGENET_MEAN)[:, None, None]
    std = torch.tensor(IMAGENET_STD)[:, None, None]
    return ((image * std + mean) * 255.0).permute(1, 2, 0).numpy()


# ---- VOC ------------------------------------------------------------------------------------
def test_voc_batches_shapes_dtypes_values(voc_root: Path) -> None:
    dm = VOCDataModule(root=str(voc_root), **SMALL)
    assert dm.num_classes == 21 and dm.class_names == list(VOC_CLASS_NAMES)
    assert dm.class_names[0] == "background" and dm.class_names[15] == "person"
    train = next(iter(dm.train_dataloader()))
    check_batch(train, 2, 32, 32)
    assert values(train["mask"]) <= {0, 1, 8, 15, 255}
    val_loader = dm.val_dataloader()
    assert isinstance(val_loader.sampler, SequentialSampler)
    val = next(iter(val_loader))
    check_batch(val, 2, 48, 64)  # no val resize: original size
    assert val["name"] == ["2009_000000", "2009_000001"]
    assert values(val["mask"]) >= {0, 255}
    assert values(val["mask"]) <= {0, 1, 8, 15, 255}


@pytest.mark.parametrize("sub", ["", "VOCdevkit", "VOCdevkit/VOC2012"])
def test_voc_root_may_be_any_level(voc_root: Path, sub: str) -> None:
    dm = VOCDataModule(root=str(voc_root / sub))
    assert dm.voc_dir == voc_root / "VOCdevkit" / "VOC2012"
    assert len(dm.find_samples("train")) == 4


def test_voc_palette_png_read_as_indices(tmp_path: Path) -> None:
    ids = np.array([[0, 1, 15], [20, 255, 8]], dtype=np.uint8)
    save_palette_png(ids, tmp_path / "m.png")
    with Image.open(tmp_path / "m.png") as image:
        assert image.mode == "P"
        assert image.convert("RGB").getpixel((1, 0)) == (128, 0, 0)  # aeroplane colour, id 1
    np.testing.assert_array_equal(read_index_mask(tmp_path / "m.png"), ids)


def test_voc_sbd_train_list(tmp_path: Path) -> None:
    root = make_voc(tmp_path, with_sbd=True)
    dm = VOCDataModule(root=str(root), use_sbd=True)
    with pytest.warns(UserWarning, match="1 val images"):
        names = [s.name for s in dm.find_samples("train")]
    assert names == [f"2008_{i:06d}" for i in range(4)] + ["2010_000000", "2010_000001"]
    assert {s.mask_path.parent.name for s in dm.find_samples("val")} == {"SegmentationClass"}
    with pytest.warns(UserWarning, match="removed from the train set"):
        dm.setup("fit")
    assert {s.mask_path.parent.name for s in dm.datasets["train"].samples} == {
        "SegmentationClassAug"
    }
    assert values(dm.datasets["train"][4]["mask"]) <= {0, 1, 8, 15, 255}


def test_voc_real_samples_conformance(realdata_dir: Path) -> None:
    dm = VOCDataModule(root=str(realdata_dir), loader=LoaderConfig(batch_size=1))
    dm.setup("validate")
    dataset = dm.datasets["val"]
    expected = {
        "2007_000032": {0, 1, 15, 255},
        "2007_000033": {0, 1, 255},
        "2007_000063": {0, 9, 12, 255},
    }
    seen = {}
    for index, sample in enumerate(dataset.samples):
        item = dataset[index]
        raw = np.asarray(Image.open(sample.mask_path))
        np.testing.assert_array_equal(item["mask"].numpy(), raw)  # no resize, exact ids
        assert item["image"].shape[1:] == raw.shape
        seen[item["name"]] = values(item["mask"])
    assert seen == expected


# ---- Cityscapes -----------------------------------------------------------------------------
OFFICIAL_TRAIN_IDS = {  # cityscapesScripts helpers/labels.py: (id, trainId) for ids 0..33
    0: 255, 1: 255, 2: 255, 3: 255, 4: 255, 5: 255, 6: 255, 7: 0, 8: 1, 9: 255, 10: 255,
    11: 2, 12: 3, 13: 4, 14: 255, 15: 255, 16: 255, 17: 5, 18: 255, 19: 6, 20: 7, 21: 8,
    22: 9, 23: 10, 24: 11, 25: 12, 26: 13, 27: 14, 28: 15, 29: 255, 30: 255, 31: 16,
    32: 17, 33: 18,
}  # fmt: skip


def test_cityscapes_id_mapping_matches_official_table(tmp_path: Path) -> None:
    label_ids = np.array(list(OFFICIAL_TRAIN_IDS), dtype=np.int64)
    mapped = label_ids_to_train_ids(label_ids)
    assert mapped.tolist() == list(OFFICIAL_TRAIN_IDS.values())
    # hand-made labelIds image: road, car, unlabeled, license plate (-1 stored as 255 in uint8)
    hand = np.array([[7, 26, 0, 255], [8, 33, 34, 24]], dtype=np.uint8)
    Image.fromarray(hand, mode="L").save(tmp_path / "x_gtFine_labelIds.png")
    from synthmask.datamodules.cityscapes import label_id_lookup

    read = read_cityscapes_mask(tmp_path / "x_gtFine_labelIds.png", label_id_lookup())
    assert read.tolist() == [[0, 13, 255, 255], [1, 18, 255, 11]]
    assert label_ids_to_train_ids(np.array([-1, 300])).tolist() == [255, 255]


def test_cityscapes_batches_and_mapping(cityscapes_root: Path) -> None:
    dm = CityscapesDataModule(root=str(cityscapes_root), **SMALL)
    assert dm.num_classes == 19 and "background" not in dm.class_names
    assert dm.class_names[0] == "road" and dm.class_names[13] == "car"
    check_batch(next(iter(dm.train_dataloader())), 2, 32, 32)
    dm.setup("validate")
    dataset = dm.datasets["val"]
    for index, sample in enumerate(dataset.samples):
        item = dataset[index]
        train_ids_png = str(sample.mask_path).replace("_labelIds", "_labelTrainIds")
        np.testing.assert_array_equal(item["mask"].numpy(), np.asarray(Image.open(train_ids_png)))
        assert values(item["mask"]) <= {0, 2, 10, 11, 13, 255} and 255 in values(item["mask"])
        assert item["name"].startswith("frankfurt_")


# ---- ImageNet-S -----------------------------------------------------------------------------
def test_imagenet_s_decoding(tmp_path: Path) -> None:
    ids = np.array([[0, 1, 50], [1000, 255, 300]])
    rgb = encode_imagenet_s(ids)
    assert rgb[1, 2].tolist() == [44, 1, 0]  # 300 = 44 + 256 * 1
    np.testing.assert_array_equal(decode_imagenet_s_ids(rgb), ids)
    Image.fromarray(rgb).save(tmp_path / "m.png")
    # 919 classes: 1000 -> 255 (ignore), ids >= 255 move up by one, 255 stays free
    assert read_imagenet_s_mask(tmp_path / "m.png", 919).tolist() == [[0, 1, 50], [255, 256, 301]]
    small = encode_imagenet_s(np.array([[0, 1, 50, 1000]]))
    Image.fromarray(small).save(tmp_path / "s.png")
    assert read_imagenet_s_mask(tmp_path / "s.png", 50).tolist() == [[0, 1, 50, 255]]
    with pytest.raises(ValueError, match=r"m\.png.*\[255, 300\].*0\.\.50.*subset"):
        read_imagenet_s_mask(tmp_path / "m.png", 50)


def test_imagenet_s_real_category_lists(realdata_dir: Path) -> None:
    for subset in (50, 919):
        wnids = parse_categories_file(
            realdata_dir / f"imagenet-s/ImageNetS_categories_im{subset}.txt"
        )
        assert len(wnids) == subset == len(set(wnids)) and wnids == sorted(wnids)
    assert parse_categories_file(realdata_dir / "imagenet-s/ImageNetS_categories_im50.txt")[0] == (
        "n01443537"
    )


def test_imagenet_s_module_on_fixture(imagenet_s_root: Path) -> None:
    dm = ImageNetSDataModule(root=str(imagenet_s_root), subset=50, **SMALL)
    assert dm.num_classes == 51 and dm.class_names[0] == "other"
    assert dm.class_names[1:4] == ["tench", "goldfish", "great white shark"]  # sorted wnids
    check_batch(next(iter(dm.train_dataloader())), 2, 32, 32)
    dm.setup("validate")
    dataset = dm.datasets["val"]
    assert len(dataset) == 3
    for index, sample in enumerate(dataset.samples):
        class_id = dm.wnids.index(sample.mask_path.parent.name) + 1
        assert values(dataset[index]["mask"]) == {0, class_id, 255}
    # readable_names off: wnids; root may be the ImageNetS50 folder itself
    plain = ImageNetSDataModule(root=str(imagenet_s_root / "ImageNetS50"), readable_names=False)
    assert plain.class_names[1] == "n01440764"


def test_imagenet_s_919_shifts_ids_past_ignore(tmp_path: Path) -> None:
    root = make_imagenet_s(tmp_path, subset=919, class_ids=(1, 300, 919), n_train_per_class=0)
    dm = ImageNetSDataModule(root=str(root), subset=919, readable_names=False)
    assert dm.num_classes == 921 and dm.class_names[255] == PLACEHOLDER_NAME
    assert dm.class_names[301] == dm.wnids[299] and dm.class_names[920] == dm.wnids[918]
    dm.setup("validate")
    got = {s.mask_path.parent.name: values(dm.datasets["val"][i]["mask"]) for i, s in
           enumerate(dm.datasets["val"].samples)}  # fmt: skip
    assert got == {
        dm.wnids[0]: {0, 1, 255},
        dm.wnids[299]: {0, 301, 255},
        dm.wnids[918]: {0, 920, 255},
    }


def test_imagenet_s_categories_from_folders_need_full_count(tmp_path: Path) -> None:
    root = make_imagenet_s(tmp_path, write_categories=False)
    with pytest.raises(FileNotFoundError, match="categories_file.*ImageNetS_categories_im50"):
        ImageNetSDataModule(root=str(root))
    listed = tmp_path / "cats.txt"
    listed.write_text("n01440764\nnot_a_wnid\n")
    with pytest.raises(ValueError, match="line 2.*not_a_wnid.*WordNet id"):
        ImageNetSDataModule(root=str(root), categories_file=str(listed))


# ---- folders --------------------------------------------------------------------------------
def test_folder_seeded_split_and_batches(folder_root: Path) -> None:
    dm = FolderSegDataModule(root=str(folder_root), val_fraction=0.25, **SMALL)
    again = FolderSegDataModule(root=str(folder_root), val_fraction=0.25)
    assert dm.class_names == ["background", "circle", "square"] and dm.num_classes == 3
    splits = dm.split_stems()
    assert splits == again.split_stems() and len(splits["val"]) == 2 and len(splits["train"]) == 6
    assert not set(splits["val"]) & set(splits["train"])
    train = next(iter(dm.train_dataloader()))
    check_batch(train, 2, 32, 32)
    assert values(train["mask"]) <= {0, 1, 2, 255}
    val = next(iter(dm.val_dataloader()))
    assert val["name"] == splits["val"]


def test_folder_split_files_and_palette_masks(tmp_path: Path) -> None:
    root = make_folder_dataset(tmp_path, n_images=4, with_splits=True, palette_masks=True)
    dm = FolderSegDataModule(root=str(root), loader=LoaderConfig(batch_size=1))
    assert dm.split_stems() == {"train": ["img_0000", "img_0001", "img_0002"], "val": ["img_0003"]}
    dm.setup("validate")
    item = dm.datasets["val"][0]
    np.testing.assert_array_equal(
        item["mask"].numpy(), np.asarray(Image.open(root / "masks/img_0003.png"))
    )


# ---- transforms and batching ----------------------------------------------------------------
def colour_scene() -> tuple[np.ndarray, np.ndarray]:
    """A 40x56 image whose colour tells its class (0/1/2 in bands and a block)."""
    ids = np.zeros((40, 56), dtype=np.uint8)
    ids[:, 20:] = 1
    ids[10:30, 30:50] = 2
    image = np.zeros((40, 56, 3), dtype=np.uint8)
    for c in range(3):
        image[ids == c] = class_colour(c)
    return image, ids


def test_augmentation_keeps_image_and_mask_aligned() -> None:
    image, ids = colour_scene()
    palette = np.array([class_colour(c) for c in range(3)], dtype=np.float32)
    transform = build_train_transform(crop_size=48, scale_range=(0.5, 2.0), hflip_prob=0.5)
    padded_seeds = 0
    for seed in range(12):
        transform.set_random_seed(seed)
        out = transform(image=image, mask=ids)
        rgb, mask = unnormalize(out["image"]), np.asarray(out["mask"])
        assert out["image"].shape == (3, 48, 48) and mask.shape == (48, 48)
        labelled = mask != 255
        # interior pixels (all 8 neighbours share the id): bilinear image blending at class
        # boundaries cannot change their colour, so they must show exactly their class colour
        padded = np.pad(mask, 1, mode="edge")
        interior = labelled & np.all(
            [
                padded[1 + dy : 49 + dy, 1 + dx : 49 + dx] == mask
                for dy in (-1, 0, 1)
                for dx in (-1, 0, 1)
            ],
            axis=0,
        )
        distance = np.linalg.norm(rgb[:, :, None, :] - palette[None, None], axis=-1)
        nearest = distance.argmin(-1)
        assert interior.sum() > 0.5 * labelled.sum()
        wrong = int((nearest[interior] != mask[interior]).sum())
        assert wrong == 0, f"seed {seed}: {wrong} interior pixels lost their class colour"
        # padding: ignore in the mask, black (0) in the image
        if (~labelled).any():
            padded_seeds += 1
            assert np.abs(rgb[~labelled]).max() < 1.0
    assert padded_seeds > 0  # scale < 0.86 makes the 40x56 scene smaller than the crop


def test_flip_exact_and_padding_is_255() -> None:
    image, ids = colour_scene()
    flip = build_train_transform(crop_size=[40, 56], scale_range=(1.0, 1.0), hflip_prob=1.0)
    out = flip(image=image, mask=ids)
    np.testing.assert_array_equal(np.asarray(out["mask"]), ids[:, ::-1])
    np.testing.assert_allclose(
        unnormalize(out["image"]), image[:, ::-1].astype(np.float32), atol=0.01
    )
    pad = build_train_transform(crop_size=64, scale_range=(1.0, 1.0), hflip_prob=0.0)
    out = pad(image=image, mask=ids)
    mask = np.asarray(out["mask"])
    np.testing.assert_array_equal(mask[:40, :56], ids)
    assert (mask[40:] == 255).all() and (mask[:, 56:] == 255).all()


def test_rot90_turns_image_and_mask_together_and_needs_a_square_crop() -> None:
    image, ids = colour_scene()
    image, ids = image[:40, :40], ids[:40, :40]
    turn = build_train_transform(
        crop_size=40, scale_range=(1.0, 1.0), hflip_prob=0.0, rot90_prob=1.0
    )
    seen = set()
    for seed in range(16):
        turn.set_random_seed(seed)
        out = turn(image=image, mask=ids)
        mask, rgb = np.asarray(out["mask"]), unnormalize(out["image"])
        quarter = next(k for k in range(4) if np.array_equal(mask, np.rot90(ids, k)))
        np.testing.assert_allclose(rgb, np.rot90(image, quarter).astype(np.float32), atol=0.01)
        seen.add(quarter)
    assert seen == {0, 1, 2, 3}  # every multiple of 90 degrees, the mask turned with the image
    off = build_train_transform(crop_size=40, scale_range=(1.0, 1.0), hflip_prob=0.0)
    np.testing.assert_array_equal(np.asarray(off(image=image, mask=ids)["mask"]), ids)
    with pytest.raises(ValueError, match="square crop"):
        build_train_transform(crop_size=[40, 56], rot90_prob=0.5)
    with pytest.raises(ValueError, match="probability"):
        build_train_transform(crop_size=40, rot90_prob=1.5)


def test_pad_collate_pads_masks_with_ignore() -> None:
    items = [
        {"image": torch.ones(3, 2, 3), "mask": torch.zeros(2, 3, dtype=torch.int64), "name": "a"},
        {"image": torch.ones(3, 4, 2), "mask": torch.ones(4, 2, dtype=torch.int64), "name": "b"},
    ]
    batch = pad_collate(items)
    assert batch["image"].shape == (2, 3, 4, 3) and batch["name"] == ["a", "b"]
    assert batch["mask"][0].tolist() == [[0, 0, 0], [0, 0, 0], [255, 255, 255], [255, 255, 255]]
    assert batch["mask"][1, :, 2].tolist() == [255] * 4
    assert batch["image"][0, :, 2:].abs().sum() == 0


def test_loader_options_and_reproducible_augmentation(folder_root: Path) -> None:
    dm = FolderSegDataModule(
        root=str(folder_root),
        loader=LoaderConfig(num_workers=2, batch_size=4),
        augment=AugmentConfig(crop_size=24),
    )
    loader = dm.train_dataloader()
    assert loader.persistent_workers and loader.drop_last and loader.num_workers == 2
    assert not dm.val_dataloader().drop_last
    dataset = dm.datasets["train"]
    dataset.reseed(7)
    first = dataset[0]["mask"]
    dataset.reseed(7)
    assert torch.equal(first, dataset[0]["mask"])
    assert not FolderSegDataModule(root=str(folder_root)).train_dataloader().persistent_workers


def test_yaml_style_init_args(folder_root: Path) -> None:
    from jsonargparse import ArgumentParser

    parser = ArgumentParser()
    parser.add_class_arguments(FolderSegDataModule, "data")
    config = parser.parse_object(
        {
            "data": {
                "root": str(folder_root),
                "augment": {"crop_size": [16, 24], "scale_range": [0.75, 1.25]},
                "loader": {"batch_size": 3},
                "val_pad_to": 40,
            }
        }  # fmt: skip
    )
    dm = parser.instantiate_classes(config)["data"]
    assert dm.hparams.augment.scale_range == (0.75, 1.25)
    assert dm.augment.crop_size == [16, 24] and dm.loader.batch_size == 3
    check_batch(next(iter(dm.train_dataloader())), 3, 16, 24)
    check_batch(next(iter(dm.val_dataloader())), 2, 40, 40)


# ---- bad input ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "module", [VOCDataModule, CityscapesDataModule, ImageNetSDataModule, FolderSegDataModule]
)
def test_missing_root(tmp_path: Path, module: type) -> None:
    with pytest.raises(FileNotFoundError, match=r"data root .*nowhere.* does not exist.*Fix: set"):
        module(root=str(tmp_path / "nowhere"))


def test_wrong_layouts(tmp_path: Path, voc_root: Path, cityscapes_root: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="JPEGImages.*Expected layout.*Fix"):
        VOCDataModule(root=str(tmp_path / "empty"))
    import shutil

    shutil.rmtree(cityscapes_root / "gtFine")
    with pytest.raises(FileNotFoundError, match="gtFine.*is missing.*leftImg8bit"):
        CityscapesDataModule(root=str(cityscapes_root))
    with pytest.raises(FileNotFoundError, match="validation-segmentation.*ImageNetS50"):
        ImageNetSDataModule(root=str(tmp_path / "empty"))
    with pytest.raises(FileNotFoundError, match="images.*is missing.*classes.txt"):
        FolderSegDataModule(root=str(tmp_path / "empty"))
    (voc_root / "VOCdevkit/VOC2012/ImageSets/Segmentation/train.txt").unlink()
    with pytest.raises(FileNotFoundError, match="train.txt.*missing.*ImageSets"):
        VOCDataModule(root=str(voc_root)).setup("fit")


def test_mask_values_outside_class_range(folder_root: Path) -> None:
    (folder_root / "classes.txt").write_text("background\ncircle\n")  # masks also hold id 2
    dm = FolderSegDataModule(root=str(folder_root), val_fraction=0.0)
    dataset = dm.build_dataset("train")
    with pytest.raises(
        ValueError, match=r"masks/img_\d+\.png has class ids \{2\}.*0\.\.1.*classes\.txt"
    ):
        for index in range(len(dataset)):
            dataset[index]


def test_size_mismatch(folder_root: Path) -> None:
    Image.fromarray(np.zeros((20, 16), dtype=np.uint8), mode="L").save(
        folder_root / "masks/img_0000.png"
    )
    dataset = FolderSegDataModule(root=str(folder_root)).build_dataset("train")
    index = [s.name for s in dataset.samples].index("img_0000")
    with pytest.raises(
        ValueError, match=r"images/img_0000\.png is 32x32.*masks/img_0000\.png is 16x20"
    ):
        dataset[index]


def test_empty_split_and_missing_files(
    voc_root: Path, folder_root: Path, cityscapes_root: Path
) -> None:
    for path in (cityscapes_root / "leftImg8bit/val/frankfurt").iterdir():
        path.unlink()
    with pytest.raises(ValueError, match="'val' split is empty.*_leftImg8bit.png.*Fix: unpack"):
        CityscapesDataModule(root=str(cityscapes_root)).setup("validate")
    (voc_root / "VOCdevkit/VOC2012/ImageSets/Segmentation/val.txt").write_text("\n")
    with pytest.raises(ValueError, match="'val' split is empty.*val.txt lists no image ids.*Fix"):
        VOCDataModule(root=str(voc_root)).setup("validate")
    with pytest.raises(ValueError, match="'val' split is empty.*val_fraction=0.0.*Fix"):
        FolderSegDataModule(root=str(folder_root), val_fraction=0.0).setup("fit")
    (folder_root / "masks/img_0001.png").unlink()
    with pytest.raises(FileNotFoundError, match=r"1 file\(s\).*masks/img_0001\.png.*Fix"):
        FolderSegDataModule(root=str(folder_root), val_fraction=0.5).setup("fit")


def test_colour_mask_refused(folder_root: Path) -> None:
    Image.fromarray(np.zeros((32, 32, 3), dtype=np.uint8)).save(folder_root / "masks/img_0000.png")
    with pytest.raises(ValueError, match="RGB image.*Fix: convert"):
        read_index_mask(folder_root / "masks/img_0000.png")


def test_workers_do_not_repeat_augmentations(folder_root: Path) -> None:
    """Forked workers copy the transform's generator; seed_worker must give each its own."""
    dm = FolderSegDataModule(
        root=str(folder_root),
        loader=LoaderConfig(batch_size=1, num_workers=2),
        augment=AugmentConfig(crop_size=24),
    )
    dataset = dm.build_dataset("train")
    dataset.samples = [dataset.samples[0]] * 4  # same image: only augmentation differs
    dm.datasets["train"] = dataset
    torch.manual_seed(0)
    loader = dm.train_dataloader()
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=1, num_workers=2, worker_init_fn=loader.worker_init_fn
    )  # unshuffled: item 0 from worker 0, item 1 from worker 1
    masks = [batch["mask"] for batch in loader]
    assert not torch.equal(masks[0], masks[1])
