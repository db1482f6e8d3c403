"""`SampleCache`: the content-addressed, sharded, self-verifying store of synthetic samples.

Directory layout (`root` = the cache dir):
```
root/shards/<writer>-<seq>.safetensors   finished shards (see shard.py), immutable
root/shards/.tmp-<writer>-<seq>...       shards being written (never read; cleaned when dead)
root/manifest/<writer>.jsonl             one line per finished shard (see manifest.py)
root/locks/<writer>.lock                 flock held by a live writer
root/quarantine/<shard>[.reason.txt]     shards that failed a checksum, moved out of the way
```
The index (key -> shard and byte ranges of its fields) lives in memory in compact arrays, built
from the manifests. A read is a few `pread` calls plus PNG decoding, and checks the sample's
sha256; a mismatch quarantines the shard and drops its keys so they are generated again.
"""

from __future__ import annotations

import errno
import os
import warnings
from array import array
from collections import OrderedDict
from pathlib import Path
from typing import Any

from synthmask.cache.manifest import MANIFEST_SUFFIX, read_lines
from synthmask.cache.record import FIELD_NAMES, SampleRecord, decode_record
from synthmask.cache.shard import (
    SampleEntry,
    ShardError,
    file_sha256,
    read_fields,
    sample_checksum,
)
from synthmask.cache.stats import CacheStats


class CacheNotWritableError(PermissionError):
    """The cache directory cannot be created or written."""


def not_writable_error(root: Path, err: OSError) -> CacheNotWritableError:
    return CacheNotWritableError(
        errno.EACCES,
        f"cache dir {root} is not writable ({err.strerror or err}). Pass a writable directory "
        f"as cache_dir (e.g. `--data.init_args.cache_dir=/scratch/synthmask-cache`) or fix its "
        f"permissions (`chmod -R u+w {root}`); a read-only cache can only be read.",
    )


