"""Errors a cache user can cause, each naming the path, the real cause and the fix."""

from __future__ import annotations

import errno
import os
from pathlib import Path


class CacheNotWritableError(PermissionError):
    """The cache directory cannot be created or written."""


class CacheWriteError(OSError):
    """Writing a shard, manifest line or lock file failed (disk full, permission, not a dir)."""


def _advice(root: Path, path: Path, err: OSError) -> str:
    """The fix for `err` raised on `path` inside the cache at `root`."""
    code = err.errno
    if code == errno.ENOSPC and out_of_inodes(root):
        return (
            f"the file system holding {root} has no free inodes left (too many files; its "
            "bytes are not the problem). Remove files there (many small files: old caches, "
            "checkpoints), or pass a cache_dir on another file system (`df -i` shows inodes)."
        )
    if code == errno.ENOSPC:
        return (
            f"the file system holding {root} is full. Free space there (remove old caches, or "
            f"`synthmask cache stats {root}` to see its size) or pass a cache_dir on a larger "
            "disk (`df -h` shows free space)."
        )
    if code == errno.EDQUOT:
        return (
            f"your disk quota on the file system holding {root} is used up (bytes or number of "
            "files: `quota -s` shows which). Remove files you own there, ask for a larger quota, "
            "or pass a cache_dir on another file system."
        )
    if code == errno.EISDIR:
        return (
            f"{path} is a directory where the cache expects a file. Run `synthmask cache repair "
            f"{root}` (it moves such entries to quarantine/), or move it away by hand."
        )
    if code == errno.ENOTDIR or code == errno.EEXIST:
        return (
            f"a part of {path} is a file where the cache needs a directory. Remove or rename "
            f"that file, or pass another cache_dir."
        )
    if code == errno.EROFS:
        return f"{root} is on a read-only file system; pass a cache_dir on a writable one."
    return (
        f"pass a writable directory as cache_dir (e.g. `--data.init_args.synthesis.cache_dir="
        f"/scratch/synthmask-cache`) or fix its permissions (`chmod -R u+w {root}`); a read-only "
        "cache can only be read."
    )


def out_of_inodes(path: Path) -> bool:
    """Whether the file system holding `path` has no free inodes (ENOSPC from a full inode
    table looks like a full disk). False when it cannot be told (no statvfs, no inode count)."""
    for candidate in (path, *path.parents):
        try:
            info = os.statvfs(candidate)
        except OSError:
            continue
        return info.f_files > 0 and info.f_favail == 0
    return False


def not_writable_error(root: Path, err: OSError, path: Path | None = None) -> CacheNotWritableError:
    """`err` from creating the cache's folders or lock -> an error naming its cause and fix."""
    where = path if path is not None else Path(err.filename) if err.filename else root
    return CacheNotWritableError(
        err.errno or errno.EACCES,
        f"cache dir {root} is not writable: {err.strerror or err} ({where}). Fix: "
        + _advice(root, where, err),
    )


def write_error(root: Path, path: Path, err: OSError) -> CacheWriteError:
    """`err` from writing `path` -> an error with the real cause (ENOSPC, EACCES, ENOTDIR)."""
    return CacheWriteError(
        err.errno,
        f"could not write {path}: {err.strerror or err} "
        f"[{errno.errorcode.get(err.errno or 0, '?')}]. Fix: {_advice(root, path, err)}",
    )
