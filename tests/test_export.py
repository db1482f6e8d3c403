"""Export of a sample cache to the VOC and folder layouts, read back by torchvision and by the
project's data modules and compared pixel by pixel with the cache."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from fixtures_cache import key_of, make_record
from PIL import Image
from torchvision.datasets import VOCSegmentation

from synthmask.cache import SampleCache
from synthmask.datamodules.folder import FolderSegDataModule
from synthmask.datamodules.voc import VOC_CLASS_NAMES, VOCDataModule
from synthmask.export import export_cache, voc_palette

N = 5
CLASSES = ["background", "circle", "square"]


@pytest.fixture(name="cache")
def cache_fixture(tmp_path) -> SampleCache:
    cache = SampleCache(tmp_path / "cache")
    with cache.writer("t", shard_size=2) as writer:
        for i in range(N):
            writer.add(key_of(i), make_record(i, h=24, w=20))
    return SampleCache(tmp_path / "cache", create=False)


def _items() -> list[tuple[str, str]]:
    return [(f"synth_{i:06d}", key_of(i)) for i in range(N)]


def test_voc_export_reads_back_in_torchvision_and_voc_datamodule(cache, tmp_path) -> None:
    out = tmp_path / "voc"
    report = export_cache(cache, _items(), CLASSES, out, "voc")
    assert (report.written, report.skipped) == (N, 0)
    voc = VOCSegmentation(str(out), year="2012", image_set="train")
    assert len(voc) == N
    for i in range(N):
        record = cache[key_of(i)]
        image, target = voc[i]
        np.testing.assert_array_equal(np.asarray(target), record.mask)  # every pixel
        assert target.mode == "P" and target.getpalette()[: 3 * 256] == voc_palette()
        jpeg_error = np.abs(np.asarray(image, dtype=np.int16) - record.image).mean()
        assert jpeg_error < 12  # JPEG (quality 95, no chroma subsampling) of random noise
        reliability = Image.open(
            out / "VOCdevkit/VOC2012/SegmentationReliability" / f"synth_{i:06d}.png"
        )
        np.testing.assert_array_equal(np.asarray(reliability), record.reliability)
    root = out / "VOCdevkit" / "VOC2012"
    assert (root / "classes.txt").read_text().splitlines() == CLASSES
    dm = VOCDataModule(root=str(out))
    samples = dm.find_samples("train")
    assert [s.name for s in samples] == [name for name, _ in _items()]
    dataset = dm.build_dataset("train")
    assert len(dataset) == N and dm.num_classes == len(VOC_CLASS_NAMES)


def test_folder_export_is_read_exactly_by_folder_datamodule(cache, tmp_path) -> None:
    out = tmp_path / "folder"
    export_cache(cache, _items(), CLASSES, out, "folder")
    dm = FolderSegDataModule(root=str(out), val_fraction=0.0)
    assert dm.class_names == CLASSES
    stems = sorted(p.stem for p in (out / "images").iterdir())
    assert stems == [name for name, _ in _items()]
    for name, key in _items():
        record = cache[key]
        np.testing.assert_array_equal(
            np.asarray(Image.open(out / "images" / f"{name}.png")), record.image
        )
        np.testing.assert_array_equal(
            np.asarray(Image.open(out / "masks" / f"{name}.png")), record.mask
        )
    dataset = dm.build_dataset("train")
    item = dataset[0]
    assert isinstance(item["mask"], torch.Tensor) and len(dataset) == N


def test_export_is_idempotent_resumable_and_guarded(cache, tmp_path) -> None:
    out = tmp_path / "voc"
    export_cache(cache, _items(), CLASSES, out, "voc")
    mask = out / "VOCdevkit/VOC2012/SegmentationClass/synth_000002.png"
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    again = export_cache(cache, _items(), CLASSES, out, "voc")
    assert (again.written, again.skipped) == (0, N)
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    mask.unlink()  # an interrupted export: the rerun writes only what is missing
    resumed = export_cache(cache, _items(), CLASSES, out, "voc")
    assert (resumed.written, resumed.skipped) == (1, N - 1) and mask.read_bytes() == before[mask]
    with pytest.raises(ValueError, match="holds an export of other samples"):
        export_cache(cache, _items()[:2], CLASSES, out, "voc")
    with pytest.raises(ValueError, match="not in the cache"):
        export_cache(cache, [("x", "missing-key")], CLASSES, tmp_path / "other", "voc")
    with pytest.raises(ValueError, match="class name 'circle' is used by class ids 1 and 2"):
        export_cache(cache, _items(), ["background", "circle", "circle"], tmp_path / "d", "folder")
    with pytest.raises(ValueError, match="use one of"):
        export_cache(cache, _items(), CLASSES, tmp_path / "e", "coco")
