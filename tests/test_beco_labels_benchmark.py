"""benchmarks/beco_labels.py reads BECO's label statistics back from a real offline W&B run."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import beco_labels  # noqa: E402


def test_phases_of_a_logged_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import wandb

    monkeypatch.setenv("WANDB_MODE", "offline")
    run = wandb.init(dir=tmp_path, group=beco_labels.GROUP, name="robust_beco seed=0")
    shares = [(0.0, 0.10, 0.2), (0.0, 0.12, 0.2), (1.0, 0.05, 0.3), (1.0, 0.01, 0.4)]
    for online, label, reliable in shares:
        run.log(
            {beco_labels.ONLINE: online, beco_labels.LABEL: label, beco_labels.RELIABLE: reliable}
        )
    run.log({"val/mIoU": 0.3})  # a step without label statistics is not counted
    run.finish()
    other = wandb.init(dir=tmp_path, group="another-row")
    other.log({beco_labels.ONLINE: 0.0, beco_labels.LABEL: 0.9})
    other.finish()

    out = tmp_path / "beco.csv"
    rows = beco_labels.main(["--workdir", str(tmp_path), "--csv", str(out)])
    assert [r["phase"] for r in rows] == ["warmup", "online"]  # the other group is left out
    warmup, online = rows
    assert warmup["logged_steps"] == "2" and warmup["label_foreground_mean"] == "0.1100"
    assert online["label_foreground_first"] == "0.0500"
    assert online["label_foreground_last"] == "0.0100"
    assert online["reliable_foreground_mean"] == "0.3500"
    assert out.read_text().count("\n") == 3  # header + 2 rows
    beco_labels.main(["--workdir", str(tmp_path), "--csv", str(out)])
    assert out.read_text().count("\n") == 3  # rewritten, not appended

    # A run that is no longer in the work directory keeps its rows; a run found replaces its own.
    out.write_text(out.read_text().replace(rows[0]["run_id"], "gone1234"))
    beco_labels.main(["--workdir", str(tmp_path), "--csv", str(out)])
    lines = out.read_text().splitlines()
    assert sum("gone1234" in line for line in lines) == 2
    assert sum(rows[0]["run_id"] in line for line in lines) == 2


def test_no_run_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="paper_table.py --rows robust_beco"):
        beco_labels.main(["--workdir", str(tmp_path), "--csv", str(tmp_path / "x.csv")])
