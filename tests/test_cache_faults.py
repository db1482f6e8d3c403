"""Fault suite of the cache: damaged manifests never lock users out, `synthesize` finds flipped
shard bytes, write errors name their real cause and leave no temp file."""

from __future__ import annotations

import errno
import json
import random
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
from fixtures_cache import key_of, make_record
from fixtures_cache_synth import FakeSynthesizer, make_specs, manifest_keys

import synthmask.cache.writer as writer_module
from synthmask.cache import CacheNotWritableError, CacheWriteError, SampleCache
from synthmask.synthesis import synthesize_into_cache

N = 12


def fill(root: Path, n: int = N, shard_size: int = 4) -> None:
    synthesize_into_cache(FakeSynthesizer(), SampleCache(root), make_specs(n), 4, "t",
                          shard_size=shard_size, progress=False)  # fmt: skip


def resynthesize(root: Path, n: int = N):
    synth = FakeSynthesizer()
    report = synthesize_into_cache(synth, SampleCache(root), make_specs(n), 4, "again",
                                   shard_size=4, progress=False)  # fmt: skip
    return report, synth


def assert_complete_and_exact(root: Path, n: int = N) -> None:
    cache = SampleCache(root)
    assert sorted(cache.keys()) == [key_of(i) for i in range(n)]
    for i in range(n):
        np.testing.assert_array_equal(cache[key_of(i)].image, make_record(i).image)


def the_manifest(root: Path) -> Path:
    (path,) = (root / "manifest").glob("*.jsonl")
    return path


# ------------------------------------------------------------------- manifests
@pytest.mark.parametrize(
    "bad_line",
    [
        b"{}",
        b"123",
        b'"text"',
        b"[]",
        b"null",
        b'{"shard": "../../etc/x.safetensors"}',
        b"\xff\xfe",
    ],
)
def test_a_bad_manifest_line_warns_once_with_file_and_line_and_is_repaired(
    tmp_path: Path, bad_line: bytes
) -> None:
    fill(tmp_path)
    manifest = the_manifest(tmp_path)
    lines = manifest.read_bytes().splitlines(keepends=True)
    lines[1] = bad_line + b"\n"  # the second shard's line
    manifest.write_bytes(b"".join(lines))
    with pytest.warns(RuntimeWarning, match=rf"{manifest.name} line 2 is not a valid shard"):
        cache = SampleCache(tmp_path)  # never raises
    assert len(cache) == N - 4
    report, synth = resynthesize(tmp_path)
    assert synth.generated == []  # the shard was verified and re-adopted, not regenerated
    assert report.cache_hits == N
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # compacted: the warning is not printed forever
        assert_complete_and_exact(tmp_path)
    assert not manifest.exists() and sorted(manifest_keys(tmp_path)) == [
        key_of(i) for i in range(N)
    ]


def test_a_wrong_field_type_is_skipped_not_raised(tmp_path: Path) -> None:
    fill(tmp_path)
    manifest = the_manifest(tmp_path)
    records = [json.loads(line) for line in manifest.read_text().splitlines()]
    records[0]["samples"][0]["sha256"] = "zz" * 32  # was: ValueError in bytes.fromhex
    del records[1]["samples"][0]["fields"]["image"]  # was: KeyError
    records[2]["bytes"] = "12"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in records))
    with pytest.warns(RuntimeWarning, match="line 1 .*sha256"):
        assert len(SampleCache(tmp_path)) == 0
    report, synth = resynthesize(tmp_path)
    assert synth.generated == [] and report.cache_hits == N
    assert_complete_and_exact(tmp_path)


