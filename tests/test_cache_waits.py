"""Waiting for other writers' claims is visible and bounded: a claim or lock dated in the
future is not a fresh heartbeat, a stopped (SIGSTOP) writer's claims are taken over after the
staleness window, the waiting run says whom it waits for, and `cache stats` / `cache repair`
show and clear stale claims."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fixtures_cache import key_of
from fixtures_cache_synth import FakeSynthesizer, make_specs

from synthmask.cache import SampleCache
from synthmask.cache import claims as claims_module
from synthmask.cache.claims import Claims, claim_name, owner_state, stale_seconds
from synthmask.cache.commands import main
from synthmask.synthesis import SynthesisReport, synthesize_into_cache

STALE = 3.0  # a short staleness window for these tests (seconds)


@pytest.fixture(autouse=True)
def _short_staleness_window(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(claims_module.STALE_SECONDS_ENV, str(STALE))


def run_in_thread(root: Path, n: int, timeout: float) -> tuple[SynthesisReport | None, float]:
    """A synthesis pass of `n` keys; (its report or None if still running after `timeout`)."""
    result: list[SynthesisReport] = []
    start = time.perf_counter()

    def body() -> None:
        result.append(
            synthesize_into_cache(
                FakeSynthesizer(),
                SampleCache(root),
                make_specs(n),
                4,
                "w",
                shard_size=4,
                progress=False,
            )  # fmt: skip
        )

    thread = threading.Thread(target=body, daemon=True)
    thread.start()
    thread.join(timeout)
    return (result[0] if result else None), time.perf_counter() - start


def claim_as(root: Path, writer: str, host: str, keys: list[str], dated: float) -> None:
    """Claims of `keys` and a lock for `writer` on `host`, every file's mtime set to `dated`."""
    for folder in ("claims", "locks", "shards", "manifest"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    owner = json.dumps({"writer": writer, "host": host, "pid": 4242})
    paths = [root / "claims" / claim_name(key) for key in keys] + [
        root / "locks" / f"{writer}.lock"
    ]
    for path in paths:
        path.write_text(owner)
        os.utime(path, (dated, dated))


def test_claims_dated_in_the_future_do_not_stall_a_run(tmp_path: Path, capsys) -> None:
    future = time.time() + 3600  # a host whose clock runs an hour ahead
    claim_as(tmp_path, "far-1a2b3c4d", "another-host", [key_of(i) for i in range(4)], future)
    orphan = tmp_path / "claims" / f"{key_of(5)}.claim"  # unreadable, dated in the future
    orphan.write_bytes(b"")
    os.utime(orphan, (future, future))
    report, seconds = run_in_thread(tmp_path, 8, timeout=30)
    assert report is not None, "the run still waits for claims dated in the future"
    assert report.generated == 8 and seconds < 15
    assert not list((tmp_path / "claims").glob("*.claim"))


@pytest.fixture
def stopped_writer(tmp_path: Path) -> Iterator[int]:
    """A forked process holding a writer with claims on keys 0..5, then stopped (SIGSTOP)."""
    ready = tmp_path / "ready"
    pid = os.fork()
    if pid == 0:  # child: claim, say so, and sleep until killed
        try:
            writer = SampleCache(tmp_path / "cache").writer("stopped")
            for i in range(6):
                writer.claim(key_of(i))
            ready.write_text(writer.writer_id)
            time.sleep(600)
        finally:
            os._exit(0)
    try:
        deadline = time.time() + 30
        while not ready.exists() and time.time() < deadline:
            time.sleep(0.01)
        assert ready.exists(), "the claiming process did not start"
        os.kill(pid, signal.SIGSTOP)
        yield pid
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_stopped_writers_claims_are_taken_over_after_the_window(
    tmp_path: Path, stopped_writer: int, capsys
) -> None:
    report, seconds = run_in_thread(tmp_path / "cache", 12, timeout=30)
    assert report is not None, "the run still waits for a stopped writer"
    assert report.generated == 12 and report.by_others == 0
    assert STALE * 0.5 <= report.waited_seconds and seconds < 20
    message = capsys.readouterr().err
    assert "waiting 0 s so far for 6 sample(s) claimed by other writers" in message
    assert f"pid {stopped_writer}" in message and f"host {claims_module.HOST}" in message
    assert f"heartbeat stops for {STALE:g} s" in message and key_of(0)[:12] in message
    assert len(SampleCache(tmp_path / "cache")) == 12


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_stats_lists_stale_claims_and_repair_clears_them(
    tmp_path: Path, stopped_writer: int, capsys
) -> None:
    root = tmp_path / "cache"
    assert main(["stats", str(root)]) == 0
    assert "6 live, 0 stale" in capsys.readouterr().out
    time.sleep(STALE + 0.5)
    assert main(["stats", str(root)]) == 0
    out = capsys.readouterr().out
    assert "0 live, 6 stale" in out and "1 stalled" in out
    assert f"pid {stopped_writer}" in out and "stalled): 6 claim(s)" in out
    assert main(["repair", str(root)]) == 0
    assert (
        "removed 0 temp file(s) and 6 claim(s) of 0 dead and 1 stalled" in capsys.readouterr().out
    )
    assert not list((root / "claims").glob("*.claim"))
    assert list((root / "locks").glob("stopped-*.lock"))  # alive: its lock stays
    report, _ = run_in_thread(root, 12, timeout=30)
    assert report is not None and report.generated == 12 and report.waited_seconds == 0


def test_heartbeat_freshness_rules(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    lock = tmp_path / "w-1.lock"
    lock.write_text(json.dumps({"writer": "w-1", "host": claims_module.HOST, "pid": 1}))
    now = time.time()
    assert owner_state(lock, flock_free=False, now=now) == "live"
    assert owner_state(lock, flock_free=True, now=now) == "dead"
    assert owner_state(lock, flock_free=False, now=now + STALE + 1) == "stalled"
    ahead = now + claims_module.CLOCK_SKEW_SECONDS + 5  # dated beyond the skew allowance
    os.utime(lock, (ahead, ahead))
    assert owner_state(lock, flock_free=False, now=now) == "stalled"
    lock.write_text(json.dumps({"writer": "w-1", "host": "another-host", "pid": 1}))
    os.utime(lock, (ahead, ahead))
    assert owner_state(lock, flock_free=False, now=now) == "dead"
    small = now + 10  # within the skew allowance: fresh
    os.utime(lock, (small, small))
    assert owner_state(lock, flock_free=False, now=now) == "live"
    monkeypatch.setenv(claims_module.STALE_SECONDS_ENV, "soon")
    with pytest.raises(ValueError, match="SYNTHMASK_STALE_SECONDS='soon'.*unset it"):
        stale_seconds()


def test_a_resumed_writer_never_removes_a_claim_taken_over(tmp_path: Path) -> None:
    old, new = Claims(tmp_path, "old-1"), Claims(tmp_path, "new-2")
    assert old.try_claim("k")
    (tmp_path / claim_name("k")).unlink()  # reaped while "old" was stopped
    assert new.try_claim("k")
    old.release(["k"])  # "old" resumes and gives back what it thinks it holds
    assert json.loads((tmp_path / claim_name("k")).read_text())["writer"] == "new-2"
