"""Scene seeds: scene i of a split is a fixed function of (base seed, split, i)."""

from __future__ import annotations

import zlib

import numpy as np

SPLIT_CODES: dict[str, int] = {"train": 0, "val": 1, "test": 2}


def split_code(split: str) -> int:
    """Integer code of a split: train 0, val 1, test 2, any other name a stable CRC32 of it."""
    if not split:
        raise ValueError("split name is empty; use 'train', 'val', 'test' or another name.")
    return SPLIT_CODES.get(split, zlib.crc32(split.encode("utf-8")) + 3)


def scene_seed(base_seed: int, split: str, index: int) -> int:
    """Seed of scene `index` of `split`; different (base seed, split, index) give independent streams.

    Uses numpy's SeedSequence over the three numbers, so splits never share a seed stream.
    """
    if index < 0:
        raise ValueError(f"scene index {index} is negative; use 0..n-1.")
    entropy = [int(base_seed), split_code(split), int(index)]
    return int(np.random.SeedSequence(entropy).generate_state(1, dtype=np.uint64)[0] >> 1)
