"""`CacheWriter`: claims keys, buffers samples and commits them as atomic shards.

Commit protocol of a shard: write `shards/.tmp-<shard>` -> fsync -> `os.replace` to
`shards/<shard>` -> fsync the directory -> append its manifest line (fsync) -> remove the
claims of its keys. A kill at any point leaves either nothing visible, an ignored temp file
(deleted by the next writer), or a complete shard without a manifest line (verified and adopted
by the next writer, before the dead writer's claims are removed). Each writer holds an `flock`
on `locks/<writer>.lock` for its lifetime (owner inside, mtime touched as a heartbeat), so
others can tell dead writers from live ones (claims.py says which guarantee holds where).

A failed write (disk full, permission, not a directory) removes its temp file and raises
`CacheWriteError` naming the real cause; the samples stay buffered, so `flush` can be retried.
"""

from __future__ import annotations

import dataclasses
import fcntl
import hashlib
import os
import re
import secrets
from pathlib import Path

from synthmask.cache.claims import Claims, Heartbeat, owner_json
from synthmask.cache.errors import not_writable_error, write_error
from synthmask.cache.index_api import ShardIndex
from synthmask.cache.manifest import MANIFEST_SUFFIX, append_line
from synthmask.cache.record import SampleRecord, encode_record
from synthmask.cache.recovery import TEMP_PREFIX, RecoveryReport, recover_dead_writers
from synthmask.cache.shard import SHARD_SUFFIX, build_shard, manifest_record


