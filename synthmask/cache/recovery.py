"""Recovery of what dead writers left: temp files, unlisted shards, claims, bad manifest lines.

Run by every new writer, by a writer that waits on claims held by others, and by
`synthmask cache repair`. Dead writers are found by their lock files (claims.owner_is_dead);
the reaper holds each dead writer's flock while it works, so one reaper handles a writer at a
time. Order matters: a dead writer's complete but unlisted shards are adopted *before* its
claims are removed, so nobody regenerates keys that are already on disk.
"""

from __future__ import annotations

import fcntl
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from synthmask.cache.claims import owner_is_dead, reap_claims
from synthmask.cache.index_api import ShardIndex
from synthmask.cache.manifest import COMPACT_PREFIX, MANIFEST_SUFFIX, append_line, compact_manifest
from synthmask.cache.shard import (
    SHARD_SUFFIX,
    ShardError,
    check_shard,
    file_sha256,
    manifest_record,
)

TEMP_PREFIX = ".tmp-"
RECOVERY_LOCK = ".recovery.flock"  # at the root: not a writer lock


def writer_of(shard_name: str) -> str:
    """`<label>-<token>-<seq>.safetensors` (optionally `.tmp-` prefixed) -> `<label>-<token>`."""
    return shard_name.removeprefix(TEMP_PREFIX).removesuffix(SHARD_SUFFIX).rsplit("-", 1)[0]


@dataclass
class RecoveryReport:
    """What one recovery pass did."""

    dead_writers: list[str] = field(default_factory=list)
    temp_files_removed: int = 0
    shards_adopted: int = 0
    shards_quarantined: int = 0
    claims_removed: int = 0
    manifests_compacted: int = 0


def dead_writer_locks(lock_dir: Path, own_id: str) -> tuple[set[str], list[tuple[Path, int]]]:
    """-> (ids of live writers, [(lock path, fd) of dead writers, now flock-held by us])."""
    live, dead = {own_id}, []
    for lock in sorted(lock_dir.glob("*.lock")):
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
        if os.fstat(fd).st_nlink == 0 or not owner_is_dead(lock, flock_free=True):
            live.add(lock.stem)  # unlinked by another reaper, or an owner on another host
            os.close(fd)
            continue
        dead.append((lock, fd))
    return live, dead


def recover_dead_writers(cache: ShardIndex, own_id: str, manifest: Path) -> RecoveryReport:
    """Clean up after dead writers; adopted shards are listed in `manifest` (the caller's)."""
    report = RecoveryReport()
    # One recovery at a time per cache, so two writers never adopt the same shard twice.
    guard = os.open(cache.root / RECOVERY_LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.flock(guard, fcntl.LOCK_EX)
    live, dead = dead_writer_locks(cache.lock_dir, own_id)
    report.dead_writers = [lock.stem for lock, _ in dead]
    try:
        for temp in cache.shard_dir.glob(f"{TEMP_PREFIX}*"):
            if writer_of(temp.name) not in live:
                temp.unlink(missing_ok=True)
                report.temp_files_removed += 1
        cache.refresh()
        known = cache.known_shards()
        for shard in sorted(cache.shard_dir.glob(f"*{SHARD_SUFFIX}")):
            if shard.name not in known and writer_of(shard.name) not in live:
                if adopt_shard(cache, manifest, shard):
                    report.shards_adopted += 1
                else:
                    report.shards_quarantined += 1
        if cache.claims_dir.is_dir():
            report.claims_removed = reap_claims(
                cache.lock_dir, cache.claims_dir, set(report.dead_writers), live
            )
        report.manifests_compacted = compact_dead_manifests(cache, live)
    finally:
        for lock, fd in dead:
            lock.unlink(missing_ok=True)
            os.close(fd)
        os.close(guard)  # releases the flock
    return report


def compact_dead_manifests(cache: ShardIndex, live: set[str]) -> int:
    """Rewrite the manifests with bad or wrong lines that no live writer appends to (their
    shards were adopted above, so dropping the lines loses nothing); returns the count."""
    count = 0
    for name in sorted(set(cache.bad_manifest_lines) | set(cache.wrong_records)):
        stem = name.removesuffix(MANIFEST_SUFFIX)
        if stem in live and not stem.startswith(COMPACT_PREFIX):
            continue
        path = cache.manifest_dir / name
        if path.exists():
            compact_manifest(path, drop=cache.wrong_records.get(name, set()))
            count += 1
        cache.bad_manifest_lines.pop(name, None)
        cache.wrong_records.pop(name, None)
    if count:
        cache.refresh()
    return count


def adopt_shard(cache: ShardIndex, manifest: Path, shard: Path) -> bool:
    """A complete shard with no valid manifest line: verify every sample, then list it in
    `manifest` (True), or quarantine it (False)."""
    try:
        writer, entries = check_shard(shard)
    except ShardError as err:
        cache.quarantine(shard.name, f"unlisted shard failed verification: {err}")
        return False
    except FileNotFoundError:
        return False  # adopted and moved by another process meanwhile
    record: dict[str, Any] = manifest_record(
        shard.name, shard.stat().st_size, file_sha256(shard), writer, entries
    )
    append_line(manifest, record)
    cache.add_shard(record, source=manifest.name)
    warnings.warn(
        f"cache shard {shard} was complete but unlisted (its writer was killed before the "
        f"manifest line, or the line was damaged); verified {len(entries)} samples and "
        "adopted it.",
        RuntimeWarning,
        stacklevel=3,
    )
    return True
