"""Write cached synthetic samples in layouts other tools read (no Lightning).

``voc`` (read by ``torchvision.datasets.VOCSegmentation(root, year="2012", image_set=...)``,
mmsegmentation's PascalVOCDataset and ``VOCDataModule``)::

    <output>/VOCdevkit/VOC2012/JPEGImages/<name>.jpg
    <output>/VOCdevkit/VOC2012/SegmentationClass/<name>.png        palette PNG (VOC palette),
                                                                   index = class id, 255 = ignore
    <output>/VOCdevkit/VOC2012/SegmentationReliability/<name>.png  L PNG, 255 = reliable
    <output>/VOCdevkit/VOC2012/ImageSets/Segmentation/{train,val}.txt   val = a held-out share
    <output>/VOCdevkit/VOC2012/classes.txt                         line i+1 = class id i

``folder`` (read by ``FolderSegDataModule``)::

    <output>/images/<name>.png   <output>/masks/<name>.png   <output>/reliability/<name>.png
    <output>/classes.txt

The output folder must be new, empty, or an export of the same samples (recognised by its
``export.json``, written before any other file); anything else is refused unless ``force``.
Every file is written to a temporary name, fsynced and renamed; ``export_files.jsonl`` records
each finished sample's file sizes, so a rerun skips those (resumable), redoes a file that is
missing, empty or of another size, removes temporary files a killed run left, and rewrites
nothing that is complete (idempotent).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
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
DONE_LOG = "export_files.jsonl"
DEFAULT_VAL_SHARE = 0.1
IDENTITY_KEYS = ("format", "classes", "samples", "source")
"""Manifest entries that make two exports the same export (a rerun must match them)."""
_TEMP_NAME = re.compile(r"^\..+\.tmp(\d+)$")


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
    val: int = 0


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to a temporary name beside ``path``, fsync it, then rename it over
    ``path``: a reader (or a killed run) sees the old file or the whole new one."""
    temp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(temp, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temp, path)


def _write_if_changed(path: Path, data: bytes) -> None:
    if not (path.is_file() and path.read_bytes() == data):
        write_atomic(path, data)


