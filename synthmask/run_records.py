"""Run records: ``run.json`` in each run directory, and ``synthmask runs [DIR] [--csv FILE]``.

A run writes ``<run dir>/run.json`` when it starts and updates it after every validation and at
the end: its name, group, tags, job type, flat settings (``synthmask.run_identity``), W&B mode,
provenance, final and best ``val/mIoU`` with per-class IoU at both, wall time and whether it
stopped before its budget. ``synthmask runs`` reads these files alone (no W&B server or W&B
files): one row per run with the settings that differ between the listed runs.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import sys
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from synthmask.run_identity import short_key

RECORD_NAME = "run.json"
RECORD_FORMAT = 1
MAX_TABLE_SETTINGS = 8  # more differing settings are listed below the table (all in --csv)


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def write_run_record(run_dir: str | Path, record: Mapping[str, Any]) -> Path:
    """Write ``record`` to ``<run_dir>/run.json`` atomically (readers never see half a file)."""
    path = Path(run_dir) / RECORD_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{RECORD_NAME}.{os.getpid()}.tmp")
    temp.write_text(json.dumps({"format": RECORD_FORMAT, **record}, indent=1, default=str) + "\n")
    os.replace(temp, path)
    return path


def read_run_record(run_dir: str | Path) -> dict[str, Any]:
    return json.loads((Path(run_dir) / RECORD_NAME).read_text())


def update_run_record(run_dir: str | Path, changes: Mapping[str, Any]) -> dict[str, Any]:
    """Merge ``changes`` into the run's record (top-level keys) and write it back."""
    path = Path(run_dir) / RECORD_NAME
    record = json.loads(path.read_text()) if path.is_file() else {}
    record.pop("format", None)
    record.update(changes)
    write_run_record(run_dir, record)
    return record


