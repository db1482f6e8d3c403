"""Entries of a cache's folders that the cache did not write: found, reported and moved aside.

A directory or dangling symbolic link where a shard, lock, claim or manifest file belongs, or a
`.safetensors` file whose name no writer makes (a copy such as `w-1a2b3c4d-000003 copy.
safetensors`), is a *stray*. Readers skip strays; `synthmask cache verify` lists them as
problems; every writer's recovery (and `synthmask cache repair`) moves them to `quarantine/`
with a `.reason.txt`, so they never block a write or get adopted and rejected on every run.
Hidden files other than a writer's temp files (`.nfs*` of NFS, editor files) are left alone.
"""

from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path

from synthmask.cache.shard import SHARD_SUFFIX

TEMP_PREFIX = ".tmp-"
# The names writers give shards: `<label>-<token>-<seq>.safetensors` (label: [A-Za-z0-9_]).
SHARD_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*\.safetensors")
# The file each folder holds, by suffix: folder name -> suffix.
FOLDER_SUFFIX = {"shards": SHARD_SUFFIX, "locks": ".lock", "claims": ".claim",
                 "manifest": ".jsonl"}  # fmt: skip


@dataclass(frozen=True)
class Stray:
    """An entry of a cache folder that is not a file the cache wrote, and why."""

    path: Path
    reason: str

    def describe(self) -> str:
        return f"{self.path}: {self.reason}"


def file_kind(path: Path) -> str | None:
    """What is wrong with `path` as a file: "a directory", "a dangling symbolic link", "not a
    regular file" (a socket, FIFO, device); None for a regular file (or a link to one) and for
    an entry that is gone."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return None
    if stat.S_ISLNK(mode):
        try:
            mode = os.stat(path).st_mode
        except OSError:
            return "a dangling symbolic link"
    if stat.S_ISDIR(mode):
        return "a directory"
    if not stat.S_ISREG(mode):
        return "not a regular file"
    return None


def is_temp_file(name: str) -> bool:
    return name.startswith(TEMP_PREFIX)


def find_strays(folder: Path) -> list[Stray]:
    """The strays of one cache folder (`shards/`, `locks/`, `claims/` or `manifest/`)."""
    suffix = FOLDER_SUFFIX[folder.name]
    try:
        names = sorted(os.listdir(folder))
    except (FileNotFoundError, NotADirectoryError):
        return []
    strays = []
    for name in names:
        path = folder / name
        temp = folder.name == "shards" and is_temp_file(name)
        if name.startswith(".") and not temp:
            continue  # .nfs* silly-renames, editor files: not ours to judge
        if not name.endswith(suffix) and not temp:
            continue
        kind = file_kind(path)
        if kind is not None:
            strays.append(Stray(path, f"{kind} where the cache expects a {suffix} file"))
        elif folder.name == "shards" and not temp and not SHARD_NAME.fullmatch(name):
            strays.append(
                Stray(path, "not a name a writer gives a shard (a renamed or copied shard?)")
            )
    return strays


def quarantine_stray(stray: Stray, quarantine_dir: Path) -> Path | None:
    """Move a stray into `quarantine_dir` (shards under their own name, other folders'
    entries as `<folder>-<name>`; `.N` added when taken) with a `.reason.txt`; returns the
    new path, or None when it was gone already."""
    folder = stray.path.parent.name
    base = stray.path.name if folder == "shards" else f"{folder}-{stray.path.name}"
    quarantine_dir.mkdir(exist_ok=True)
    target, n = quarantine_dir / base, 0
    while os.path.lexists(target):
        n += 1
        target = quarantine_dir / f"{base}.{n}"
    try:
        os.replace(stray.path, target)
    except FileNotFoundError:
        return None
    (quarantine_dir / f"{target.name}.reason.txt").write_text(stray.reason + "\n")
    return target