def _fsync_dir(path: Path) -> None:
    """Make renames in ``path`` durable (POSIX; a no-op where directories cannot be opened)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


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
        self.split_dir = self.root / "ImageSets" / "Segmentation" if fmt == "voc" else None
        self.palette = voc_palette() if fmt == "voc" else None

    def paths(self, name: str) -> dict[str, Path]:
        return {field: self.dirs[field] / f"{name}{self.suffix[field]}" for field in self.dirs}

    def folders(self) -> list[Path]:
        """Every folder this layout writes files into."""
        extra = [self.split_dir] if self.split_dir is not None else []
        return [*self.dirs.values(), self.root, *extra]

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


def held_out_names(names: Sequence[str], share: float) -> set[str]:
    """The deterministic val share of ``names``: round(share * n) of them (at least one when
    share > 0 and n > 1, never all), those whose sha256 of the name is smallest, so the choice
    depends on the names alone, not on their order or on a random state."""
    if share <= 0 or len(names) < 2:
        return set()
    count = min(len(names) - 1, max(1, round(share * len(names))))
    ranked = sorted(names, key=lambda name: hashlib.sha256(name.encode()).hexdigest())
    return set(ranked[:count])


def export_cache(
    cache: SampleCache,
    items: Sequence[tuple[str, str]],
    class_names: Sequence[str],
    output: str | Path,
    fmt: str,
    source: dict[str, Any] | None = None,
    force: bool = False,
    val_share: float | None = None,
) -> ExportReport:
    """Write the cached samples ``items`` = [(name, cache key)] to ``output`` in ``fmt``.

    Args:
        cache: the filled sample cache.
        items: file stem and cache key of every sample, in split-list order.
        class_names: class id -> name (id 0 first) for classes.txt.
        output: the export folder: new, empty, or an earlier export of the same samples.
        fmt: "voc" or "folder".
        source: what produced the samples (recorded in export.json; a rerun must match it).
        force: write into a folder that holds other files or another export: files of the
            same name are overwritten, the other export's samples are removed, other files stay.
        val_share: ``voc`` only: share of the samples listed in val.txt instead of train.txt
            (None = ``DEFAULT_VAL_SHARE``; 0 = all in train.txt, val.txt empty).

    Raises ValueError for an unknown format, a bad val share, samples missing from the cache,
    or (without ``force``) an output folder holding files this export did not write.
    """
    if fmt not in FORMATS:
        raise ValueError(f"--format {fmt!r} is not supported; use one of {list(FORMATS)}.")
    check_class_names(class_names, fmt)
    share = _check_val_share(val_share, fmt)
    output = Path(output).expanduser()
    layout = _Layout(output, fmt)
    manifest = {
        "format": fmt,
        "classes": list(class_names),
        "samples": [[name, key] for name, key in items],
        "source": source or {},
    }
    previous = check_output_folder(output, manifest, force)
    missing = [name for name, key in items if key not in cache]
    if missing:
        raise ValueError(
            f"{len(missing)} of {len(items)} samples of this config are not in the cache "
            f"{cache.root} (e.g. {missing[:3]}); fill it first with `synthmask synthesize` and the "
            "same --config and overrides, then rerun the export."
        )
    output.mkdir(parents=True, exist_ok=True)
    if previous is None or _identity(previous) != manifest:
        # The record goes first: a killed run leaves a folder its rerun recognises.
        write_atomic(output / MANIFEST, _manifest_bytes(manifest, share, complete=False))
    if previous is not None and _identity(previous) != manifest:
        _remove_other_export(output, previous)
    for folder in layout.folders():
        folder.mkdir(parents=True, exist_ok=True)
        remove_stale_temp_files(folder)
    remove_stale_temp_files(output)
    written, skipped = _write_samples(cache, items, layout, output / DONE_LOG)
    names = [name for name, _ in items]
    val_names = held_out_names(names, share)
    if layout.split_dir is not None:
        train = "".join(f"{name}\n" for name in names if name not in val_names)
        val = "".join(f"{name}\n" for name in names if name in val_names)
        _write_if_changed(layout.split_dir / "train.txt", train.encode())
        _write_if_changed(layout.split_dir / "val.txt", val.encode())
    classes = "".join(f"{name}\n" for name in class_names)
    _write_if_changed(layout.root / "classes.txt", classes.encode())
    for folder in layout.folders():
        _fsync_dir(folder)
    _write_if_changed(output / MANIFEST, _manifest_bytes(manifest, share, complete=True))
    return ExportReport(layout.root, written, skipped, len(val_names))


def _check_val_share(val_share: float | None, fmt: str) -> float:
    if val_share is None:
        return DEFAULT_VAL_SHARE if fmt == "voc" else 0.0
    if fmt != "voc":
        raise ValueError(
            f"--val-share {val_share} applies to --format voc only; FolderSegDataModule holds out "
            "its own share of a folder export (its `val_fraction`)."
        )
    if not 0.0 <= val_share < 1.0:
        raise ValueError(
            f"--val-share {val_share}: give the share of samples listed in val.txt, in [0, 1) "
            f"(default {DEFAULT_VAL_SHARE})."
        )
    return float(val_share)


def _identity(manifest: dict[str, Any]) -> dict[str, Any]:
    return {key: manifest.get(key) for key in IDENTITY_KEYS}


def _manifest_bytes(manifest: dict[str, Any], share: float, complete: bool) -> bytes:
    record = {**manifest, "val_share": share, "complete": complete}
    return json.dumps(record, indent=1).encode()


def _write_samples(
    cache: SampleCache, items: Sequence[tuple[str, str]], layout: _Layout, log_path: Path
) -> tuple[int, int]:
    """Write every sample not already complete on disk; returns (written, skipped)."""
    done = _read_done_log(log_path)
    written = skipped = 0
    with open(log_path, "a", encoding="utf-8") as log:
        for name, key in items:
            paths = layout.paths(name)
            if _is_complete(paths, done.get(name)):
                skipped += 1
                continue
            encoded = layout.encode(cache[key])
            for field, path in paths.items():
                write_atomic(path, encoded[field])
            sizes = {field: len(data) for field, data in encoded.items()}
            log.write(json.dumps({"name": name, "sizes": sizes}) + "\n")
            log.flush()
            os.fsync(log.fileno())
            written += 1
    return written, skipped


def _read_done_log(path: Path) -> dict[str, dict[str, int]]:
    """name -> file sizes of the samples a run finished (a torn last line is ignored)."""
    done: dict[str, dict[str, int]] = {}
    if not path.is_file():
        return done
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            entry = json.loads(line)
            done[str(entry["name"])] = {k: int(v) for k, v in entry["sizes"].items()}
        except (ValueError, KeyError, TypeError, AttributeError):
            continue
    return done


def _is_complete(paths: dict[str, Path], sizes: dict[str, int] | None) -> bool:
    """Every file of a sample is there, not empty, and of the size its run recorded."""
    if sizes is None:
        return False
    for field, path in paths.items():
        try:
            size = path.stat().st_size
        except OSError:
            return False
        if size == 0 or size != sizes.get(field):
            return False
    return True


def remove_stale_temp_files(folder: Path) -> int:
    """Delete the temporary files (``.<name>.tmp<pid>``) that a killed export left in
    ``folder``; those of a live process are kept. Returns how many were removed."""
    removed = 0
    for path in folder.iterdir() if folder.is_dir() else ():
        match = _TEMP_NAME.match(path.name)
        if match and path.is_file() and not _process_alive(int(match.group(1))):
            path.unlink(missing_ok=True)
            removed += 1
    return removed


def _process_alive(pid: int) -> bool:
    if pid == os.getpid():
        return False  # this run's own leftovers cannot be in flight
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


def check_output_folder(
    output: Path, manifest: dict[str, Any], force: bool
) -> dict[str, Any] | None:
    """Refuse (ValueError, nothing written) an output that is a file, holds files of no export,
    or holds another export, unless ``force``. Returns the earlier export's record, if any."""
    if output.exists() and not output.is_dir():
        raise ValueError(f"--output {output} is a file; give a folder (new or empty).")
    if not output.is_dir() or not any(output.iterdir()):
        return None
    previous = _read_manifest(output / MANIFEST)
    if previous is None:
        if force:
            return None
        foreign = _first_file(output)
        raise ValueError(
            f"--output {output} holds files that `synthmask export` did not write (first: "
            f"{foreign}); export into a new or empty folder, or pass --force to write into it "
            "anyway (files of the same name are overwritten)."
        )
    if _identity(previous) != manifest and not force:
        raise ValueError(
            f"{output} holds an export of other samples or another format ({output / MANIFEST} "
            "differs); choose another --output folder, or pass --force to replace that export."
        )
    return previous


def _read_manifest(path: Path) -> dict[str, Any] | None:
    """An export record written by this module, or None (absent, unreadable or foreign)."""
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or record.get("format") not in FORMATS:
        return None
    if not isinstance(record.get("samples"), list):
        return None
    return record


def _first_file(folder: Path) -> Path:
    """The first file (else entry) under ``folder`` in sorted order, as the user sees it."""
    for root, dirs, files in os.walk(folder):
        dirs.sort()
        if files:
            return Path(root) / sorted(files)[0]
    return next(iter(sorted(folder.iterdir())))


def _remove_other_export(output: Path, previous: dict[str, Any]) -> None:
    """``force`` over another export: delete that export's sample files and its record of
    finished files, so the folder holds only the new samples (a folder layout is read whole)."""
    old = _Layout(output, str(previous["format"]))
    for entry in previous["samples"]:
        for path in old.paths(str(entry[0])).values():
            path.unlink(missing_ok=True)
    (output / DONE_LOG).unlink(missing_ok=True)
