"""Sample cache: keys, exact round trip, atomicity under SIGKILL, corruption, parallel writers."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from fixtures_cache import key_of, make_record

from synthmask.cache import (
    CacheNotWritableError,
    SampleCache,
    SampleRecord,
    canonical_json,
    sample_key,
)
from synthmask.prompt_types import Prompt

REPO_ROOT = Path(__file__).resolve().parents[1]
TESTS_DIR = Path(__file__).resolve().parent
SUBPROCESS_PRELUDE = f"""
import sys
sys.path.insert(0, {str(TESTS_DIR)!r})
from fixtures_cache import make_record
"""


def assert_same(record: SampleRecord, i: int) -> None:
    expected = make_record(i)
    np.testing.assert_array_equal(record.image, expected.image)
    np.testing.assert_array_equal(record.mask, expected.mask)
    np.testing.assert_array_equal(record.reliability, expected.reliability)
    np.testing.assert_array_equal(record.margin, expected.margin)
    assert record.image.dtype == np.uint8 and record.margin.dtype == np.float16
    assert record.meta == {**expected.meta, "key": key_of(i)}


def write_records(root: Path, indices: list[int], shard_size: int = 2) -> SampleCache:
    cache = SampleCache(root)
    with cache.writer("t", shard_size=shard_size) as writer:
        for i in indices:
            writer.add(key_of(i), make_record(i))
    return cache


def spawn_writer(root: Path, body: str) -> subprocess.Popen:
    """A python subprocess running SUBPROCESS_PRELUDE + body (cache at `root`), stdout piped."""
    code = SUBPROCESS_PRELUDE + f"\nfrom pathlib import Path\nROOT = Path({str(root)!r})\n" + body
    return subprocess.Popen(
        [sys.executable, "-c", code],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO_ROOT,
    )


def wait_for_line(proc: subprocess.Popen, expected: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if line.strip() == expected:
            return
        if not line and proc.poll() is not None:
            raise AssertionError(f"writer exited early: {proc.stderr.read()}")
    raise AssertionError(f"writer did not print {expected!r} in {timeout} s")


# ------------------------------------------------------------------- keys
def test_sample_key_is_sha256_of_canonical_json() -> None:
    prompt = Prompt.from_text_and_words("a photo of a dog", [("dog", 12)])
    config = {"steps": 4, "model": "tiny", "capture": {"step_window": (0.5, 0.5)}}
    expected_text = (
        '{"config":{"capture":{"step_window":[0.5,0.5]},"model":"tiny","steps":4},'
        '"prompt":{"class_words":[{"class_id":12,"end":16,"start":13,"word":"dog"}],'
        '"text":"a photo of a dog"},"seed":7,"v":1}'
    )
    payload = {"v": 1, "config": config, "prompt": prompt, "seed": 7}
    assert canonical_json(payload) == expected_text
    key = sample_key(config, prompt, 7)
    assert key == hashlib.sha256(expected_text.encode()).hexdigest()
    # dict order and Prompt vs JSON dict do not matter; every field does
    assert sample_key(dict(reversed(config.items())), prompt.to_json(), 7) == key
    assert sample_key(config, prompt, 8) != key
    assert sample_key({**config, "steps": 5}, prompt, 7) != key
    with pytest.raises(ValueError, match="finite"):
        sample_key({"guidance": float("nan")}, prompt, 7)
    with pytest.raises(TypeError, match="canonical JSON"):
        sample_key({"x": object()}, prompt, 7)


# ------------------------------------------------------------------- round trip
def test_round_trip_is_exact_and_sharded(tmp_path: Path) -> None:
    write_records(tmp_path, list(range(5)), shard_size=2)
    cache = SampleCache(tmp_path)  # a fresh reader indexes from the manifest
    assert len(cache) == 5 and sorted(cache.keys()) == [key_of(i) for i in range(5)]
    assert len(cache.shard_names()) == 3  # 2 + 2 + 1
    for i in range(5):
        assert_same(cache[key_of(i)], i)
    bool_rel = make_record(0).reliability
    assert set(np.unique(bool_rel)) <= {0, 255}
    assert cache.get("missing") is None
    assert (cache.stats.hits, cache.stats.misses) == (5, 1)
    assert not list((tmp_path / "locks").iterdir())  # writer released its lock
    lines = [
        json.loads(x) for p in (tmp_path / "manifest").iterdir() for x in p.read_text().splitlines()
    ]
    assert sorted(len(x["samples"]) for x in lines) == [1, 2, 2]
    for line in lines:
        data = (tmp_path / "shards" / line["shard"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == line["sha256"] and len(data) == line["bytes"]


def test_resume_skips_cached_keys(tmp_path: Path) -> None:
    cache = write_records(tmp_path, [0, 1, 2])
    with cache.writer("t2") as writer:
        added = [writer.add(key_of(i), make_record(i)) for i in range(5)]
    assert added == [False, False, False, True, True]
    assert cache.stats.written == 3 + 2 and len(SampleCache(tmp_path)) == 5


# ------------------------------------------------------------------- kills
SLOW_SECOND_SHARD = {
    # kill while the second shard's bytes are being written to its temp file
    "shard_bytes": """
