"""Deterministic sample records for cache tests (imported by tests and their subprocesses)."""

from __future__ import annotations

import numpy as np

from synthmask.cache import SampleRecord


def make_record(i: int, h: int = 12, w: int = 16) -> SampleRecord:
    """Record number `i`: random arrays from seed `i`, reliability given as bool."""
    rng = np.random.default_rng(i)
    return SampleRecord(
        image=rng.integers(0, 256, (h, w, 3), dtype=np.uint8),
        mask=rng.choice(np.array([0, 1, 2, 255], dtype=np.uint8), size=(h, w)),
        reliability=rng.random((h, w)) > 0.5,
        margin=rng.random((h, w)).astype(np.float16),
        meta={"i": i, "prompt": {"text": f"a photo of a dog {i}", "class_words": []}},
    )


def key_of(i: int) -> str:
    return f"key{i:04d}"
