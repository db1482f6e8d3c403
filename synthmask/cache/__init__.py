"""Sharded, atomic, resumable, self-verifying store of synthetic samples (see store.py)."""

from synthmask.cache.errors import CacheWriteError
from synthmask.cache.key import canonical_json, sample_key
from synthmask.cache.record import SampleRecord
from synthmask.cache.shard import ShardError
from synthmask.cache.stats import CacheStats
from synthmask.cache.store import CacheNotWritableError, SampleCache
from synthmask.cache.writer import CacheWriter

__all__ = [
    "CacheNotWritableError",
    "CacheStats",
    "CacheWriteError",
    "CacheWriter",
    "SampleCache",
    "SampleRecord",
    "ShardError",
    "canonical_json",
    "sample_key",
]