def test_random_bit_flips_in_a_manifest_never_lock_users_out(tmp_path: Path) -> None:
    """40 single-bit flips (seeded): opening never raises, and one synthesis pass always ends
    with every sample readable and exact (re-adopted, or at worst regenerated)."""
    clean = tmp_path / "clean"
    fill(clean)
    rng = random.Random(0)
    regenerated = 0
    for trial in range(40):
        root = tmp_path / f"t{trial}"
        shutil.copytree(clean, root)
        manifest = the_manifest(root)
        data = bytearray(manifest.read_bytes())
        bit = rng.randrange(len(data) * 8)
        data[bit // 8] ^= 1 << (bit % 8)
        manifest.write_bytes(bytes(data))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            SampleCache(root)
            _, synth = resynthesize(root)
            regenerated += len(synth.generated)
            assert_complete_and_exact(root)
        shutil.rmtree(root)
    assert regenerated <= 40 * 4  # a flip costs at most one shard's samples


# ------------------------------------------------------------------- shards
def test_synthesize_finds_a_flipped_shard_byte_and_regenerates_it(tmp_path: Path) -> None:
    fill(tmp_path)
    shard = sorted((tmp_path / "shards").glob("*.safetensors"))[1]
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0x10
    shard.write_bytes(bytes(data))
    with pytest.warns(RuntimeWarning, match="corrupt"):
        report, synth = resynthesize(tmp_path)
    assert (report.verified, report.regenerated, report.quarantined_shards) == (N - 4, 4, 1)
    assert len(synth.generated) == 4 and report.generated == 4
    assert (tmp_path / "quarantine" / shard.name).exists()
    assert "8 verified" in report.summary() and "4 regenerated" in report.summary()
    assert_complete_and_exact(tmp_path)


# ------------------------------------------------------------------- write errors
def test_a_full_disk_names_enospc_and_leaves_no_temp_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = writer_module._write_all

    def disk_full(fd: int, data: bytes) -> None:
        real(fd, data[: len(data) // 2])
        raise OSError(errno.ENOSPC, "No space left on device")

    cache = SampleCache(tmp_path)
    writer = cache.writer("w", shard_size=2)
    writer.add(key_of(0), make_record(0))
    monkeypatch.setattr(writer_module, "_write_all", disk_full)
    with pytest.raises(CacheWriteError, match=r"No space left on device \[ENOSPC\].*full") as err:
        writer.add(key_of(1), make_record(1))
    assert "chmod" not in str(err.value) and ".tmp-" in str(err.value)
    assert not list((tmp_path / "shards").iterdir())  # the partial temp file is gone
    monkeypatch.setattr(writer_module, "_write_all", real)
    writer.close()  # the retry (same shard name) succeeds: no FileExistsError
    assert sorted(SampleCache(tmp_path).keys()) == [key_of(0), key_of(1)]


def test_a_failed_manifest_append_keeps_the_shard_for_adoption(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_space(path: Path, record: dict) -> None:
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    cache = SampleCache(tmp_path)
    writer = cache.writer("w", shard_size=2)
    assert writer.claim(key_of(0)) and writer.claim(key_of(1))
    monkeypatch.setattr(writer_module, "append_line", no_space)
    writer.add(key_of(0), make_record(0))
    with pytest.raises(CacheWriteError, match="ENOSPC"):
        writer.add(key_of(1), make_record(1))
    monkeypatch.undo()
    writer.close()
    with pytest.warns(RuntimeWarning, match="adopted"):
        report, synth = resynthesize(tmp_path, 2)
    assert synth.generated == [] and report.cache_hits == 2  # adopted, not regenerated


def test_not_a_directory_names_the_file_and_never_suggests_chmod(tmp_path: Path) -> None:
    root = tmp_path / "cache"
    SampleCache(root)
    (root / "shards").write_text("I am a file")
    with pytest.raises(CacheNotWritableError) as err:
        SampleCache(root).writer("w")
    message = str(err.value)
    assert "shards" in message and "is a file where the cache needs a directory" in message
    assert "chmod" not in message


def test_any_damage_to_a_shard_header_is_a_shard_error(tmp_path: Path) -> None:
    """Every single-byte change in the header either leaves a sound shard or raises
    ShardError (a flipped byte once gave KeyError: 'data_offsets' inside synthesize)."""
    from synthmask.cache.shard import ShardError, check_shard

    fill(tmp_path, n=2, shard_size=2)
    (shard,) = (tmp_path / "shards").glob("*.safetensors")
    data = shard.read_bytes()
    header_end = 8 + int.from_bytes(data[:8], "little")
    rng = random.Random(1)
    for position in rng.sample(range(header_end), 300):
        damaged = bytearray(data)
        damaged[position] ^= 1 << rng.randrange(8)
        shard.write_bytes(bytes(damaged))
        try:
            check_shard(shard)
        except ShardError:
            pass


def test_an_extra_garbage_line_in_a_complete_cache_is_compacted_by_synthesize(
    tmp_path: Path,
) -> None:
    fill(tmp_path)
    manifest = the_manifest(tmp_path)
    with open(manifest, "ab") as f:
        f.write(b'{"shard": 7}\n')
    with pytest.warns(RuntimeWarning, match="line 4 is not a valid shard record"):
        report, synth = resynthesize(tmp_path)
    assert synth.generated == [] and report.cache_hits == N
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # rewritten without the line: no warning any more
        assert_complete_and_exact(tmp_path)
