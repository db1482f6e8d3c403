"""Exactly once across processes sharing a cache: claims before generation, waiting for live
claimants, taking over from killed ones (threads, processes, and the real data module)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
from fixtures_cache import key_of
from fixtures_cache_synth import FakeSynthesizer, make_specs, manifest_keys

from synthmask.cache import SampleCache
from synthmask.cache import claims as claims_module
from synthmask.cache.claims import claim_name, owner_is_dead
from synthmask.synthesis import SynthesisReport, synthesize_into_cache

TESTS_DIR = Path(__file__).resolve().parent
REPO_ROOT = TESTS_DIR.parent


def run(root: Path, n: int, synth: FakeSynthesizer, label: str) -> SynthesisReport:
    return synthesize_into_cache(
        synth, SampleCache(root), make_specs(n), batch_size=4, writer_label=label,
        shard_size=4, progress=False,
    )  # fmt: skip


def assert_each_key_once(root: Path, n: int) -> None:
    keys = manifest_keys(root)
    assert sorted(keys) == [key_of(i) for i in range(n)], (len(keys), len(set(keys)))
    assert not list((root / "shards").glob(".tmp-*"))
    assert not list((root / "claims").glob("*.claim"))
    assert not list((root / "locks").glob("*.lock"))
    assert sorted(SampleCache(root).keys()) == [key_of(i) for i in range(n)]


def test_two_concurrent_runs_generate_each_key_once(tmp_path: Path) -> None:
    synths = [FakeSynthesizer(delay=0.01), FakeSynthesizer(delay=0.01)]
    reports: list[SynthesisReport] = [SynthesisReport(), SynthesisReport()]

    def body(k: int) -> None:
        reports[k] = run(tmp_path, 40, synths[k], f"run{k}")

    threads = [threading.Thread(target=body, args=(k,)) for k in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert_each_key_once(tmp_path, 40)
    generated = synths[0].generated + synths[1].generated
    assert sorted(generated) == [key_of(i) for i in range(40)]  # nothing generated twice
    assert min(len(s.generated) for s in synths) > 0  # both did work
    for report in reports:
        assert report.cache_hits + report.generated + report.by_others == 40


def test_claims_of_a_killed_writer_are_taken_over(tmp_path: Path) -> None:
    cache = SampleCache(tmp_path)
    dead = cache.writer("dead")
    assert all(dead.claim(key_of(i)) for i in range(6))
    dead._heartbeat.stop()
    os.close(dead._lock_fd)  # as a SIGKILL would: the flock goes, lock and claims stay
    assert len(list((tmp_path / "claims").glob("*.claim"))) == 6
    synth = FakeSynthesizer()
    report = run(tmp_path, 20, synth, "live")
    assert report.generated == 20 and sorted(synth.generated) == [key_of(i) for i in range(20)]
    assert_each_key_once(tmp_path, 20)


def test_a_live_claimant_is_waited_for_not_duplicated(tmp_path: Path) -> None:
    holder = SampleCache(tmp_path).writer("holder", shard_size=8)
    assert all(holder.claim(key_of(i)) for i in range(4))
    result: list[SynthesisReport] = []
    thread = threading.Thread(
        target=lambda: result.append(run(tmp_path, 12, FakeSynthesizer(), "w"))
    )
    thread.start()
    time.sleep(1.0)
    assert thread.is_alive()  # waiting for the 4 claimed keys
    from fixtures_cache import make_record

    for i in range(4):
        holder.add(key_of(i), make_record(i))
    holder.close()
    thread.join(timeout=30)
    assert result[0].generated == 8 and result[0].by_others == 4
    assert result[0].waited_seconds > 0.5
    assert_each_key_once(tmp_path, 12)


def test_owner_liveness_rules(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    lock = tmp_path / "w-1.lock"
    lock.write_text(json.dumps({"writer": "w-1", "host": claims_module.HOST, "pid": 1}))
    assert owner_is_dead(lock, flock_free=True) and not owner_is_dead(lock, flock_free=False)
    lock.write_text(json.dumps({"writer": "w-1", "host": "another-host", "pid": 1}))
    assert not owner_is_dead(lock, flock_free=True)  # nolock NFS: flock says nothing there
    old = time.time() - claims_module.STALE_SECONDS - 5
    os.utime(lock, (old, old))
    assert owner_is_dead(lock, flock_free=False)  # heartbeat stale: the host is gone
    assert owner_is_dead(tmp_path / "missing.lock", flock_free=False)
    assert claim_name("a/b").endswith(".claim") and "/" not in claim_name("a/b")


def fork_run(root: Path, label: str, n: int, log: Path) -> int:
    """A forked child running a synthesis pass (no re-import: starts in milliseconds)."""
    pid = os.fork()
    if pid == 0:  # child
        code = 1
        try:
            run(root, n, FakeSynthesizer(delay=0.02, log=log), label)
            code = 0
        finally:
            os._exit(code)
    return pid


def wait_ok(pid: int, timeout: float = 60) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            assert os.waitstatus_to_exitcode(status) == 0
            return
        time.sleep(0.02)
    os.kill(pid, signal.SIGKILL)
    raise AssertionError(f"synthesis process {pid} did not finish in {timeout} s")


def logged(path: Path) -> list[str]:
    return path.read_text().split() if path.exists() else []


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_two_processes_one_killed_and_restarted_store_each_key_once(tmp_path: Path) -> None:
    """Two runs on one empty cache, one SIGKILLed mid-way and restarted: n entries, each once."""
    root, n = tmp_path / "cache", 48
    logs = [tmp_path / f"{name}.log" for name in ("a", "b", "a2")]
    a, b = fork_run(root, "a", n, logs[0]), fork_run(root, "b", n, logs[1])
    deadline = time.time() + 30
    while len(logged(logs[0])) < 8 and time.time() < deadline:
        time.sleep(0.01)
    os.kill(a, signal.SIGKILL)
    os.waitpid(a, 0)
    assert 8 <= len(logged(logs[0])) < n  # killed mid-way
    restarted = fork_run(root, "a2", n, logs[2])
    wait_ok(b)
    wait_ok(restarted)
    assert_each_key_once(root, n)
    # Samples the killed run had generated but not committed are generated again: that is
    # the only repeated work (at most one shard plus one batch of the killed run).
    work = logged(logs[0]) + logged(logs[1]) + logged(logs[2])
    assert set(work) == {key_of(i) for i in range(n)} and len(work) - n <= 8


@pytest.mark.slow
def test_two_datamodule_runs_one_killed_store_each_key_once(tmp_path: Path) -> None:
    """The same with the real synthesis path (SyntheticSegDataModule.synthesize, as run by
    `synthmask synthesize`) on the tiny pipeline."""
    from fixtures_synthetic import tiny_pipeline_dir

    pipe, cache_dir, n = tiny_pipeline_dir(), tmp_path / "cache", 24
    body = textwrap.dedent(
        f"""
        import sys, torch
        sys.path.insert(0, {str(TESTS_DIR)!r})
        torch.set_num_threads(1)
        from pathlib import Path
        from fixtures_synthetic import make_synthetic_dm
        dm = make_synthetic_dm(Path({str(pipe)!r}), Path({str(cache_dir)!r}), synthesis={{
                               "num_images": {n}, "batch_size": 2, "shard_size": 2}})
        print("REPORT", dm.synthesize(log_to_wandb=False))
        """
    )

    def start() -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-c", body], cwd=REPO_ROOT,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip

    a, b = start(), start()
    deadline = time.time() + 120
    while len(manifest_keys(cache_dir) if (cache_dir / "manifest").is_dir() else []) < 6:
        assert time.time() < deadline
        time.sleep(0.1)
    a.send_signal(signal.SIGKILL)
    a.wait(timeout=30)
    restarted = start()
    for proc in (b, restarted):
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
    keys = manifest_keys(cache_dir)
    assert len(keys) == n and len(set(keys)) == n
    assert len(SampleCache(cache_dir)) == n
