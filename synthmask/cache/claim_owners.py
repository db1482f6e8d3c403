"""Who holds which claims: for the wait messages of synthesis and for `synthmask cache stats`.

A claim's owner is *live* (fresh heartbeat: it is generating the key), *stalled* (alive on this
host but its heartbeat stopped: stopped with SIGSTOP, or hung), *dead* (its flock is free, or it
is on another host with a stale heartbeat) or an *orphan* (no lock file: its writer ended
without removing it). Claims of all but live owners are stale: the next recovery removes them
(every waiting writer runs one each poll; so does `synthmask cache repair`).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from synthmask.cache.claims import (
    CLAIM_SUFFIX,
    DEAD,
    LIVE,
    STALLED,
    claim_name,
    heartbeat_is_fresh,
    read_owner,
    stale_seconds,
)
from synthmask.cache.recovery import writer_states

ORPHAN = "orphan"


@dataclass
class ClaimOwner:
    """One writer's claims (among those asked about) and what is known of it."""

    writer: str
    state: str  # LIVE, STALLED, DEAD or ORPHAN
    host: str = "?"
    pid: int | str = "?"
    heartbeat_age: float | None = None  # seconds since its lock was touched (None: no lock)
    claims: list[str] = field(default_factory=list)  # claim file names

    @property
    def stale(self) -> bool:
        return self.state != LIVE

    def describe(self) -> str:
        """`w-1a2b3c4d (host h, pid 42, heartbeat 3 s ago, live): 12 claims`."""
        if self.heartbeat_age is None:
            beat = "no lock file"
        elif self.heartbeat_age < 0:
            beat = f"heartbeat dated {-self.heartbeat_age:.0f} s in the future"
        else:
            beat = f"heartbeat {self.heartbeat_age:.0f} s ago"
        return (
            f"{self.writer} (host {self.host}, pid {self.pid}, {beat}, {self.state}): "
            f"{len(self.claims)} claim(s)"
        )


def claim_owners(
    claims_dir: Path, lock_dir: Path, keys: Iterable[str] | None = None
) -> list[ClaimOwner]:
    """The owners of the claims of `keys` (of every claim when None), live ones first.

    Reads only: the dead writers' flocks taken to tell them apart are released at once.
    """
    if keys is None:
        try:
            names = sorted(p.name for p in claims_dir.glob(f"*{CLAIM_SUFFIX}") if p.is_file())
        except OSError:
            names = []
    else:
        names = [claim_name(key) for key in keys]
    states = writer_states(lock_dir, own_id="")
    states.close()
    owners: dict[str, ClaimOwner] = {}
    now = time.time()
    for name in names:
        path = claims_dir / name
        record = read_owner(path)
        if record is None:
            try:
                age = now - os.stat(path).st_mtime
            except OSError:
                continue  # released meanwhile (or never there)
            writer = "(unreadable claim)"
            state = LIVE if heartbeat_is_fresh(age) else ORPHAN
            owner = owners.setdefault(writer, ClaimOwner(writer, state, heartbeat_age=age))
        else:
            writer = record["writer"]
            owner = owners.get(writer)
            if owner is None:
                owner = _owner(writer, record, states.live, states.stalled, states.owners)
                owners[writer] = owner
        owner.claims.append(name)
    order = {LIVE: 0, STALLED: 1, DEAD: 2, ORPHAN: 3}
    return sorted(owners.values(), key=lambda o: (order[o.state], o.writer))


def _owner(
    writer: str, record: dict, live: set[str], stalled: set[str], locks: dict[str, dict]
) -> ClaimOwner:
    lock = locks.get(writer)
    if lock is None:
        state = ORPHAN
    elif writer in live:
        state = LIVE
    elif writer in stalled:
        state = STALLED
    else:
        state = DEAD
    info = lock or record
    return ClaimOwner(
        writer,
        state,
        host=str(info.get("host", "?")),
        pid=info.get("pid", "?"),
        heartbeat_age=None if lock is None else float(lock["age"]),
    )


def waiting_message(owners: list[ClaimOwner], keys: list[str], waited: float) -> str:
    """What a run waiting for other writers' claims of `keys` tells the user."""
    shown = ", ".join(key[:12] for key in keys[:3])
    more = f" and {len(keys) - 3} more" if len(keys) > 3 else ""
    window = stale_seconds()
    lines = [
        f"waiting {waited:.0f} s so far for {len(keys)} sample(s) claimed by other writers "
        f"({shown}{more}):"
    ]
    lines += [f"  {owner.describe()}" for owner in owners]
    lines.append(
        "  Each is waited for while its writer's heartbeat is fresh (it is generating them); "
        f"claims of a writer whose heartbeat stops for {window:g} s (stopped, hung, or on a "
        "host whose clock is off) are taken over, so this wait ends at most "
        f"{window:g} s after the last heartbeat. Stale ones now: "
        f"{sum(len(o.claims) for o in owners if o.stale)}."
    )
    return "\n".join(lines)


WAIT_POLL_SECONDS = 0.5  # poll interval while other writers hold claims on the wanted keys
WAIT_REPORT_SECONDS = 30.0  # a waiting run says whom it waits for at first, then this often


@dataclass
class ClaimWait:
    """One stretch of waiting for other writers' claims: each ``poll`` reports (at first, then
    every ``WAIT_REPORT_SECONDS``) which keys and whose claims, sleeps one poll interval and
    reaps dead or stalled claimers (``recover``), so their keys are taken over next pass.
    ``reset`` after progress starts a new stretch."""

    claims_dir: Path
    lock_dir: Path
    log: Callable[[str], None]
    started: float | None = None
    last_report: float | None = None

    def poll(self, keys: list[str], recover: Callable[[], object]) -> float:
        """Wait once for ``keys``; the seconds spent."""
        start = time.perf_counter()
        self.started = start if self.started is None else self.started
        if self.last_report is None or start - self.last_report >= WAIT_REPORT_SECONDS:
            owners = claim_owners(self.claims_dir, self.lock_dir, keys)
            self.log(waiting_message(owners, keys, start - self.started))
            self.last_report = start
        time.sleep(WAIT_POLL_SECONDS)
        recover()
        return time.perf_counter() - start

    def reset(self) -> None:
        self.started = self.last_report = None
