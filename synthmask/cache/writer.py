"""`CacheWriter`: buffers samples and commits them as atomic shards, one writer per process.

Commit protocol of a shard: write `shards/.tmp-<shard>` -> fsync -> `os.replace` to
`shards/<shard>` -> fsync the directory -> append its manifest line (fsync). A kill at any point
leaves either nothing visible, an ignored temp file (deleted by the next writer), or a complete
shard without a manifest line (verified and adopted by the next writer). Each writer holds an
`flock` on `locks/<writer>.lock` for its lifetime, so others can tell dead writers from live ones.
"""

from __future__ import annotations

import dataclasses
import fcntl
import hashlib
import os
import re
import secrets
import time
import warnings
from pathlib import Path
from typing import Any

from synthmask.cache.manifest import MANIFEST_SUFFIX, append_line
from synthmask.cache.record import SampleRecord, encode_record
from synthmask.cache.shard import (
    SHARD_SUFFIX,
    SampleEntry,
    ShardError,
    build_shard,
    file_sha256,
    read_fields,
    read_shard_entries,
    sample_checksum,
)
from synthmask.cache.store import SampleCache, not_writable_error

TEMP_PREFIX = ".tmp-"


def _write_file(path: Path, data: bytes) -> None:
    """Write `data` to a new file and fsync it (module level so tests can slow it down)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view[: 1 << 22]) :]
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _writer_of(shard_name: str) -> str:
    """`<label>-<token>-<seq>.safetensors` (optionally `.tmp-` prefixed) -> `<label>-<token>`."""
    return shard_name.removeprefix(TEMP_PREFIX).removesuffix(SHARD_SUFFIX).rsplit("-", 1)[0]


def _manifest_record(
    name: str, data_size: int, sha256: str, writer: str, entries: list[SampleEntry]
) -> dict[str, Any]:
    return {
        "shard": name,
        "bytes": data_size,
        "sha256": sha256,
        "writer": writer,
        "created": time.time(),
        "samples": [
            {"key": e.key, "sha256": e.sha256, "fields": {k: list(v) for k, v in e.fields.items()}}
            for e in entries
        ],
    }


class CacheWriter:
    """Writes samples into `cache` as shards of `shard_size` samples.

    Use as a context manager (the last partial shard is committed on exit). Samples still in
    the buffer when the process is killed are lost and simply generated again on resume.
    """

    def __init__(self, cache: SampleCache, label: str = "w", shard_size: int = 64):
        if shard_size < 1:
            raise ValueError(f"shard_size must be >= 1, got {shard_size}.")
        self.cache = cache
        self.shard_size = shard_size
        label = re.sub(r"[^A-Za-z0-9_]", "_", label) or "w"
        try:
            for folder in (cache.shard_dir, cache.manifest_dir, cache.lock_dir):
                folder.mkdir(exist_ok=True)
            self.writer_id, self._lock_fd = self._acquire_unique_lock(label)
        except OSError as err:
            raise not_writable_error(cache.root, err) from err
        self.manifest_path = cache.manifest_dir / f"{self.writer_id}{MANIFEST_SUFFIX}"
        self._buffer: list[tuple[str, dict]] = []
        self._buffered_keys: set[str] = set()
        self._seq = 0
        self.written = 0
        recover_dead_writers(cache, self)

    def _acquire_unique_lock(self, label: str) -> tuple[str, int]:
        while True:
            writer_id = f"{label}-{secrets.token_hex(4)}"
            path = self.cache.lock_dir / f"{writer_id}.lock"
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
            try:  # a cleaner may take and unlink the new file between create and flock
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                if os.stat(path).st_ino == os.fstat(fd).st_ino:
                    return writer_id, fd
            except (BlockingIOError, FileNotFoundError):
                pass
            os.close(fd)

    @property
    def pending(self) -> int:
        return len(self._buffer)

    def add(self, key: str, record: SampleRecord) -> bool:
        """Buffer one sample; commits a shard when the buffer is full. False if already stored."""
        if self._lock_fd is None:
            raise RuntimeError(f"cache writer {self.writer_id} is closed; open a new one.")
        if key in self.cache or key in self._buffered_keys:
            return False
        record = dataclasses.replace(record, meta={**record.meta, "key": key})
        self._buffer.append((key, encode_record(record)))
        self._buffered_keys.add(key)
        if len(self._buffer) >= self.shard_size:
            self.flush()
        return True

    def flush(self) -> None:
        """Commit the buffered samples as one shard (no-op when empty)."""
        if not self._buffer:
            return
        data, entries = build_shard(self._buffer, self.writer_id)
        name = f"{self.writer_id}-{self._seq:06d}{SHARD_SUFFIX}"
        temp = self.cache.shard_dir / f"{TEMP_PREFIX}{name}"
        _write_file(temp, data)
        os.replace(temp, self.cache.shard_dir / name)
        _fsync_dir(self.cache.shard_dir)
        record = _manifest_record(
            name, len(data), hashlib.sha256(data).hexdigest(), self.writer_id, entries
        )
        append_line(self.manifest_path, record)
        self.cache._add_shard(record)
        self.cache.stats.written += len(entries)
        self.written += len(entries)
        self._seq += 1
        self._buffer.clear()
        self._buffered_keys.clear()

    def close(self) -> None:
        """Flush and release the writer's lock."""
        if self._lock_fd is None:
            return
        try:
            self.flush()
        finally:
            (self.cache.lock_dir / f"{self.writer_id}.lock").unlink(missing_ok=True)
            os.close(self._lock_fd)
            self._lock_fd = None

    def __enter__(self) -> CacheWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _dead_writer_locks(cache: SampleCache, own_id: str) -> tuple[set[str], list[tuple[Path, int]]]:
    """-> (ids of live writers, [(lock path, fd) of dead writers, now locked by us])."""
    live, dead = {own_id}, []
    for lock in sorted(cache.lock_dir.glob("*.lock")):
        if lock.stem == own_id:
            continue
        try:
            fd = os.open(lock, os.O_RDWR)
        except FileNotFoundError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            live.add(lock.stem)
            os.close(fd)
            continue
        dead.append((lock, fd))
    return live, dead