def _write_all(fd: int, data: bytes) -> None:
    """Write all of `data` to `fd` (module level so tests can make writes fail)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view[: 1 << 22]) :]


def _write_file(path: Path, data: bytes) -> None:
    """Write `data` to a new file and fsync it; on any error the file is removed."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        _write_all(fd, data)
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        path.unlink(missing_ok=True)
        raise
    os.close(fd)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class CacheWriter:
    """Writes samples into `cache` (a `SampleCache`; see index_api.py) as shards of
    `shard_size` samples.

    Use as a context manager (the last partial shard is committed on exit). Samples still in
    the buffer when the process is killed are lost and simply generated again on resume.
    `claim(key)` before generating a key makes concurrent writers generate it once; `add`
    works with or without a claim.
    """

    def __init__(self, cache: ShardIndex, label: str = "w", shard_size: int = 64):
        if shard_size < 1:
            raise ValueError(f"shard_size must be >= 1, got {shard_size}.")
        self.cache = cache
        self.shard_size = shard_size
        label = re.sub(r"[^A-Za-z0-9_]", "_", label) or "w"
        try:
            for folder in (cache.shard_dir, cache.manifest_dir, cache.lock_dir, cache.claims_dir):
                folder.mkdir(exist_ok=True)
            self.writer_id, self._lock_fd = self._acquire_unique_lock(label)
        except OSError as err:
            raise not_writable_error(cache.root, err) from err
        self.lock_path = cache.lock_dir / f"{self.writer_id}.lock"
        self.manifest_path = cache.manifest_dir / f"{self.writer_id}{MANIFEST_SUFFIX}"
        self.claims = Claims(cache.claims_dir, self.writer_id)
        self._heartbeat = Heartbeat(self.lock_path)
        self._buffer: list[tuple[str, dict]] = []
        self._buffered_keys: set[str] = set()
        self._seq = 0
        self.written = 0
        self.dropped = 0  # buffered keys another writer committed first
        self._stranded: set[str] = set()  # keys of a shard whose manifest line failed
        self.recovered = self.recover()  # what this writer cleaned up on start

    def _acquire_unique_lock(self, label: str) -> tuple[str, int]:
        while True:
            writer_id = f"{label}-{secrets.token_hex(4)}"
            path = self.cache.lock_dir / f"{writer_id}.lock"
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
            try:  # a cleaner may take and unlink the new file between create and flock
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                if os.stat(path).st_ino == os.fstat(fd).st_ino:
                    os.write(fd, owner_json(writer_id))
                    return writer_id, fd
            except (BlockingIOError, FileNotFoundError):
                pass
            os.close(fd)

    def recover(self) -> RecoveryReport:
        """Clean up after dead writers (temp files, unlisted shards, claims, bad manifests)."""
        try:
            return recover_dead_writers(self.cache, self.writer_id, self.manifest_path)
        except OSError as err:
            raise write_error(self.cache.root, Path(err.filename or self.cache.root), err) from err

    @property
    def pending(self) -> int:
        return len(self._buffer)

    def claim(self, key: str) -> bool:
        """Claim `key` before generating it: True if this writer may generate it now; False
        when it is stored already or another writer holds its claim."""
        self._check_open()
        if key in self._buffered_keys:
            return True
        if key in self.cache:
            return False
        try:
            return self.claims.try_claim(key)
        except OSError as err:
            raise write_error(self.cache.root, self.cache.claims_dir, err) from err

    def release(self, keys: list[str] | set[str]) -> None:
        """Give back claims of keys this writer will not generate after all."""
        self.claims.release(set(keys) - self._buffered_keys)

    def _check_open(self) -> None:
        if self._lock_fd is None:
            raise RuntimeError(f"cache writer {self.writer_id} is closed; open a new one.")

    def add(self, key: str, record: SampleRecord) -> bool:
        """Buffer one sample; commits a shard when the buffer is full. False if already stored."""
        self._check_open()
        if key in self.cache or key in self._buffered_keys:
            self.claims.release([key])
            return False
        record = dataclasses.replace(record, meta={**record.meta, "key": key})
        self._buffer.append((key, encode_record(record)))
        self._buffered_keys.add(key)
        if len(self._buffer) >= self.shard_size:
            self.flush()
        return True

    def flush(self) -> None:
        """Commit the buffered samples as one shard (no-op when empty).

        Keys another writer committed meanwhile (possible only when a claim was taken over, see
        claims.py) are dropped first, so the index never holds two copies of a key from here.
        """
        if not self._buffer:
            return
        self.cache.refresh()
        kept = [(key, fields) for key, fields in self._buffer if key not in self.cache]
        self.dropped += len(self._buffer) - len(kept)
        if not kept:
            self._clear_buffer()
            return
        data, entries = build_shard(kept, self.writer_id)
        name = f"{self.writer_id}-{self._seq:06d}{SHARD_SUFFIX}"
        temp = self.cache.shard_dir / f"{TEMP_PREFIX}{name}"
        try:
            _write_file(temp, data)
            os.replace(temp, self.cache.shard_dir / name)
            _fsync_dir(self.cache.shard_dir)
        except OSError as err:
            temp.unlink(missing_ok=True)
            raise write_error(self.cache.root, temp, err) from err
        record = manifest_record(
            name, len(data), hashlib.sha256(data).hexdigest(), self.writer_id, entries
        )
        self._seq += 1  # the shard is in place: never reuse its name, even if the line fails
        try:
            append_line(self.manifest_path, record)
        except OSError as err:
            # The shard stays unlisted and is adopted after this writer ends; its claims are
            # kept until then (reaped after the adoption) so nobody regenerates its keys.
            self._stranded |= self._buffered_keys
            self._buffer.clear()
            self._buffered_keys.clear()
            raise write_error(self.cache.root, self.manifest_path, err) from err
        self.cache.add_shard(record, source=self.manifest_path.name)
        self.cache.stats.written += len(entries)
        self.written += len(entries)
        self._clear_buffer()

    def _clear_buffer(self) -> None:
        self.claims.release(self._buffered_keys)
        self._buffer.clear()
        self._buffered_keys.clear()

    def close(self) -> None:
        """Flush, give back every claim and release the writer's lock."""
        if self._lock_fd is None:
            return
        try:
            self.flush()
        finally:
            self._heartbeat.stop()
            self.claims.release(self.claims.held - self._stranded)
            self.lock_path.unlink(missing_ok=True)
            os.close(self._lock_fd)
            self._lock_fd = None

    def __enter__(self) -> CacheWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
