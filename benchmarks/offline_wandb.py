"""Read an offline W&B run file (``run-<id>.wandb``) without a W&B server.

Offline W&B writes no ``wandb-summary.json``: everything a run logged sits in its record log, a
LevelDB-style log of 32 KiB blocks whose records (protobuf ``wandb_internal_pb2.Record``) may be
split into chunks. ``read_offline_run`` returns the run's id, sweep id, name, group, tags,
config, summary (last values) and history (one dict per logged step), so benchmarks and tests
can read what a run logged, as a dashboard would.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_BLOCK = 32768  # LevelDB log blocks of 32 KiB, records split into chunks
_FULL, _FIRST, _MIDDLE, _LAST = 1, 2, 3, 4


def record_payloads(data: bytes) -> list[bytes]:
    """The serialized records of a run file's bytes (chunks joined, block padding skipped)."""
    if data[:4] != b":W&B":
        raise ValueError("not a W&B run file (it does not start with ':W&B')")
    records, pos, pending = [], 7, b""
    while pos + 7 <= len(data):
        left = _BLOCK - pos % _BLOCK
        if left < 7:  # block trailer
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if kind == 0 and length == 0:  # zero padding up to the block end
            pos += left
            continue
        chunk = data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind == _FULL:
            records.append(chunk)
        elif kind == _FIRST:
            pending = chunk
        elif kind == _MIDDLE:
            pending += chunk
        elif kind == _LAST:
            records.append(pending + chunk)
    return records


@dataclass
class OfflineRun:
    run_id: str
    sweep_id: str
    name: str
    group: str
    tags: list[str]
    config: dict[str, Any] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    path: Path | None = None


def _key(item: Any, sep: str) -> str:
    return item.key or sep.join(item.nested_key)


def read_offline_run(path: Path) -> OfflineRun:
    """The run record, config, summary (last values) and history of a ``run-<id>.wandb`` file."""
    from wandb.proto import wandb_internal_pb2 as pb

    run = OfflineRun("", "", "", "", [], path=path)
    for raw in record_payloads(Path(path).read_bytes()):
        record = pb.Record()
        record.ParseFromString(raw)
        kind = record.WhichOneof("record_type")
        if kind == "run":
            r = record.run
            run.run_id, run.sweep_id, run.name = r.run_id, r.sweep_id, r.display_name
            run.group, run.tags = r.run_group, list(r.tags)
            for item in r.config.update:
                run.config[_key(item, ".")] = json.loads(item.value_json)
        elif kind == "config":
            for item in record.config.update:
                run.config[_key(item, ".")] = json.loads(item.value_json)
        elif kind == "summary":
            for item in record.summary.update:
                run.summary[_key(item, "/")] = json.loads(item.value_json)
        elif kind == "history":
            run.history.append(
                {_key(item, "/"): json.loads(item.value_json) for item in record.history.item}
            )
    return run
