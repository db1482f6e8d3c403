"""Shard files: one safetensors file holding the byte fields of N samples.

A shard is a valid safetensors file (readable by any safetensors tool, no pickle): tensor
`"{key}/{field}"` holds a field of a sample (uint8 PNG/JSON bytes, or float16 margin) and the
header metadata holds `{"format": SHARD_FORMAT, "writer": ..., "samples": JSON {key: sha256}}`,
where the per-sample sha256 covers its fields' bytes in `FIELD_NAMES` order. Shards are thus
self-verifying: a reader checks the checksum of every sample it reads, and a shard found on disk
without a manifest line can still be verified and adopted.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import safetensors.numpy

from synthmask.cache.record import FIELD_NAMES

SHARD_FORMAT = "synthmask-shard/1"
SHARD_SUFFIX = ".safetensors"


class ShardError(ValueError):
    """A shard file is truncated, corrupted or not a synthmask shard."""


@dataclass(frozen=True)
class SampleEntry:
    """Where one sample lives in its shard: absolute byte ranges of each field + checksum."""

    key: str
    sha256: str
    fields: dict[str, tuple[int, int]]


def sample_checksum(field_bytes: dict[str, bytes]) -> str:
    digest = hashlib.sha256()
    for name in FIELD_NAMES:
        digest.update(field_bytes[name])
    return digest.hexdigest()


def build_shard(
    samples: list[tuple[str, dict[str, np.ndarray]]], writer: str
) -> tuple[bytes, list[SampleEntry]]:
    """Serialize encoded samples (key, fields) into shard bytes and their entries."""
    tensors: dict[str, np.ndarray] = {}
    checksums: dict[str, str] = {}
    for key, fields in samples:
        if key in checksums:
            raise ValueError(f"sample key {key} appears twice in one shard; keys must be unique.")
        checksums[key] = sample_checksum({n: fields[n].tobytes() for n in FIELD_NAMES})
        for name in FIELD_NAMES:
            tensors[f"{key}/{name}"] = fields[name]
    metadata = {"format": SHARD_FORMAT, "writer": writer, "samples": json.dumps(checksums)}
    data = safetensors.numpy.save(tensors, metadata=metadata)
    header = _parse_header(data[:8], data[8 : 8 + _header_length(data[:8], len(data))])
    return data, _entries_from_header(header, checksums)


def _header_length(prefix: bytes, file_size: int) -> int:
    if len(prefix) < 8:
        raise ShardError(f"file is {len(prefix)} bytes long, shorter than a safetensors header")
    (length,) = struct.unpack("<Q", prefix)
    if length > file_size - 8 or length > 512 * 1024 * 1024:
        raise ShardError(f"header length {length} exceeds the file size {file_size} (truncated?)")
    return length


def _parse_header(prefix: bytes, header_bytes: bytes) -> dict:
    try:
        header = json.loads(header_bytes.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ShardError(f"header is not valid JSON ({err})") from err
    header["__data_start__"] = 8 + len(header_bytes)
    return header


def _entries_from_header(header: dict, checksums: dict[str, str]) -> list[SampleEntry]:
    data_start = header["__data_start__"]
    entries = []
    for key, checksum in checksums.items():
        fields = {}
        for name in FIELD_NAMES:
            info = header.get(f"{key}/{name}")
            if info is None:
                raise ShardError(f"sample {key} has no field {name!r}")
            begin, end = info["data_offsets"]
            fields[name] = (data_start + begin, data_start + end)
        entries.append(SampleEntry(key=key, sha256=checksum, fields=fields))
    return entries


def read_shard_entries(path: Path) -> tuple[str, list[SampleEntry]]:
    """Parse a shard's header -> (writer, entries). Raises ShardError on a malformed file
    (any damage to the header: valid JSON of the wrong shape included)."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        prefix = f.read(8)
        header = _parse_header(prefix, f.read(_header_length(prefix, size)))
    try:
        meta = header.get("__metadata__") or {}
        if meta.get("format") != SHARD_FORMAT:
            raise ShardError(f"not a {SHARD_FORMAT} file (format={meta.get('format')!r})")
        checksums = json.loads(meta["samples"])
        entries = _entries_from_header(header, dict(checksums))
        for entry in entries:
            spans = entry.fields.values()
            if any(not header["__data_start__"] <= b <= e <= size for b, e in spans):
                raise ShardError(f"sample {entry.key} lies outside the file (truncated?)")
    except ShardError:
        raise
    except (KeyError, TypeError, ValueError, AttributeError) as err:
        raise ShardError(f"header is damaged ({type(err).__name__}: {err})") from err
    return str(meta.get("writer", "")), entries


def read_fields(fd: int, fields: dict[str, tuple[int, int]]) -> dict[str, bytes]:
    """Read the byte ranges of one sample with as few `pread` calls as possible."""
    spans = sorted(fields.items(), key=lambda item: item[1][0])
    out: dict[str, bytes] = {}
    run_start, run_end, run_names = spans[0][1][0], spans[0][1][1], [spans[0]]
    for item in spans[1:] + [None]:
        if item is not None and item[1][0] == run_end:
            run_end = item[1][1]
            run_names.append(item)
            continue
        blob = os.pread(fd, run_end - run_start, run_start)
        if len(blob) != run_end - run_start:
            raise ShardError(f"read {len(blob)} of {run_end - run_start} bytes (truncated file)")
        for name, (begin, end) in run_names:
            out[name] = blob[begin - run_start : end - run_start]
        if item is not None:
            run_start, run_end, run_names = item[1][0], item[1][1], [item]
    return out


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def manifest_record(
    name: str, data_size: int, sha256: str, writer: str, entries: list[SampleEntry]
) -> dict:
    """The manifest line of a finished shard (see manifest.py)."""
    return {
        "shard": name,
        "bytes": data_size,
        "sha256": sha256,
        "writer": writer,
        "created": time.time(),
        "samples": [
            {"key": e.key, "sha256": e.sha256, "fields": {k: list(v) for k, v in e.fields.items()}}
            for e in entries
        ],
    }


def check_shard(path: Path) -> tuple[str, list[SampleEntry]]:
    """Parse a shard's header and check every sample's checksum -> (writer, entries).

    Raises ShardError when the shard itself is damaged (not when only a manifest line is).
    """
    writer, entries = read_shard_entries(path)
    fd = os.open(path, os.O_RDONLY)
    try:
        for entry in entries:
            if sample_checksum(read_fields(fd, entry.fields)) != entry.sha256:
                raise ShardError(f"checksum mismatch for sample {entry.key}")
    finally:
        os.close(fd)
    return writer, entries


def record_digest(record: dict) -> str:
    """sha256 of a manifest record's canonical JSON (to recognise one record again)."""
    return hashlib.sha256(json.dumps(record, sort_keys=True).encode("utf-8")).hexdigest()