class SampleCache:
    """Sharded sample store at `root`.

    Args:
        root: cache directory (created if missing and `create`).
        create: create `root` when it does not exist (else FileNotFoundError).
        max_open_files: shard file descriptors kept open per process (LRU).
    """

    def __init__(self, root: str | os.PathLike, *, create: bool = True, max_open_files: int = 64):
        self.root = Path(root).expanduser()
        if not self.root.is_dir():
            if self.root.exists():
                raise NotADirectoryError(
                    f"cache dir {self.root} exists but is not a directory; pass a directory path "
                    "as cache_dir."
                )
            if not create:
                raise FileNotFoundError(
                    f"cache dir {self.root} does not exist; fill it with `synthmask synthesize "
                    "--config <experiment>.yaml` or point cache_dir at an existing cache."
                )
            try:
                self.root.mkdir(parents=True, exist_ok=True)
            except OSError as err:
                raise not_writable_error(self.root, err) from err
        self.shard_dir = self.root / "shards"
        self.manifest_dir = self.root / "manifest"
        self.lock_dir = self.root / "locks"
        self.quarantine_dir = self.root / "quarantine"
        self.max_open_files = max_open_files
        self.stats = CacheStats()
        self._bad_shards: set[str] = set()
        self._reset_index()
        self.refresh()

    # ----------------------------------------------------------------- index
    def _reset_index(self) -> None:
        self._row_of: dict[str, int] = {}
        self._row_shard = array("i")
        self._row_offsets = array("q")  # 2 per field, FIELD_NAMES order
        self._row_sha256 = bytearray()  # 32 bytes per row
        self._shard_names: list[str] = []
        self._shard_id: dict[str, int] = {}
        self._shard_meta: list[dict[str, Any]] = []
        self._manifest_offsets: dict[str, int] = {}
        self._close_files()

    def refresh(self) -> int:
        """Index the shards finished since the last refresh (by any writer); returns new keys."""
        before = len(self._row_of)
        if self.manifest_dir.is_dir():
            for path in sorted(self.manifest_dir.glob(f"*{MANIFEST_SUFFIX}")):
                records, offset = read_lines(path, self._manifest_offsets.get(path.name, 0))
                self._manifest_offsets[path.name] = offset
                for record in records:
                    self._add_shard(record)
        return len(self._row_of) - before

    def _add_shard(self, record: dict[str, Any]) -> None:
        name = record["shard"]
        if name in self._shard_id or name in self._bad_shards:
            return
        try:
            size = (self.shard_dir / name).stat().st_size
        except FileNotFoundError:
            return  # quarantined or removed by another process
        if size != record["bytes"]:
            self._quarantine(
                name, f"size {size} bytes, manifest says {record['bytes']} (truncated)"
            )
            return
        shard_id = len(self._shard_names)
        self._shard_names.append(name)
        self._shard_id[name] = shard_id
        self._shard_meta.append({"bytes": record["bytes"], "sha256": record["sha256"]})
        for sample in record["samples"]:
            key = sample["key"]
            if key in self._row_of:
                continue  # a copy from a parallel writer; the first indexed copy wins
            self._row_of[key] = len(self._row_shard)
            self._row_shard.append(shard_id)
            for field in FIELD_NAMES:
                self._row_offsets.extend(sample["fields"][field])
            self._row_sha256.extend(bytes.fromhex(sample["sha256"]))

    def _rebuild(self) -> None:
        self._reset_index()
        self.refresh()

    # ----------------------------------------------------------------- queries
    def __contains__(self, key: object) -> bool:
        return key in self._row_of

    def __len__(self) -> int:
        return len(self._row_of)

    def keys(self) -> list[str]:
        return list(self._row_of)

    def shard_names(self) -> list[str]:
        return list(self._shard_names)

    def entry(self, key: str) -> SampleEntry:
        """Where `key` is stored (KeyError if not cached)."""
        row = self._row_of[key]
        offsets = self._row_offsets[row * 2 * len(FIELD_NAMES) : (row + 1) * 2 * len(FIELD_NAMES)]
        fields = {f: (offsets[2 * i], offsets[2 * i + 1]) for i, f in enumerate(FIELD_NAMES)}
        return SampleEntry(
            key=key, sha256=self._row_sha256[row * 32 : row * 32 + 32].hex(), fields=fields
        )

    def shard_of(self, key: str) -> Path:
        return self.shard_dir / self._shard_names[self._row_shard[self._row_of[key]]]

    # ----------------------------------------------------------------- reads
    def get(self, key: str) -> SampleRecord | None:
        """The sample stored under `key`, or None when it is not cached (a miss).

        A sample whose checksum fails quarantines its shard (with a warning) and is a miss.
        """
        row = self._row_of.get(key)
        if row is None:
            self.stats.misses += 1
            return None
        shard_id = self._row_shard[row]
        entry = self.entry(key)
        try:
            fd = self._open(shard_id)
        except FileNotFoundError:
            self._rebuild()  # quarantined by another process
            self.stats.misses += 1
            return None
        try:
            fields = read_fields(fd, entry.fields)
            if sample_checksum(fields) != entry.sha256:
                raise ShardError(f"checksum mismatch for sample {key}")
            record = decode_record(fields)
        except (ShardError, ValueError, OSError) as err:  # OSError: EIO, undecodable PNG
            self._quarantine(self._shard_names[shard_id], str(err))
            self._rebuild()
            self.stats.misses += 1
            return None
        self.stats.hits += 1
        return record

    def __getitem__(self, key: str) -> SampleRecord:
        record = self.get(key)
        if record is None:
            raise KeyError(f"sample {key} is not in the cache at {self.root}")
        return record

    def _open(self, shard_id: int) -> int:
        if self._pid != os.getpid():  # forked DataLoader worker: the parent's fds are not ours
            self._fds = OrderedDict()
            self._pid = os.getpid()
        fd = self._fds.get(shard_id)
        if fd is not None:
            self._fds.move_to_end(shard_id)
            return fd
        fd = os.open(self.shard_dir / self._shard_names[shard_id], os.O_RDONLY)
        self._fds[shard_id] = fd
        while len(self._fds) > self.max_open_files:
            os.close(self._fds.popitem(last=False)[1])
        return fd

    def _close_files(self) -> None:
        if getattr(self, "_pid", None) == os.getpid():
            for fd in self._fds.values():
                os.close(fd)
        self._fds: OrderedDict[int, int] = OrderedDict()
        self._pid = os.getpid()

    def close(self) -> None:
        self._close_files()

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_fds"] = OrderedDict()
        state["_pid"] = None
        return state

    def __del__(self) -> None:
        try:
            self._close_files()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass

    # ----------------------------------------------------------------- integrity
    def verify(self) -> list[str]:
        """Hash every indexed shard against its manifest sha256; quarantine mismatches.

        Returns the names of the shards quarantined (their keys are dropped from the index).
        """
        bad = []
        for name, meta in zip(self._shard_names, self._shard_meta, strict=True):
            path = self.shard_dir / name
            try:
                ok = path.stat().st_size == meta["bytes"] and file_sha256(path) == meta["sha256"]
            except FileNotFoundError:
                ok = False
            if not ok:
                bad.append(name)
                self._quarantine(name, "file sha256 does not match the manifest")
        if bad:
            self._rebuild()
        return bad

    def _quarantine(self, name: str, reason: str) -> None:
        self._bad_shards.add(name)
        self.stats.quarantined_shards += 1
        source, target = self.shard_dir / name, self.quarantine_dir / name
        where = f"moved it to {target}"
        try:
            self.quarantine_dir.mkdir(exist_ok=True)
            os.replace(source, target)
            (self.quarantine_dir / f"{name}.reason.txt").write_text(reason + "\n")
        except FileNotFoundError:
            where = "another process already moved it"
        except OSError as err:
            where = f"could not move it ({err}); it is skipped in this process only"
        warnings.warn(
            f"cache shard {source} is corrupt ({reason}); {where}. Its samples are dropped from "
            "the index and will be generated again by the next synthesis run.",
            RuntimeWarning,
            stacklevel=3,
        )

    def writer(self, label: str = "w", shard_size: int = 64):  # -> CacheWriter
        """A new writer with a unique id `<label>-<random>` (one per rank / worker)."""
        from synthmask.cache.writer import CacheWriter

        return CacheWriter(self, label=label, shard_size=shard_size)

    def __repr__(self) -> str:
        return (
            f"SampleCache({str(self.root)!r}, samples={len(self)}, shards={len(self._shard_names)})"
        )
