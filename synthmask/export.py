"""Write cached synthetic samples in layouts other tools read (no Lightning).

``voc`` (read by ``torchvision.datasets.VOCSegmentation(root, year="2012", image_set="train")``,
mmsegmentation's PascalVOCDataset and ``VOCDataModule``)::

    <output>/VOCdevkit/VOC2012/JPEGImages/<name>.jpg
    <output>/VOCdevkit/VOC2012/SegmentationClass/<name>.png        palette PNG (VOC palette),
                                                                   index = class id, 255 = ignore
    <output>/VOCdevkit/VOC2012/SegmentationReliability/<name>.png  L PNG, 255 = reliable
    <output>/VOCdevkit/VOC2012/ImageSets/Segmentation/train.txt
    <output>/VOCdevkit/VOC2012/classes.txt                         line i+1 = class id i

``folder`` (read by ``FolderSegDataModule``)::

    <output>/images/<name>.png   <output>/masks/<name>.png   <output>/reliability/<name>.png
    <output>/classes.txt

Every file is written to a temporary name and renamed, and ``export.json`` records what was
exported: a rerun skips the files already there (resumable) and rewrites none (idempotent); an
output folder that holds another config's export is refused.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from synthmask.cache import SampleCache, SampleRecord

FORMATS = ("voc", "folder")
JPEG_QUALITY = 95
MANIFEST = "export.json"


def voc_palette() -> list[int]:
    """The PASCAL VOC colour map (bit-interleaved), 256 RGB triples flattened (768 ints)."""
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


@dataclass
class ExportReport:
    """What one export run did."""

    root: Path
    written: int
    skipped: int


def _write_atomic(path: Path, data: bytes) -> None:
    temp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    temp.write_bytes(data)
    os.replace(temp, path)


def _png(array: np.ndarray, palette: list[int] | None = None) -> bytes:
    image = Image.fromarray(array)
    if palette is not None:
        image = Image.fromarray(array.astype(np.uint8), mode="P")
        image.putpalette(palette)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _jpeg(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="JPEG", quality=JPEG_QUALITY, subsampling=0)
    return buffer.getvalue()


class _Layout:
    """Paths and encoders of one format."""

    def __init__(self, output: Path, fmt: str) -> None:
        self.fmt = fmt
        self.root = output / "VOCdevkit" / "VOC2012" if fmt == "voc" else output
        if fmt == "voc":
            self.dirs = {
                "image": self.root / "JPEGImages",
                "mask": self.root / "SegmentationClass",
                "reliability": self.root / "SegmentationReliability",
            }
            self.suffix = {"image": ".jpg", "mask": ".png", "reliability": ".png"}
        else:
            self.dirs = {
                "image": self.root / "images",
                "mask": self.root / "masks",
                "reliability": self.root / "reliability",
            }
            self.suffix = {"image": ".png", "mask": ".png", "reliability": ".png"}
        self.palette = voc_palette() if fmt == "voc" else None

    def paths(self, name: str) -> dict[str, Path]:
        return {field: self.dirs[field] / f"{name}{self.suffix[field]}" for field in self.dirs}

    def encode(self, record: SampleRecord) -> dict[str, bytes]:
        image = _jpeg(record.image) if self.fmt == "voc" else _png(record.image)
        return {
            "image": image,
            "mask": _png(record.mask, self.palette),
            "reliability": _png(record.reliability),
        }


def check_class_names(class_names: Sequence[str], fmt: str) -> None:
    """Refuse duplicate names, and more classes than a palette PNG holds for ``voc``."""
    seen: dict[str, int] = {}
    for index, name in enumerate(class_names):
        if name in seen:
            raise ValueError(
                f"class name {name!r} is used by class ids {seen[name]} and {index}; every class "
                "needs its own name (rename one of them)."
            )
        seen[name] = index
    if fmt == "voc" and len(class_names) > 255:
        raise ValueError(
            f"the VOC layout stores class ids in 8-bit palette PNGs (255 = ignore), but this "
            f"vocabulary has {len(class_names)} classes; use --format folder (16-bit masks)."
        )


def export_cache(
    cache: SampleCache,
    items: Sequence[tuple[str, str]],
    class_names: Sequence[str],
    output: str | Path,
    fmt: str,
    source: dict[str, Any] | None = None,
) -> ExportReport:
    """Write the cached samples ``items`` = [(name, cache key)] to ``output`` in ``fmt``.

    Args:
        cache: the filled sample cache.
        items: file stem and cache key of every sample, in split-list order.
        class_names: class id -> name (id 0 first) for classes.txt.
        output: the export folder (created).
        fmt: "voc" or "folder".
        source: what produced the samples (recorded in export.json; a rerun must match it).

    Raises ValueError for an unknown format, samples missing from the cache, or an output that
    holds another export.
    """
    if fmt not in FORMATS:
        raise ValueError(f"--format {fmt!r} is not supported; use one of {list(FORMATS)}.")
    check_class_names(class_names, fmt)
    missing = [name for name, key in items if key not in cache]
    if missing:
        raise ValueError(
            f"{len(missing)} of {len(items)} samples of this config are not in the cache "
            f"{cache.root} (e.g. {missing[:3]}); fill it first with `synthmask synthesize` and the "
            "same --config and overrides, then rerun the export."
        )
    output = Path(output).expanduser()
    layout = _Layout(output, fmt)
    manifest = {
        "format": fmt,
        "classes": list(class_names),
        "samples": [[name, key] for name, key in items],
        "source": source or {},
    }
    _check_previous_export(output / MANIFEST, manifest)
    for folder in layout.dirs.values():
        folder.mkdir(parents=True, exist_ok=True)
    written = skipped = 0
    for name, key in items:
        paths = layout.paths(name)
        if all(path.is_file() for path in paths.values()):
            skipped += 1
            continue
        encoded = layout.encode(cache[key])
        for field, path in paths.items():
            _write_atomic(path, encoded[field])
        written += 1
    names = "".join(f"{name}\n" for name, _ in items)
    classes = "".join(f"{name}\n" for name in class_names)
    if fmt == "voc":
        split_dir = layout.root / "ImageSets" / "Segmentation"
        split_dir.mkdir(parents=True, exist_ok=True)
        _write_atomic(split_dir / "train.txt", names.encode())
    _write_atomic(layout.root / "classes.txt", classes.encode())
    _write_atomic(output / MANIFEST, json.dumps(manifest, indent=1).encode())
    return ExportReport(layout.root, written, skipped)


def _check_previous_export(path: Path, manifest: dict[str, Any]) -> None:
    if not path.is_file():
        return
    try:
        previous = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise ValueError(f"{path} is not a readable export record ({err}); delete it.") from err
    if {k: previous.get(k) for k in manifest} != manifest:
        raise ValueError(
            f"{path.parent} holds an export of other samples or another format ({path} differs); "
            "choose another --output folder or delete that one."
        )
