"""Counters of cache traffic (reads that hit/miss, samples written, shards quarantined)."""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass
class CacheStats:
    hits: int = 0
    misses: int = 0
    written: int = 0
    quarantined_shards: int = 0

    @property
    def hit_rate(self) -> float:
        """hits / (hits + misses); 0.0 before any lookup."""
        total = self.hits + self.misses
        return self.hits / total if total else 0.0

    def as_dict(self) -> dict[str, float]:
        return {**asdict(self), "hit_rate": self.hit_rate}

    def __add__(self, other: CacheStats) -> CacheStats:
        return CacheStats(
            hits=self.hits + other.hits,
            misses=self.misses + other.misses,
            written=self.written + other.written,
            quarantined_shards=self.quarantined_shards + other.quarantined_shards,
        )
