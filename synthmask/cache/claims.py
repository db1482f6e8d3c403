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
  dead when its heartbeat is older than the staleness window. In that mode a hung-but-alive
  owner can be taken over; the writer re-checks the index before each commit and drops keys
  another writer committed meanwhile, so a duplicate costs work, not correctness of the index
  (the first indexed copy wins).

Waits are bounded. A heartbeat is fresh while its age lies in [-CLOCK_SKEW_SECONDS,
stale_seconds()] (`STALE_SECONDS`, or `$SYNTHMASK_STALE_SECONDS`): a lock dated further in the
future (clock skew, another host, a hand-set mtime) is stale, not forever fresh. An owner on this
host whose flock is held but whose heartbeat is stale is *stalled* (stopped with SIGSTOP, or hung
with its heartbeat thread): it is alive, so its lock and temp files stay, but its claims are
taken over (`reap_claims`); if it resumes, it drops the keys others committed meanwhile and
never removes a claim that no longer names it.
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
STALE_SECONDS = 60.0  # default staleness window; `$SYNTHMASK_STALE_SECONDS` overrides it
STALE_SECONDS_ENV = "SYNTHMASK_STALE_SECONDS"
CLOCK_SKEW_SECONDS = 60.0  # a heartbeat dated further in the future than this is stale
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


def stale_seconds() -> float:
    """The staleness window: `$SYNTHMASK_STALE_SECONDS` when set (> 0), else STALE_SECONDS."""
    raw = os.environ.get(STALE_SECONDS_ENV, "").strip()
    if raw:
        try:
            value = float(raw)
        except ValueError:
            value = 0.0
        if not value > 0 or value != value or value == float("inf"):
            raise ValueError(
                f"{STALE_SECONDS_ENV}={raw!r} is not a number of seconds > 0; unset it (default "
                f"{STALE_SECONDS:g}) or set e.g. {STALE_SECONDS_ENV}=120."
            )
        return value
    return STALE_SECONDS


def heartbeat_is_fresh(age: float) -> bool:
    """Whether a heartbeat `age` seconds old is fresh (dated at most CLOCK_SKEW_SECONDS in the
    future and at most stale_seconds() in the past)."""
    return -CLOCK_SKEW_SECONDS <= age <= stale_seconds()


LIVE, STALLED, DEAD = "live", "stalled", "dead"


def owner_state(lock: Path, flock_free: bool, now: float | None = None) -> str:
    """LIVE, STALLED or DEAD: the state of the writer of `lock`, given whether its flock could
    be taken (see the module docstring).

    Same host: `flock` is authoritative for death on every file system (the kernel releases it
    when the process dies); a held flock with a stale heartbeat is STALLED. Other host: `flock`
    is not trusted (`nolock` NFS mounts do not share locks), so a stale heartbeat means DEAD.
    """
    try:
        age = (time.time() if now is None else now) - lock.stat().st_mtime
    except FileNotFoundError:
        return DEAD
    fresh = heartbeat_is_fresh(age)
    owner = read_owner(lock)
    if owner is None:  # being created right now, or torn: judge by the heartbeat alone
        return DEAD if flock_free and not fresh else LIVE if fresh else STALLED
    if owner.get("host") == HOST:
        return DEAD if flock_free else LIVE if fresh else STALLED
    return LIVE if fresh else DEAD


def owner_is_dead(lock: Path, flock_free: bool, now: float | None = None) -> bool:
    """Whether the writer of `lock` is dead (see `owner_state`)."""
    return owner_state(lock, flock_free, now) == DEAD


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
        """Remove our claims of `keys` (after their shard is committed, or when not needed);
        a claim file that names another writer now (ours was taken over) is left alone."""
        for key in list(keys):
            if key in self.held:
                path = self.dir / claim_name(key)
                owner = read_owner(path)
                if owner is not None and owner["writer"] == self.writer_id:
                    path.unlink(missing_ok=True)
                self.held.discard(key)

    def lost(self) -> set[str]:
        """Held keys whose claim file no longer names us (taken over by a reaper)."""
        gone = set()
        for key in self.held:
            owner = read_owner(self.dir / claim_name(key))
            if owner is None or owner["writer"] != self.writer_id:
                gone.add(key)
        return gone


def reap_claims(
    lock_dir: Path,
    claims_dir: Path,
    dead: set[str],
    live: set[str],
    stalled: set[str] | frozenset[str] = frozenset(),
) -> int:
    """Remove the claims of the `dead` and `stalled` writers, and orphans: claims whose owner
    has no lock file, or unreadable ones whose mtime is not a fresh heartbeat (older than the
    staleness window, or dated in the future beyond the clock skew). Call only while holding
    the dead writers' flocks (so one reaper at a time). Entries that are not files (a
    directory named like a claim) are left to recovery, which moves them to quarantine/.
    Returns how many were removed."""
    removed = 0
    now = time.time()
    for path in claims_dir.glob(f"*{CLAIM_SUFFIX}"):
        if not path.is_file():
            continue
        owner = read_owner(path)
        if owner is None:
            try:
                if heartbeat_is_fresh(now - path.stat().st_mtime):
                    continue
            except FileNotFoundError:
                continue
        elif owner["writer"] in stalled:
            pass  # alive but stopped: its claims are taken over, its lock stays
        elif owner["writer"] in live:
            continue
        elif owner["writer"] not in dead and (lock_dir / f"{owner['writer']}.lock").exists():
            continue  # a writer another reaper is handling, or one that just started
        path.unlink(missing_ok=True)
        removed += 1
    return removed


class Heartbeat:
    """A daemon thread touching `path` every `interval` seconds until `stop()`."""

    def __init__(self, path: Path, interval: float | None = None) -> None:
        if interval is None:  # several beats per staleness window, even when it is short
            interval = min(HEARTBEAT_SECONDS, stale_seconds() / 4)
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
