"""Recovery of what dead writers left: temp files, unlisted shards, claims, bad manifest lines,
and strays (entries the cache did not write, see strays.py).

Run by every new writer, by a writer that waits on claims held by others, and by
`synthmask cache repair`. Writers are told apart by their lock files (`writer_states`: live,
stalled or dead, see claims.owner_state); the reaper holds each dead writer's flock while it
works, so one reaper handles a writer at a time. Order matters: a dead writer's complete but
unlisted shards are adopted *before* its claims are removed, so nobody regenerates keys that are
already on disk. A stalled writer (alive, heartbeat stale) only loses its claims.
"""

from __future__ import annotations

import fcntl
import os
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from synthmask.cache.claims import (
    DEAD,
    LIVE,
    STALLED,
    owner_state,
    read_owner,
    reap_claims,
)
from synthmask.cache.index_api import ShardIndex
from synthmask.cache.manifest import COMPACT_PREFIX, MANIFEST_SUFFIX, append_line, compact_manifest
from synthmask.cache.shard import (
    SHARD_SUFFIX,
    ShardError,
    check_shard,
    file_sha256,
    manifest_record,
)
from synthmask.cache.strays import (
    SHARD_NAME,
    TEMP_PREFIX,
    file_kind,
    find_strays,
    is_temp_file,
    quarantine_stray,
)

__all__ = ["TEMP_PREFIX", "RecoveryReport", "WriterStates", "recover_dead_writers"]

RECOVERY_LOCK = ".recovery.flock"  # at the root: not a writer lock
CACHE_FOLDERS = ("shards", "locks", "claims", "manifest")


def writer_of(shard_name: str) -> str:
    """`<label>-<token>-<seq>.safetensors` (optionally `.tmp-` prefixed) -> `<label>-<token>`."""
    return shard_name.removeprefix(TEMP_PREFIX).removesuffix(SHARD_SUFFIX).rsplit("-", 1)[0]


def shard_files(shard_dir: Path) -> list[Path]:
    """The finished shard files in `shard_dir`: regular files (or links to one) with a name a
    writer gives; temp files and strays are not listed."""
    try:
        names = sorted(os.listdir(shard_dir))
    except (FileNotFoundError, NotADirectoryError):
        return []
    return [
        shard_dir / name
        for name in names
        if SHARD_NAME.fullmatch(name) and file_kind(shard_dir / name) is None
    ]


def temp_files(shard_dir: Path) -> list[Path]:
    """Shards being written (or left by a killed writer): regular `.tmp-*` files."""
    try:
        names = sorted(os.listdir(shard_dir))
    except (FileNotFoundError, NotADirectoryError):
        return []
    return [shard_dir / n for n in names if is_temp_file(n) and file_kind(shard_dir / n) is None]


@dataclass
class RecoveryReport:
    """What one recovery pass did."""

    dead_writers: list[str] = field(default_factory=list)
    stalled_writers: list[str] = field(default_factory=list)
    temp_files_removed: int = 0
    shards_adopted: int = 0
    shards_quarantined: int = 0
    claims_removed: int = 0
    manifests_compacted: int = 0
    strays_quarantined: int = 0


@dataclass
class WriterStates:
    """The writers of a cache by their lock files: `live` (fresh heartbeat; the caller's own
    id included), `stalled` (alive, heartbeat stale), `dead` ([(lock, fd)], flock now held by
    the caller, who must close the fds), and each one's owner record with its heartbeat age
    in seconds (`owners[id]["age"]`)."""

    live: set[str] = field(default_factory=set)
    stalled: set[str] = field(default_factory=set)
    dead: list[tuple[Path, int]] = field(default_factory=list)
    owners: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def running(self) -> set[str]:
        """Writers whose files must not be touched (live or stalled)."""
        return self.live | self.stalled

    def close(self) -> None:
        """Release the dead writers' flocks without reaping them (a look only)."""
        for _, fd in self.dead:
            os.close(fd)
        self.dead = []


