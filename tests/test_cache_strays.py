"""What `synthmask cache verify|repair|stats` and synthesis make of a cache whose files are
missing or are not what the cache writes: listed shards deleted, directories where files belong,
dangling links, renamed copies, temp files of live writers, and full disks told apart."""

from __future__ import annotations

import errno
import os
import shutil
import threading
import warnings
from pathlib import Path

import pytest
from fixtures_cache import key_of
from fixtures_cache_synth import FakeSynthesizer, make_specs

import synthmask.cache.errors as errors_module
from synthmask.cache import SampleCache
from synthmask.cache.commands import main
from synthmask.cache.errors import write_error
from synthmask.synthesis import SynthesisReport, synthesize_into_cache

N = 32  # 4 shards of 8


def fill(root: Path, n: int = N) -> SynthesisReport:
    return synthesize_into_cache(FakeSynthesizer(), SampleCache(root), make_specs(n), 8, "t",
                                 shard_size=8, progress=False)  # fmt: skip


def command(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        code = main(args)
    out = capsys.readouterr()
    return code, out.out + out.err


def shards(root: Path) -> list[Path]:
    return sorted((root / "shards").glob("*.safetensors"))


def test_a_deleted_listed_shard_is_damage_until_repaired(tmp_path: Path, capsys) -> None:
    fill(tmp_path)
    gone = shards(tmp_path)[1]
    gone.unlink()
    code, out = command(["verify", str(tmp_path)], capsys)
    assert code == 1 and f"{gone}: listed in" in out and "8 samples" in out
    with pytest.warns(RuntimeWarning, match=r"missing; its 8 samples are generated again"):
        assert len(SampleCache(tmp_path)) == N - 8  # a read-side warning, not a silent miss
    code, out = command(["repair", str(tmp_path)], capsys)
    assert code == 0 and "rewrote 1 manifest" in out
    assert command(["verify", str(tmp_path)], capsys)[0] == 0
    report = fill(tmp_path)
    assert report.generated == 8 and report.cache_hits == N - 8


def _directory_as_unlisted_shard(root: Path) -> Path:
    path = root / "shards" / "zz-deadbeef-000000.safetensors"
    path.mkdir()
    return path


def _directory_as_listed_shard(root: Path) -> Path:
    path = shards(root)[2]
    path.unlink()
    path.mkdir()
    return path


def _directory_as_lock(root: Path) -> Path:
    path = root / "locks" / "w-deadbeef.lock"
    path.mkdir()
    return path


def _directory_as_claim_of_a_missing_key(root: Path) -> Path:
    path = root / "claims" / f"{key_of(N + 1)}.claim"
    path.mkdir()
    return path


def _directory_as_manifest(root: Path) -> Path:
    path = root / "manifest" / "w-deadbeef.jsonl"
    path.mkdir()
    return path


def _dangling_link(root: Path) -> Path:
    path = root / "shards" / "w-deadbeef-000009.safetensors"
    path.symlink_to(root / "no-such-file")
    return path


def _copy_with_a_space(root: Path) -> Path:
    source = shards(root)[0]
    path = source.with_name(f"{source.stem} copy.safetensors")
    shutil.copy(source, path)
    return path


STRAYS = {
    "directory as an unlisted shard": _directory_as_unlisted_shard,
    "directory as a listed shard": _directory_as_listed_shard,
    "directory as a lock": _directory_as_lock,
    "directory as a claim": _directory_as_claim_of_a_missing_key,
    "directory as a manifest": _directory_as_manifest,
    "dangling link in shards/": _dangling_link,
    "shard copy with a space": _copy_with_a_space,
}


@pytest.mark.parametrize("make_stray", STRAYS.values(), ids=list(STRAYS))
def test_strays_are_reported_then_quarantined_never_a_permission_error(
    tmp_path: Path, capsys, make_stray
) -> None:
    fill(tmp_path)
    stray = make_stray(tmp_path)
    for name in ("verify", "stats"):
        code, out = command([name, str(tmp_path)], capsys)
        assert code == (1 if name == "verify" else 0), out
        assert "chmod" not in out and "Errno" not in out
    assert str(stray) in command(["verify", str(tmp_path)], capsys)[1]
    code, out = command(["repair", str(tmp_path)], capsys)
    assert code == 0 and "chmod" not in out, out
    assert not os.path.lexists(stray)
    reasons = [p.read_text() for p in (tmp_path / "quarantine").glob("*.reason.txt")]
    assert len(reasons) == 1 and ("where the" in reasons[0] or "name" in reasons[0]), reasons
    code, out = command(["verify", str(tmp_path)], capsys)
    assert code == 0, out
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing is adopted and rejected again
        report = fill(tmp_path, N + 2)
    assert report.cache_hits + report.generated == N + 2
    assert len(SampleCache(tmp_path)) == N + 2


def test_synthesis_moves_strays_aside_instead_of_failing(tmp_path: Path) -> None:
    fill(tmp_path)
    claim = _directory_as_claim_of_a_missing_key(tmp_path)
    lock = _directory_as_lock(tmp_path)
    result: list[SynthesisReport] = []
    thread = threading.Thread(target=lambda: result.append(fill(tmp_path, N + 4)), daemon=True)
    with pytest.warns(RuntimeWarning, match="a directory where the cache expects a .claim"):
        thread.start()
        thread.join(timeout=30)
    assert result and result[0].generated == 4  # the key "claimed" by a directory included
    assert not claim.exists() and not lock.exists()


def test_temp_files_of_live_writers_are_not_damage(tmp_path: Path, capsys) -> None:
    fill(tmp_path)
    with SampleCache(tmp_path).writer("live") as writer:
        temp = tmp_path / "shards" / f".tmp-{writer.writer_id}-000000.safetensors"
        temp.write_bytes(b"half a shard")
        code, out = command(["verify", str(tmp_path)], capsys)
        assert code == 0 and "being written by a running writer" in out
        assert "1 being written, 0 left" in command(["stats", str(tmp_path)], capsys)[1]
        command(["repair", str(tmp_path)], capsys)
        assert temp.exists()  # a live writer's temp file is not touched
    temp.unlink()


def test_full_disk_inode_exhaustion_and_quota_are_told_apart(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    class Vfs:
        f_files, f_favail = 1000, 0

    target = tmp_path / "shards" / "x.safetensors"
    monkeypatch.setattr(errors_module.os, "statvfs", lambda path: Vfs())
    inodes = str(write_error(tmp_path, target, OSError(errno.ENOSPC, "No space left on device")))
    assert "no free inodes" in inodes and "df -i" in inodes and "is full" not in inodes
    Vfs.f_favail = 10
    full = str(write_error(tmp_path, target, OSError(errno.ENOSPC, "No space left on device")))
    assert "is full" in full and "inodes" not in full
    quota = str(write_error(tmp_path, target, OSError(errno.EDQUOT, "Disk quota exceeded")))
    assert "quota" in quota and "is full" not in quota
    folder = str(write_error(tmp_path, target, OSError(errno.EISDIR, "Is a directory")))
    assert "is a directory" in folder and "chmod" not in folder and "cache repair" in folder
