"""Manifest: one JSON-lines file per writer recording the shards it finished.

Only the writer that owns a manifest file appends to it (writer ids are unique), so lines never
interleave. A line is appended (O_APPEND, fsync) only after its shard was renamed into place, so
every line names a complete shard. A process killed mid-append leaves a torn last line without
a newline: readers skip it, and the shard it described is adopted later by a live writer.

Every line is validated field by field (`manifest_problem`) before it is used: a line that is
not a shard record (torn, bit-flipped, `{}`, `123`) is skipped with one warning naming the file
and line number; its shard then counts as unlisted and is verified and adopted (or regenerated)
like the shard of a killed writer, and `compact_manifest` rewrites the file without the line.
"""

from __future__ import annotations

import json
import os
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from synthmask.cache.record import FIELD_NAMES
from synthmask.cache.shard import record_digest

MANIFEST_SUFFIX = ".jsonl"
COMPACT_PREFIX = "compact-"
_HEX64 = re.compile(r"[0-9a-f]{64}")
_SHARD_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*\.safetensors")


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


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _sample_problem(sample: Any, size: int) -> str | None:
    if not isinstance(sample, dict):
        return f"a sample is {type(sample).__name__}, not an object"
    if not isinstance(sample.get("key"), str) or not sample["key"]:
        return "a sample has no 'key' string"
    if not isinstance(sample.get("sha256"), str) or not _HEX64.fullmatch(sample["sha256"]):
        return f"sample {sample['key'][:16]} has no valid 'sha256' (64 hex digits)"
    fields = sample.get("fields")
    if not isinstance(fields, dict):
        return f"sample {sample['key'][:16]} has no 'fields' object"
    for name in FIELD_NAMES:
        span = fields.get(name)
        if not (isinstance(span, list) and len(span) == 2 and all(_is_int(v) for v in span)):
            return f"sample {sample['key'][:16]} field {name!r} is not a [begin, end] pair"
        if not 0 <= span[0] <= span[1] <= size:
            return f"sample {sample['key'][:16]} field {name!r} lies outside the shard"
    return None


def manifest_problem(record: Any) -> str | None:
    """What is wrong with a manifest record (None when it is a valid shard record)."""
    if not isinstance(record, dict):
        return f"the line is {type(record).__name__}, not a shard record"
    name = record.get("shard")
    if not isinstance(name, str) or not _SHARD_NAME.fullmatch(name):
        return "'shard' is missing or not a shard file name"
    if not _is_int(record.get("bytes")) or record["bytes"] < 0:
        return "'bytes' is missing or not a byte count"
    if not isinstance(record.get("sha256"), str) or not _HEX64.fullmatch(record["sha256"]):
        return "'sha256' is missing or not 64 hex digits"
    samples = record.get("samples")
    if not isinstance(samples, list) or not samples:
        return "'samples' is missing or empty"
    for sample in samples:
        problem = _sample_problem(sample, record["bytes"])
        if problem:
            return problem
    return None


@dataclass
class ManifestRead:
    """Valid records of a manifest read from `offset`, and the lines that were not."""

    records: list[dict[str, Any]] = field(default_factory=list)
    bad_lines: list[tuple[int, str]] = field(default_factory=list)  # (1-based line, problem)
    offset: int = 0
    line: int = 0  # lines consumed before `offset`


def read_lines(path: Path, offset: int = 0, line: int = 0) -> ManifestRead:
    """Complete, valid JSON records of `path` from byte `offset` (line number `line`).

    An incomplete trailing line (no newline yet, or torn by a kill) is left for a later call;
    a complete line that is not a valid record is reported in `bad_lines`, never raised.
    """
    out = ManifestRead(offset=offset, line=line)
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            data = f.read()
    except (FileNotFoundError, IsADirectoryError):
        return out
    end = data.rfind(b"\n") + 1
    for raw in data[:end].split(b"\n")[:-1]:
        out.line += 1
        if not raw.strip():
            continue
        try:
            record = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as err:
            out.bad_lines.append((out.line, f"not JSON ({type(err).__name__})"))
            continue
        problem = manifest_problem(record)
        if problem:
            out.bad_lines.append((out.line, problem))
        else:
            out.records.append(record)
    out.offset = offset + end
    return out


def write_manifest(directory: Path, records: Sequence[dict[str, Any]]) -> Path:
    """Write `records` as a new manifest `compact-<token>.jsonl` atomically (temp + rename)."""
    path = directory / f"{COMPACT_PREFIX}{secrets.token_hex(6)}{MANIFEST_SUFFIX}"
    temp = directory / f".tmp-{path.name}"
    lines = b"".join(json.dumps(r, separators=(",", ":")).encode() + b"\n" for r in records)
    try:
        with open(temp, "xb") as f:
            f.write(lines)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temp, path)
    finally:
        temp.unlink(missing_ok=True)
    return path


def compact_manifest(path: Path, drop: set[str] | frozenset[str] = frozenset()) -> Path | None:
    """Replace a manifest that has bad lines by a new one holding only its valid records
    (less those whose `record_digest` is in `drop`: valid lines found wrong about their shard).

    Only for manifests no live writer appends to. Readers that indexed the old file skip the
    new one's shards (already known); readers that had not read it read the new one. Returns
    the new path (None when the file is gone or has no valid record left).
    """
    records = [r for r in read_lines(path).records if record_digest(r) not in drop]
    new = write_manifest(path.parent, records) if records else None
    path.unlink(missing_ok=True)
    return new