def recover_dead_writers(cache: SampleCache, adopter: CacheWriter) -> None:
    """Delete temp files of dead writers and adopt their complete, unlisted shards."""
    live, dead = _dead_writer_locks(cache, adopter.writer_id)
    try:
        for temp in cache.shard_dir.glob(f"{TEMP_PREFIX}*"):
            if _writer_of(temp.name) not in live:
                temp.unlink(missing_ok=True)
        cache.refresh()
        known = set(cache.shard_names()) | cache._bad_shards
        for shard in sorted(cache.shard_dir.glob(f"*{SHARD_SUFFIX}")):
            if shard.name not in known and _writer_of(shard.name) not in live:
                _adopt_shard(cache, adopter, shard)
    finally:
        for lock, fd in dead:
            lock.unlink(missing_ok=True)
            os.close(fd)


def _adopt_shard(cache: SampleCache, adopter: CacheWriter, shard: Path) -> None:
    """A complete shard whose writer died before its manifest line: verify, then list it."""
    try:
        writer, entries = read_shard_entries(shard)
        fd = os.open(shard, os.O_RDONLY)
        try:
            for entry in entries:
                if sample_checksum(read_fields(fd, entry.fields)) != entry.sha256:
                    raise ShardError(f"checksum mismatch for sample {entry.key}")
        finally:
            os.close(fd)
    except ShardError as err:
        cache._quarantine(shard.name, f"unlisted shard failed verification: {err}")
        return
    record = _manifest_record(shard.name, shard.stat().st_size, file_sha256(shard), writer, entries)
    append_line(adopter.manifest_path, record)
    cache._add_shard(record)
    warnings.warn(
        f"cache shard {shard} was complete but unlisted (its writer was killed before the "
        f"manifest line); verified {len(entries)} samples and adopted it.",
        RuntimeWarning,
        stacklevel=3,
    )
