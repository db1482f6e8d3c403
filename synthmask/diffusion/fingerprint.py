"""Content fingerprints of model files: a full sha256 of every byte, read once per file version.

Cache keys name the weights that drew a sample, so two different weight files must never share
a fingerprint: every file is hashed in full (no sampled blocks). To keep a second start cheap,
each digest is remembered in a small per-user index keyed by the file's identity (real path,
size, mtime_ns, ctime_ns, inode, device); a file whose identity is unchanged is not read again,
so a restart costs one `stat` per file. Any write to a file changes its ctime (which user code
cannot set back), so an in-place edit is hashed again even when size and mtime are restored.

Files of a Hugging Face hub snapshot are symlinks into `blobs/<sha256>`: the blob name already is
the content's sha256 (the hub checks it on download), so it is used as it is, without reading.

The index lives at `$SYNTHMASK_HASH_INDEX` when set, else
`$XDG_CACHE_HOME/synthmask/file-sha256.json` (`~/.cache/synthmask/...`). It is written
atomically (temp file + rename); an unreadable or corrupt index is ignored (files are hashed
again), and an unwritable one only costs the memo.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import time
from pathlib import Path
from typing import Any

HASH_INDEX_ENV = "SYNTHMASK_HASH_INDEX"
INDEX_VERSION = 1
MAX_ENTRIES = 4096  # oldest-used entries beyond this are dropped when the index is written
# A file modified within this many seconds of being hashed may change again within the file
# system's timestamp granularity without a visible stat change: such digests are not remembered.
RACY_SECONDS = 2.0
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")
_READ_BLOCK = 1 << 22


def hash_index_path() -> Path:
    """Where the per-user digest index lives (see the module docstring)."""
    explicit = os.environ.get(HASH_INDEX_ENV, "").strip()
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CACHE_HOME", "").strip() or os.path.join("~", ".cache")
    return Path(base).expanduser() / "synthmask" / "file-sha256.json"


def hash_file_contents(path: Path) -> str:
    """sha256 hex of every byte of `path` (the only place model files are read for hashing)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(_READ_BLOCK):
            digest.update(block)
    return digest.hexdigest()


def hub_blob_sha256(path: Path) -> str | None:
    """The sha256 a hub snapshot file is stored under (`.../blobs/<sha256>`), or None."""
    if not path.is_symlink():
        return None
    target = path.resolve()
    if target.parent.name == "blobs" and _SHA256_HEX.fullmatch(target.name):
        return target.name
    return None


def _identity(stat: os.stat_result) -> list[int]:
    return [stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns, stat.st_ino, stat.st_dev]


class FileHashIndex:
    """Digests of files by identity, loaded from and saved to `path` (see module docstring)."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path if path is not None else hash_index_path()
        self.entries: dict[str, dict[str, Any]] = self._load()
        self.hashed = 0  # files read in full by this object
        self._dirty = False

    def _load(self) -> dict[str, dict[str, Any]]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        if not isinstance(data, dict) or data.get("version") != INDEX_VERSION:
            return {}
        files = data.get("files")
        if not isinstance(files, dict):
            return {}
        return {
            name: entry
            for name, entry in files.items()
            if isinstance(entry, dict)
            and isinstance(entry.get("id"), list)
            and isinstance(entry.get("sha256"), str)
            and _SHA256_HEX.fullmatch(entry["sha256"])
        }

    def sha256(self, path: Path) -> str:
        """Full-content sha256 of `path`: from a hub blob name, the index, or by reading it."""
        blob = hub_blob_sha256(path)
        if blob is not None:
            return blob
        real = str(path.resolve())
        stat = os.stat(real)
        identity = _identity(stat)
        entry = self.entries.get(real)
        if entry is not None and entry["id"] == identity:
            entry["used"] = time.time()
            self._dirty = True
            return entry["sha256"]
        started = time.time()
        digest = hash_file_contents(Path(real))
        self.hashed += 1
        after = os.stat(real)
        settled = started - after.st_mtime_ns / 1e9 > RACY_SECONDS
        if _identity(after) == identity and settled:
            self.entries[real] = {"id": identity, "sha256": digest, "used": time.time()}
            self._dirty = True
        return digest

    def save(self) -> None:
        """Write the index atomically (merged with entries other processes wrote meanwhile);
        entries of files that are gone, and the oldest-used beyond MAX_ENTRIES, are dropped.
        Failures are ignored: the index is only a memo."""
        if not self._dirty:
            return
        merged = {**self._load(), **self.entries}
        kept = sorted(
            ((name, entry) for name, entry in merged.items() if os.path.exists(name)),
            key=lambda item: float(item[1].get("used", 0.0)),
        )[-MAX_ENTRIES:]
        payload = json.dumps({"version": INDEX_VERSION, "files": dict(kept)}, sort_keys=True)
        temp = self.path.with_name(f".{self.path.name}.{secrets.token_hex(4)}.tmp")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            temp.write_text(payload, encoding="utf-8")
            os.replace(temp, self.path)
        except OSError:
            try:
                temp.unlink(missing_ok=True)
            except OSError:
                pass
            return
        self._dirty = False


def tree_sha256(root: Path, index: FileHashIndex | None = None) -> str:
    """Digest of a file (its sha256), or of a directory's visible files by relative path
    (independent of where the directory lives; dot-folders such as `.cache/` are skipped)."""
    own = index is None
    index = index if index is not None else FileHashIndex()
    try:
        if root.is_file():
            return index.sha256(root)
        digest = hashlib.sha256()
        for path in sorted(p for p in root.rglob("*") if p.is_file()):
            relative = path.relative_to(root)
            if any(part.startswith(".") for part in relative.parts):
                continue
            digest.update(relative.as_posix().encode())
            digest.update(index.sha256(path).encode())
        return digest.hexdigest()
    finally:
        if own:
            index.save()
