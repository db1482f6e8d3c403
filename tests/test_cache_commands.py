"""`synthmask cache verify|repair|stats DIR`: messages and exit codes."""

from __future__ import annotations

from pathlib import Path

import pytest
from fixtures_cache_synth import FakeSynthesizer, make_specs

from synthmask.cache import SampleCache
from synthmask.cache.commands import main
from synthmask.synthesis import synthesize_into_cache


def fill(root: Path, n: int = 8) -> None:
    synthesize_into_cache(FakeSynthesizer(), SampleCache(root), make_specs(n), 4, "t",
                          shard_size=4, progress=False)  # fmt: skip


def flip_a_byte(root: Path) -> Path:
    shard = sorted((root / "shards").glob("*.safetensors"))[0]
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 1
    shard.write_bytes(bytes(data))
    return shard


def test_verify_repair_stats_on_a_damaged_cache(tmp_path: Path, capsys) -> None:
    fill(tmp_path)
    assert main(["verify", str(tmp_path)]) == 0
    assert "8 samples in 2 shards" in capsys.readouterr().out
    shard = flip_a_byte(tmp_path)
    before = shard.read_bytes()
    assert main(["verify", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert shard.name in out and f"synthmask cache repair {tmp_path}" in out
    assert shard.read_bytes() == before  # verify changes nothing
    with pytest.warns(RuntimeWarning, match="corrupt"):
        assert main(["repair", str(tmp_path)]) == 0
    assert "quarantined 1 shard" in capsys.readouterr().out
    assert (tmp_path / "quarantine" / shard.name).exists()
    assert main(["verify", str(tmp_path)]) == 0
    assert main(["stats", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "samples             4" in out and "1 quarantined" in out


def test_repair_rewrites_a_manifest_with_a_bad_line(tmp_path: Path, capsys) -> None:
    fill(tmp_path)
    (manifest,) = (tmp_path / "manifest").glob("*.jsonl")
    lines = manifest.read_text().splitlines()
    manifest.write_text("\n".join([lines[0], "{}", lines[1]]) + "\n")
    assert main(["verify", str(tmp_path)]) == 1
    assert f"{manifest}:2" in capsys.readouterr().out
    assert main(["repair", str(tmp_path)]) == 0
    assert "rewrote 1 manifest" in capsys.readouterr().out
    assert main(["verify", str(tmp_path)]) == 0


def test_usage_errors_exit_2_with_a_clear_message(tmp_path: Path, capsys) -> None:
    assert main(["stats", str(tmp_path / "absent")]) == 2
    assert "not a synthmask cache" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main(["frobnicate", str(tmp_path)])
    assert exit_info.value.code == 2
    assert "invalid choice" in capsys.readouterr().err


def test_the_synthmask_cli_dispatches_cache(tmp_path: Path, capsys) -> None:
    from synthmask.cli import main as cli_main

    fill(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["cache", "stats", str(tmp_path)])
    assert exit_info.value.code == 0 and "samples             8" in capsys.readouterr().out