def writer_states(lock_dir: Path, own_id: str, now: float | None = None) -> WriterStates:
    """Classify every writer lock in `lock_dir` (entries that are not files are skipped:
    strays, moved by recovery)."""
    states = WriterStates(live={own_id})
    now = time.time() if now is None else now
    try:
        locks = sorted(lock_dir.glob("*.lock"))
    except OSError:
        return states
    for lock in locks:
        if lock.stem == own_id or file_kind(lock) is not None:
            continue
        try:
            fd = os.open(lock, os.O_RDWR)
        except OSError:
            continue  # gone meanwhile, or not openable: nothing to reap
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            flock_free = True
        except BlockingIOError:
            flock_free = False
        try:
            age = now - os.fstat(fd).st_mtime
        except OSError:
            age = 0.0
        owner = read_owner(lock) or {"writer": lock.stem}
        states.owners[lock.stem] = {**owner, "age": age}
        state = owner_state(lock, flock_free, now)
        if not flock_free and state == DEAD:
            state = STALLED  # someone holds its flock: take its claims over, leave its lock
        elif flock_free and os.fstat(fd).st_nlink == 0:
            state = LIVE  # unlinked by another reaper meanwhile: not ours to reap
        if state == DEAD:
            states.dead.append((lock, fd))
            continue
        (states.live if state == LIVE else states.stalled).add(lock.stem)
        os.close(fd)
    return states


def dead_writer_locks(lock_dir: Path, own_id: str) -> tuple[set[str], list[tuple[Path, int]]]:
    """-> (ids of running writers: live or stalled, [(lock path, fd) of dead writers, now
    flock-held by us])."""
    states = writer_states(lock_dir, own_id)
    return states.running, states.dead


def quarantine_strays(cache: ShardIndex) -> int:
    """Move the strays of the cache's folders to quarantine/ (with a warning each)."""
    count = 0
    for folder in CACHE_FOLDERS:
        for stray in find_strays(cache.root / folder):
            target = quarantine_stray(stray, cache.quarantine_dir)
            if target is None:
                continue
            count += 1
            warnings.warn(
                f"cache entry {stray.describe()}; moved it to {target}. The cache never writes "
                "such an entry; restore it by hand only if you know what put it there.",
                RuntimeWarning,
                stacklevel=4,
            )
    return count


def recover_dead_writers(cache: ShardIndex, own_id: str, manifest: Path) -> RecoveryReport:
    """Clean up after dead writers and take over stalled writers' claims; adopted shards are
    listed in `manifest` (the caller's)."""
    report = RecoveryReport()
    # One recovery at a time per cache, so two writers never adopt the same shard twice.
    guard = os.open(cache.root / RECOVERY_LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.flock(guard, fcntl.LOCK_EX)
    states = writer_states(cache.lock_dir, own_id)
    report.dead_writers = [lock.stem for lock, _ in states.dead]
    report.stalled_writers = sorted(states.stalled)
    running = states.running
    try:
        report.strays_quarantined = quarantine_strays(cache)
        for temp in temp_files(cache.shard_dir):
            if writer_of(temp.name) not in running:
                temp.unlink(missing_ok=True)
                report.temp_files_removed += 1
        cache.refresh()
        known = cache.known_shards()
        for shard in shard_files(cache.shard_dir):
            if shard.name not in known and writer_of(shard.name) not in running:
                if adopt_shard(cache, manifest, shard):
                    report.shards_adopted += 1
                else:
                    report.shards_quarantined += 1
        if cache.claims_dir.is_dir():
            report.claims_removed = reap_claims(
                cache.lock_dir,
                cache.claims_dir,
                set(report.dead_writers),
                states.live,
                states.stalled,
            )
        report.manifests_compacted = compact_dead_manifests(cache, running)
    finally:
        for lock, fd in states.dead:
            lock.unlink(missing_ok=True)
            os.close(fd)
        os.close(guard)  # releases the flock
    return report


def compact_dead_manifests(cache: ShardIndex, live: set[str]) -> int:
    """Rewrite the manifests with bad or wrong lines, or records of shards that are gone
    (deleted or quarantined), that no live writer appends to (their shards were adopted above,
    so dropping the lines loses nothing); returns the count."""
    count = 0
    damaged = set(cache.bad_manifest_lines) | set(cache.wrong_records) | set(cache.missing_shards)
    for name in sorted(damaged):
        stem = name.removesuffix(MANIFEST_SUFFIX)
        if stem in live and not stem.startswith(COMPACT_PREFIX):
            continue
        path = cache.manifest_dir / name
        drop = cache.wrong_records.get(name, set()) | set(
            cache.missing_shards.get(name, {}).values()
        )
        if path.is_file():
            compact_manifest(path, drop=drop)
            count += 1
        cache.bad_manifest_lines.pop(name, None)
        cache.wrong_records.pop(name, None)
        cache.missing_shards.pop(name, None)
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
    except OSError as err:  # EIO and the like: the file cannot be read back
        cache.quarantine(shard.name, f"unlisted shard could not be read: {err}")
        return False
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
