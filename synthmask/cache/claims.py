"""Claims: a key is claimed before it is generated, so concurrent writers generate it once.

Files (under the cache root):
```
locks/<writer>.lock    created O_EXCL by a writer, flock-held for its life; JSON inside names
                       the owner (writer, host, pid); its mtime is the heartbeat (touched every
                       `HEARTBEAT_SECONDS` by a daemon thread)
claims/<key>.claim     created O_EXCL by the writer that generates `key`; JSON inside names the
                       owner; removed after the key's shard is committed (manifest line written)
```
A writer generates a key only after it created the key's claim file, so two writers never work
on one key at once. Claims of a dead owner are taken over: `owner_is_dead` decides, and the
reaper (recovery.py) removes them while it holds the dead owner's flock, after adopting the
shards the owner finished but did not list.

Which guarantee holds where:
- Local POSIX file systems (ext4, xfs, btrfs, tmpfs): `O_CREAT | O_EXCL` and `rename` are
  atomic and `flock` is released by the kernel when its process dies (SIGKILL included), so a
  killed owner is detected at once and its claims are taken over by exactly one reaper.
- NFSv3/v4 (Linux client): `O_EXCL` create is atomic on the server and `flock` is mapped onto
  NFS byte-range locks (NLM/NFSv4 leases), so the same holds across hosts, except that a
  crashed *host* keeps its locks until the server's lease expires (about 90 s). With `nolock`
  mounts (or file systems without shared locks), `flock` is only seen on one host: a writer
  then trusts `flock` only for owners on its own host, and declares an owner on another host
  dead when its heartbeat is older than `STALE_SECONDS` (set it well above the clock skew
  between hosts). In that mode a hung-but-alive owner can be taken over; the writer re-checks
  the index before each commit and drops keys another writer committed meanwhile, so a
  duplicate costs work, not correctness of the index (the first indexed copy wins).
"""

from __future__ import annotations

import json
import os
import re
import socket
import threading
import time
from pathlib import Path

HEARTBEAT_SECONDS = 5.0
STALE_SECONDS = 60.0
CLAIM_SUFFIX = ".claim"
_SAFE = re.compile(r"[A-Za-z0-9_-]{1,128}")
HOST = socket.gethostname()


def claim_name(key: str) -> str:
    """File name of `key`'s claim (keys are sha256 hex; anything else is hashed)."""
    if _SAFE.fullmatch(key):
        return key + CLAIM_SUFFIX
    import hashlib

    return hashlib.sha256(key.encode("utf-8")).hexdigest() + CLAIM_SUFFIX


def owner_json(writer_id: str) -> bytes:
    return json.dumps({"writer": writer_id, "host": HOST, "pid": os.getpid()}).encode()


def read_owner(path: Path) -> dict | None:
    """The owner record inside a lock or claim file (None: gone, empty or unreadable)."""
    try:
        data = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and isinstance(data.get("writer"), str) else None


def owner_is_dead(lock: Path, flock_free: bool, now: float | None = None) -> bool:
    """Whether the writer of `lock` is dead, given whether its flock could be taken.

    Same host: `flock` is authoritative on every file system (the kernel releases it when the
    process dies). Other host: `flock` is trusted only together with a stale heartbeat, since
    `nolock` NFS mounts do not share locks between hosts.
    """
    try:
        age = (now or time.time()) - lock.stat().st_mtime
    except FileNotFoundError:
        return True
    owner = read_owner(lock)
    if owner is None:  # being created right now, or torn: judge by the heartbeat alone
        return flock_free and age > STALE_SECONDS
    if owner.get("host") == HOST:
        return flock_free
    return age > STALE_SECONDS


class Claims:
    """The claims of one writer (`writer_id`) in `claims_dir`."""

    def __init__(self, claims_dir: Path, writer_id: str) -> None:
        self.dir = claims_dir
        self.writer_id = writer_id
        self.held: set[str] = set()
        self._content = owner_json(writer_id)

    def try_claim(self, key: str) -> bool:
        """Claim `key` (True), or False when another writer holds its claim."""
        if key in self.held:
            return True
        path = self.dir / claim_name(key)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            return False
        try:
            os.write(fd, self._content)
        finally:
            os.close(fd)
        self.held.add(key)
        return True

    def release(self, keys: list[str] | set[str]) -> None:
        """Remove our claims of `keys` (after their shard is committed, or when not needed)."""
        for key in list(keys):
            if key in self.held:
                (self.dir / claim_name(key)).unlink(missing_ok=True)
                self.held.discard(key)

    def lost(self) -> set[str]:
        """Held keys whose claim file no longer names us (taken over by a reaper)."""
        gone = set()
        for key in self.held:
            owner = read_owner(self.dir / claim_name(key))
            if owner is None or owner["writer"] != self.writer_id:
                gone.add(key)
        return gone


def reap_claims(lock_dir: Path, claims_dir: Path, dead: set[str], live: set[str]) -> int:
    """Remove the claims of the `dead` writers, and orphans: claims whose owner has no lock
    file, or unreadable ones older than STALE_SECONDS. Call only while holding the dead
    writers' flocks (so one reaper at a time). Returns how many were removed."""
    removed = 0
    now = time.time()
    for path in claims_dir.glob(f"*{CLAIM_SUFFIX}"):
        owner = read_owner(path)
        if owner is None:
            try:
                if now - path.stat().st_mtime <= STALE_SECONDS:
                    continue
            except FileNotFoundError:
                continue
        elif owner["writer"] in live:
            continue
        elif owner["writer"] not in dead and (lock_dir / f"{owner['writer']}.lock").exists():
            continue  # a writer another reaper is handling, or one that just started
        path.unlink(missing_ok=True)
        removed += 1
    return removed


class Heartbeat:
    """A daemon thread touching `path` every `interval` seconds until `stop()`."""

    def __init__(self, path: Path, interval: float = HEARTBEAT_SECONDS) -> None:
        self.path = path
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, args=(interval,), name=f"heartbeat-{path.stem}", daemon=True
        )
        self._thread.start()

    def _run(self, interval: float) -> None:
        while not self._stop.wait(interval):
            try:
                os.utime(self.path)
            except OSError:
                return  # reaped (we were declared dead) or the cache went away

    def stop(self) -> None:
        self._stop.set()