def find_run_records(root: str | Path) -> list[dict[str, Any]]:
    """Every readable ``run.json`` below ``root``, oldest run first, with ``run_dir`` added."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(
            f"runs directory {root} does not exist; give the folder runs write to (the W&B "
            "logger's save_dir, `runs` in the shipped configs)."
        )
    records = []
    for path in sorted(root.rglob(RECORD_NAME)):
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError) as err:
            print(f"synthmask runs: skipped {path} (unreadable: {err})", file=sys.stderr)
            continue
        if isinstance(record, dict):
            records.append({**record, "run_dir": str(path.parent)})
    return sorted(records, key=lambda r: str(r.get("started_at", "")))


def _same(a: Any, b: Any) -> bool:
    return json.dumps(a, sort_keys=True, default=str) == json.dumps(b, sort_keys=True, default=str)


def differing_settings(records: Sequence[Mapping[str, Any]]) -> list[str]:
    """Settings keys whose values are not the same in every record (missing counts as a value);
    keys a run set on its command line first, then the rest, each part sorted."""
    if len(records) < 2:
        return []
    settings = [r.get("settings") or {} for r in records]
    keys = sorted({k for s in settings for k in s})
    missing = object()
    differ = [
        k
        for k in keys
        if any(not _same(s.get(k, missing), settings[0].get(k, missing)) for s in settings[1:])
    ]
    overridden = {k for r in records for k in (r.get("overrides") or {})}
    chosen = {short_key(k) for k in overridden}
    first = [k for k in differ if short_key(k) in chosen]
    return first + [k for k in differ if k not in first]


def _column_names(keys: Sequence[str]) -> list[str]:
    """Short keys (``reliability_mode``) unless two of them collide (then the full key)."""
    shorts = [short_key(k) for k in keys]
    return [s if shorts.count(s) == 1 else k for k, s in zip(keys, shorts, strict=True)]


def _metric(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{float(value):.4f}"


def _wall(seconds: Any) -> str:
    if seconds is None:
        return "-"
    minutes, secs = divmod(int(round(float(seconds))), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def _stopped(row: Mapping[str, Any]) -> str:
    if row["stopped_early"] is None:
        return "-"
    return f"yes ({row['stopped_reason'] or 'unknown'})" if row["stopped_early"] else "no"


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    return value if isinstance(value, str) else json.dumps(value, default=str)


def run_rows(
    records: Sequence[Mapping[str, Any]], setting_keys: Sequence[str]
) -> list[dict[str, Any]]:
    """One dict per run: name, group, the given settings (full keys), final and best
    ``val/mIoU``, wall time in seconds, stopped early and why, status and run directory."""
    rows = []
    for record in records:
        settings = record.get("settings") or {}
        metrics = record.get("metrics") or {}
        rows.append(
            {
                "name": record.get("name") or record.get("run_id"),
                "group": record.get("group"),
                **{key: settings.get(key) for key in setting_keys},
                "val/mIoU": metrics.get("val/mIoU"),
                "val/mIoU_best": metrics.get("val/mIoU_best"),
                "wall_time_s": record.get("wall_time_s"),
                "stopped_early": record.get("stopped_early"),
                "stopped_reason": record.get("stopped_reason"),
                "status": record.get("status"),
                "run_dir": record.get("run_dir"),
            }
        )
    return rows


def runs_table(
    records: Sequence[Mapping[str, Any]], max_settings: int | None = None
) -> tuple[list[str], list[list[str]], list[str]]:
    """(header, text rows, setting keys left out) of the runs: one row each, for reading."""
    keys = differing_settings(records)
    shown = keys if max_settings is None else keys[:max_settings]
    header = ["name", "group", *_column_names(shown)]
    header += ["val/mIoU", "val/mIoU_best", "wall", "stopped_early", "status", "run_dir"]
    rows = [
        [
            _cell(row["name"]),
            _cell(row["group"]),
            *[_cell(row[key]) for key in shown],
            _metric(row["val/mIoU"]),
            _metric(row["val/mIoU_best"]),
            _wall(row["wall_time_s"]),
            _stopped(row),
            _cell(row["status"]),
            _cell(row["run_dir"]),
        ]
        for row in run_rows(records, shown)
    ]
    return header, rows, keys[len(shown) :]


def format_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A plain aligned text table (columns separated by two spaces)."""
    widths = [max(len(str(c)) for c in column) for column in zip(header, *rows, strict=True)]
    lines = [
        "  ".join(str(c).ljust(w) for c, w in zip(line, widths, strict=True)).rstrip()
        for line in [header, *rows]
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def write_csv(path: str | Path, records: Sequence[Mapping[str, Any]]) -> int:
    """Write every run with every differing setting as CSV (raw values: metrics at full
    precision, wall time in seconds, stopped_early true/false); returns the row count."""
    keys = differing_settings(records)
    rows = run_rows(records, keys)
    names = dict(zip(keys, _column_names(keys), strict=True))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow([names.get(column, column) for column in rows[0]] if rows else [])
        for row in rows:
            writer.writerow(
                [
                    "" if v is None else v if isinstance(v, str | int | float) else json.dumps(v)
                    for v in row.values()
                ]
            )
    return len(rows)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="synthmask runs",
        description="Compare local runs from the run.json each run writes into its directory: "
        "name, group, the settings that differ between the runs, final and best val/mIoU, "
        "wall time, and whether a run stopped before its budget.",
    )
    parser.add_argument(
        "dir", nargs="?", default="runs", type=Path, help="folder holding run directories (runs)"
    )
    parser.add_argument("--csv", type=Path, default=None, help="also write the table as CSV")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """``synthmask runs [DIR] [--csv FILE]``; returns the exit status."""
    args = build_parser().parse_args(argv)
    records = find_run_records(args.dir)
    if not records:
        print(f"synthmask runs: no run.json under {args.dir}")
        return 0
    header, rows, hidden = runs_table(records, MAX_TABLE_SETTINGS)
    print(format_table(header, rows))
    if hidden:
        print(f"({len(hidden)} more differing settings: {', '.join(hidden)}; all are in --csv)")
    if args.csv is not None:
        count = write_csv(args.csv, records)
        print(f"synthmask runs: wrote {count} runs to {args.csv}")
    return 0