import synthmask.cache.writer as W
original, calls = W._write_file, []
def slow_write(path, data):
    calls.append(path)
    if len(calls) == 1:
        return original(path, data)
    with open(path, "wb") as f:
        f.write(data[: len(data) // 2]); f.flush()
    print("MIDWAY", flush=True); time.sleep(60)
W._write_file = slow_write
""",
    # kill after the second shard was renamed into place, before its manifest line
    "before_manifest": """
import synthmask.cache.writer as W
original, calls = W.append_line, []
def slow_append(path, record):
    calls.append(path)
    if len(calls) == 2:
        print("MIDWAY", flush=True); time.sleep(60)
    return original(path, record)
W.append_line = slow_append
""",
    # kill in the middle of appending the second manifest line (a torn JSON line)
    "torn_manifest": """
import synthmask.cache.writer as W
original, calls = W.append_line, []
def torn_append(path, record):
    calls.append(path)
    if len(calls) == 2:
        with open(path, "a") as f:
            f.write(json.dumps(record)[:50]); f.flush()
        print("MIDWAY", flush=True); time.sleep(60)
    return original(path, record)
W.append_line = torn_append
""",
}


@pytest.mark.parametrize("where", list(SLOW_SECOND_SHARD))
def test_sigkill_mid_write_leaves_consistent_cache(tmp_path: Path, where: str) -> None:
    body = (
        "import json, time\n"
        + SLOW_SECOND_SHARD[where]
        + textwrap.dedent(
            """
        from synthmask.cache import SampleCache
        writer = SampleCache(ROOT).writer("r0w0", shard_size=2)
        for i in range(4):
            writer.add(f"key{i:04d}", make_record(i))
        writer.close()
        """
        )
    )
    proc = spawn_writer(tmp_path, body)
    wait_for_line(proc, "MIDWAY")
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)

    reader = SampleCache(tmp_path)  # readers only trust the manifest: the first shard only
    assert sorted(reader.keys()) == [key_of(0), key_of(1)]
    for i in (0, 1):
        assert_same(reader[key_of(i)], i)
    temps = list((tmp_path / "shards").glob(".tmp-*"))
    assert len(temps) == (1 if where == "shard_bytes" else 0)

    # Resume: a new writer cleans the dead writer's temp file or adopts its complete shard.
    cache = SampleCache(tmp_path)
    if where == "shard_bytes":
        writer = cache.writer("r0w0", shard_size=2)
    else:
        with pytest.warns(RuntimeWarning, match="adopted"):
            writer = cache.writer("r0w0", shard_size=2)
    with writer:
        added = [writer.add(key_of(i), make_record(i)) for i in range(4)]
    assert added == [False, False, where == "shard_bytes", where == "shard_bytes"]
    assert not list((tmp_path / "shards").glob(".tmp-*"))
    final = SampleCache(tmp_path)
    assert sorted(final.keys()) == [key_of(i) for i in range(4)]
    for i in range(4):
        assert_same(final[key_of(i)], i)
    stored = [s["key"] for p in (tmp_path / "manifest").iterdir()
              for line in p.read_text().splitlines() if line.endswith("}")
              for s in json.loads(line)["samples"]]  # fmt: skip
    assert sorted(stored) == [key_of(i) for i in range(4)]  # never stored twice


# ------------------------------------------------------------------- corruption
def test_flipped_bytes_are_detected_quarantined_and_regenerated(tmp_path: Path) -> None:
    write_records(tmp_path, list(range(4)), shard_size=2)
    cache = SampleCache(tmp_path)
    shard = cache.shard_of(key_of(2))
    begin, end = cache.entry(key_of(2)).fields["image"]
    data = bytearray(shard.read_bytes())
    data[(begin + end) // 2] ^= 0xFF
    shard.write_bytes(bytes(data))  # same size: only the checksum can tell

    assert_same(cache[key_of(0)], 0)
    with pytest.warns(RuntimeWarning, match=r"corrupt \(checksum mismatch.*generated again"):
        assert cache.get(key_of(2)) is None
    assert sorted(cache.keys()) == [key_of(0), key_of(1)]  # both keys of the bad shard dropped
    assert (tmp_path / "quarantine" / shard.name).exists() and not shard.exists()
    assert "checksum mismatch" in (tmp_path / "quarantine" / f"{shard.name}.reason.txt").read_text()
    assert cache.stats.quarantined_shards == 1

    reopened = SampleCache(tmp_path)
    assert sorted(reopened.keys()) == [key_of(0), key_of(1)]
    with reopened.writer("regen") as writer:
        assert [writer.add(key_of(i), make_record(i)) for i in range(4)] == [
            False,
            False,
            True,
            True,
        ]
    for i in range(4):
        assert_same(SampleCache(tmp_path)[key_of(i)], i)


def test_truncated_shard_is_quarantined_on_open(tmp_path: Path) -> None:
    cache = write_records(tmp_path, list(range(4)), shard_size=2)
    shard = cache.shard_of(key_of(3))
    shard.write_bytes(shard.read_bytes()[:-10])
    with pytest.warns(RuntimeWarning, match="truncated"):
        reopened = SampleCache(tmp_path)
    assert sorted(reopened.keys()) == [key_of(0), key_of(1)]


def test_verify_hashes_whole_shards(tmp_path: Path) -> None:
    cache = write_records(tmp_path, list(range(4)), shard_size=2)
    shard = cache.shard_of(key_of(0))
    data = bytearray(shard.read_bytes())
    data[-1] ^= 0x01  # last byte of the last field
    shard.write_bytes(bytes(data))
    with pytest.warns(RuntimeWarning, match="sha256 does not match"):
        assert SampleCache(tmp_path).verify() == [shard.name]


# ------------------------------------------------------------------- parallel writers
def test_two_writer_processes_in_parallel_store_each_key_once(tmp_path: Path) -> None:
    body = textwrap.dedent(
        """
        import sys
        from synthmask.cache import SampleCache
        lo, hi = int(sys.argv[1]), int(sys.argv[2])
        with SampleCache(ROOT).writer("rank" + sys.argv[1], shard_size=3) as writer:
            for i in range(lo, hi):
                writer.add(f"key{i:04d}", make_record(i))
        """
    )
    code = (
        SUBPROCESS_PRELUDE + f"\nfrom pathlib import Path\nROOT = Path({str(tmp_path)!r})\n" + body
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", code, str(lo), str(hi)], cwd=REPO_ROOT)
        for lo, hi in ((0, 20), (20, 40))
    ]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    cache = SampleCache(tmp_path)
    assert sorted(cache.keys()) == [key_of(i) for i in range(40)]
    stored = [s["key"] for p in (tmp_path / "manifest").iterdir()
              for line in p.read_text().splitlines() for s in json.loads(line)["samples"]]  # fmt: skip
    assert len(stored) == 40 and len(set(stored)) == 40
    assert len(list((tmp_path / "manifest").iterdir())) == 2  # one manifest per writer
    for i in (0, 19, 20, 39):
        assert_same(cache[key_of(i)], i)


def test_overlapping_writers_never_yield_duplicates(tmp_path: Path) -> None:
    cache_a, cache_b = SampleCache(tmp_path), SampleCache(tmp_path)
    with cache_a.writer("a") as wa, cache_b.writer("b") as wb:
        for i in range(3):  # both miss the same keys (indexes not refreshed between them)
            wa.add(key_of(i), make_record(i))
            wb.add(key_of(i), make_record(i))
    reader = SampleCache(tmp_path)
    assert sorted(reader.keys()) == [key_of(i) for i in range(3)] and len(reader) == 3


# ------------------------------------------------------------------- bad directories
def test_cache_dir_that_is_a_file_or_not_writable_gives_clear_errors(tmp_path: Path) -> None:
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    with pytest.raises(NotADirectoryError, match="not a directory"):
        SampleCache(a_file)
    with pytest.raises(CacheNotWritableError, match=r"file\.txt/cache is not writable.*cache_dir"):
        SampleCache(a_file / "cache")
    with pytest.raises(FileNotFoundError, match="synthmask synthesize"):
        SampleCache(tmp_path / "absent", create=False)


def test_read_only_cache_dir_reads_but_refuses_writers(tmp_path: Path) -> None:
    base = Path(tempfile.mkdtemp(prefix="synthmask-ro-"))  # world-traversable, unlike tmp_path
    try:
        root = base / "cache"
        write_records(root, [0, 1])
        for path in [root, *root.rglob("*")]:
            path.chmod(0o555 if path.is_dir() else 0o444)
        base.chmod(0o755)
        body = textwrap.dedent(
            """
            import os
            from PIL import Image
            from synthmask.cache import CacheNotWritableError, SampleCache
            Image.init()  # import everything first: nobody cannot read the Python install
            if os.geteuid() == 0:
                os.setuid(65534)  # root ignores permissions: check as nobody
            cache = SampleCache(ROOT)
            assert len(cache) == 2 and cache.get("key0001").meta["i"] == 1
            try:
                cache.writer("x")
            except CacheNotWritableError as err:
                print("ERROR:", err)
            """
        )
        proc = spawn_writer(root, body)
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        assert f"cache dir {root} is not writable" in out and "cache_dir" in out, out
    finally:
        for path in [base, *base.rglob("*")]:
            path.chmod(0o755)
        shutil.rmtree(base)


def test_fast_index_reads_by_offset(tmp_path: Path) -> None:
    write_records(tmp_path, list(range(6)), shard_size=3)
    cache = SampleCache(tmp_path)
    entry = cache.entry(key_of(4))
    begin, end = entry.fields["margin"]
    with open(cache.shard_of(key_of(4)), "rb") as f:
        raw = os.pread(f.fileno(), end - begin, begin)
    expected = make_record(4).margin
    np.testing.assert_array_equal(np.frombuffer(raw, "<f2").reshape(expected.shape), expected)
