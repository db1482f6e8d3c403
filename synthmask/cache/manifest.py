"""Manifest: one JSON-lines file per writer recording the shards it finished.

Only the writer that owns a manifest file appends to it (writer ids are unique), so lines never
interleave. A line is appended (O_APPEND, fsync) only after its shard was renamed into place, so
every line names a complete shard. A process killed mid-append leaves a torn last line without
a newline: readers skip it, and the shard it described is adopted later by a live writer.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Any

MANIFEST_SUFFIX = ".jsonl"


def append_line(path: Path, record: dict[str, Any]) -> None:
    """Append one JSON line durably; starts on a fresh line if the file ends torn."""
    line = json.dumps(record, separators=(",", ":")).encode("utf-8") + b"\n"
    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        size = os.fstat(fd).st_size
        if size and os.pread(fd, 1, size - 1) != b"\n":
            line = b"\n" + line
        view = memoryview(line)
        while view:
            written = os.write(fd, view)
            view = view[written:]
        os.fsync(fd)
    finally:
        os.close(fd)


def read_lines(path: Path, offset: int = 0) -> tuple[list[dict[str, Any]], int]:
    """Complete JSON lines of `path` from byte `offset` -> (records, offset after the last one).

    An incomplete trailing line (no newline yet, or torn by a kill) is left for a later call;
    a complete line that is not valid JSON is skipped with a warning.
    """
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            data = f.read()
    except FileNotFoundError:
        return [], offset
    end = data.rfind(b"\n") + 1
    records = []
    for raw in data[:end].split(b"\n"):
        if not raw.strip():
            continue
        try:
            records.append(json.loads(raw))
        except (json.JSONDecodeError, UnicodeDecodeError):
            warnings.warn(
                f"cache manifest {path} has an unreadable line (torn by a killed writer?); "
                "ignoring it. Its shard, if complete, is re-adopted by the next writer.",
                RuntimeWarning,
                stacklevel=2,
            )
    return records, offset + end
