"""Cache read speed: random-order reads (pread + checksum + PNG decode) in samples/s.

Usage: python benchmarks/cache_read_speed.py [--size 512] [--num 200] [--shard-size 64]
Writes `num` samples of size x size (random-texture image, blocky mask) into a temp cache, then
reads them all in random order in a fresh process-local reader and prints write/read rates.
"""

from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np

from synthmask.cache import SampleCache, SampleRecord


def synthetic_record(i: int, size: int) -> SampleRecord:
    rng = np.random.default_rng(i)
    # smooth image + blocky mask: compresses like a photo and a label map, unlike pure noise
    low = rng.integers(0, 256, (size // 8, size // 8, 3), dtype=np.uint8)
    image = np.kron(low, np.ones((8, 8, 1), np.uint8)) + rng.integers(
        0, 8, (size, size, 3), dtype=np.uint8
    )
    mask = np.kron(rng.integers(0, 3, (4, 4)), np.ones((size // 4, size // 4))).astype(np.uint8)
    return SampleRecord(
        image=image,
        mask=mask,
        reliability=mask > 0,
        margin=rng.random((size, size)).astype(np.float16),
        meta={"i": i, "prompt": {"text": "a photograph of a dog", "class_words": []}},
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--num", type=int, default=200)
    parser.add_argument("--shard-size", type=int, default=64)
    args = parser.parse_args()
    records = [synthetic_record(i, args.size) for i in range(args.num)]
    with tempfile.TemporaryDirectory() as root:
        cache = SampleCache(root)
        start = time.perf_counter()
        with cache.writer("bench", shard_size=args.shard_size) as writer:
            for i, record in enumerate(records):
                writer.add(f"k{i}", record)
        write_s = time.perf_counter() - start
        reader = SampleCache(root)
        order = np.random.default_rng(0).permutation(args.num)
        start = time.perf_counter()
        for i in order:
            reader[f"k{i}"]
        read_s = time.perf_counter() - start
        start = time.perf_counter()
        opened = SampleCache(root)
        open_s = time.perf_counter() - start
    print(
        f"{args.num} samples {args.size}x{args.size}, shard_size {args.shard_size}: "
        f"write {args.num / write_s:.1f} samples/s, read {args.num / read_s:.1f} samples/s "
        f"(1 process), index open {open_s * 1e3:.1f} ms for {len(opened)} samples"
    )


if __name__ == "__main__":
    main()
