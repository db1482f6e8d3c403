"""`ShardIndex`: what writers and recovery need of the store, as a structural type.

Imports inside the cache go one way: store -> writer -> recovery -> (claims, manifest, shard,
index_api). The writer and recovery never import the store; they work on any object with these
members, which `SampleCache` has.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

from synthmask.cache.stats import CacheStats


class ShardIndex(Protocol):
    """The store's folders, index and repair hooks as the writer and recovery use them."""

    root: Path
    shard_dir: Path
    manifest_dir: Path
    lock_dir: Path
    claims_dir: Path
    quarantine_dir: Path
    stats: CacheStats
    # manifest file name -> its bad lines [(line number, problem)] / wrong records' digests
    bad_manifest_lines: dict[str, list[tuple[int, str]]]
    wrong_records: dict[str, set[str]]
    # manifest file name -> {shard name: record digest} of listed shards that are not on disk
    missing_shards: dict[str, dict[str, str]]

    def refresh(self) -> int: ...

    def add_shard(self, record: dict[str, Any], source: str = "") -> bool: ...

    def known_shards(self) -> set[str]: ...

    def quarantine(self, name: str, reason: str) -> None: ...

    def __contains__(self, key: object) -> bool: ...
