"""SyntheticSegDataset: a map-style dataset over a synthesis plan.

Each item is read from the sample cache; an item that is not cached yet is generated inside
the data pipeline (in batches: the DataLoader hands a whole batch of indices to
`__getitems__`) and written through the cache by this process's own writer, so later epochs
and reruns read it. A missing key is claimed before it is generated, as `synthmask synthesize`
does (datamodules/synthetic_claims.py): DDP ranks, DataLoader workers and concurrent runs that
want the same key (reliability pruning reads every sample on every rank; two sweep trials
share one cache) generate it once, and the others wait for it and read it.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import albumentations as A
import numpy as np
import torch
from torch.utils.data import Dataset, get_worker_info

from synthmask.cache import SampleCache, SampleRecord
from synthmask.datamodules.synthetic_claims import generate_claimed
from synthmask.datamodules.transforms import IGNORE_INDEX
from synthmask.synthesis import SampleSynthesizer
from synthmask.synthesis_plan import SampleSpec


class SynthesisCounters:
    """Counters shared by the main process and its DataLoader workers (shared memory).

    `generated`: samples this process and its workers generated; `by_others`: samples they
    needed that concurrent writers (other ranks, other runs) had claimed and generated. With
    `track(num_items)`, `used` marks which plan indices this process and its workers used at
    all, so that the samples read from the cache can be counted once over epochs and ranks.
    """

    FIELDS = ("items", "cache_hits", "generated", "generation_seconds", "by_others")

    def __init__(self) -> None:
        # A spawn-context lock also works in forked workers; a fork-context one cannot be sent
        # to spawned workers (used for CUDA generation).
        self._values = multiprocessing.get_context("spawn").Array("d", len(self.FIELDS))
        self._used: Any = None

    def track(self, num_items: int) -> None:
        """Record which of `num_items` plan indices get used (call before workers start)."""
        if self._used is None or len(self._used) != num_items:
            self._used = multiprocessing.get_context("spawn").RawArray("b", num_items)

    def mark_used(self, indices: Iterable[int]) -> None:
        if self._used is not None:
            for index in indices:
                self._used[int(index)] = 1

    def used(self) -> np.ndarray:
        """(num_items,) uint8: 1 where the plan index was used (empty before `track`)."""
        if self._used is None:
            return np.zeros(0, dtype=np.uint8)
        return np.frombuffer(self._used, dtype=np.int8).astype(np.uint8)

    def __deepcopy__(self, memo: dict) -> SynthesisCounters:
        """Copies share the counters (shared memory cannot be copied): Lightning's weight
        averaging callbacks deep-copy the LightningModule, its trainer and data module with it."""
        return self

    def add(self, **deltas: float) -> None:
        with self._values.get_lock():
            for name, delta in deltas.items():
                self._values[self.FIELDS.index(name)] += delta

    def snapshot(self) -> dict[str, float]:
        with self._values.get_lock():
            values = dict(zip(self.FIELDS, self._values[:], strict=True))
        seconds, looked_up = values["generation_seconds"], values["items"]
        values["images_per_second"] = values["generated"] / seconds if seconds > 0 else 0.0
        values["cache_hit_rate"] = values["cache_hits"] / looked_up if looked_up else 0.0
        return values


def rank_and_world() -> tuple[int, int]:
    """Global rank and world size from torch.distributed, else RANK/WORLD_SIZE, else (0, 1)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


class SyntheticSegDataset(Dataset):
    """Items of a synthesis plan, read from the cache at `cache_dir` (generated when missing).

    Args:
        specs: the plan (item `i` is `specs[i]`).
        cache_dir: the sample cache.
        transform: albumentations pipeline with `reliability` and `margin` mask targets.
        synthesizer: generates missing items; None = a missing item raises KeyError.
        synthesis_batch_size: diffusion batch size for missing items.
        counters: shared statistics (hits, generated, time).

    Items follow the batch contract: "image" float32 (3, H, W), "mask" int64 (H, W) with 255 =
    ignore, "reliability" float32 (H, W) in [0, 1], "margin" float32 (H, W), "prompt" str, "name" str.
    """

    def __init__(
        self,
        specs: Sequence[SampleSpec],
        cache_dir: str | Path,
        transform: A.Compose,
        synthesizer: SampleSynthesizer | None = None,
        synthesis_batch_size: int = 8,
        counters: SynthesisCounters | None = None,
    ) -> None:
        self.specs = list(specs)
        self.cache_dir = Path(cache_dir)
        self.transform = transform
        self.synthesizer = synthesizer
        self.synthesis_batch_size = synthesis_batch_size
        self.counters = counters or SynthesisCounters()
        self._cache: SampleCache | None = None
        self._writer = None
        self._pid = os.getpid()
        self.reseed(torch.initial_seed())

    def reseed(self, seed: int) -> None:
        """Own augmentation stream per rank (and per worker, via `seed_synthetic_worker`)."""
        rank, _ = rank_and_world()
        state = np.random.SeedSequence([seed % 2**63, rank]).generate_state(1)[0]
        self.transform.set_random_seed(int(state))

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_cache"], state["_writer"] = None, None
        return state

    def __len__(self) -> int:
        return len(self.specs)

    def cache(self) -> SampleCache:
        """This process's view of the cache (opened lazily, reopened after a fork)."""
        if self._cache is None or self._pid != os.getpid():
            self._cache, self._writer, self._pid = SampleCache(self.cache_dir), None, os.getpid()
        return self._cache

    def records(self, indices: Sequence[int]) -> list[SampleRecord]:
        """Raw cached records of `indices` (generating and caching the missing ones)."""
        cache = self.cache()
        wanted = list(dict.fromkeys(int(i) for i in indices))
        found = {i: cache.get(self.specs[i].key) for i in wanted}
        if any(record is None for record in found.values()) and cache.refresh():
            found = {i: r or cache.get(self.specs[i].key) for i, r in found.items()}
        missing = [self.specs[i] for i, record in found.items() if record is None]
        self.counters.add(items=len(wanted), cache_hits=len(wanted) - len(missing))
        if missing:
            for spec, record in zip(missing, self._generate(missing), strict=True):
                found[spec.index] = record
        self.counters.mark_used(wanted)
        return [found[int(i)] for i in indices]

    def _generate(self, specs: list[SampleSpec]) -> list[SampleRecord]:
        """Records of `specs` (missing from the cache): generated under per-key claims."""
        if self.synthesizer is None:
            raise KeyError(
                f"{len(specs)} sample(s) (e.g. index {specs[0].index}, key {specs[0].key}) are not "
                f"in the cache at {self.cache_dir} and this dataset cannot generate. Fix: run "
                "`synthmask synthesize --config <experiment>.yaml` (or use mode: on_the_fly)."
            )
        cache = self.cache()
        if self._writer is None:
            worker = get_worker_info()
            rank, _ = rank_and_world()
            label = f"r{rank}w{worker.id if worker is not None else 'main'}"
            self._writer = cache.writer(label, shard_size=self.synthesis_batch_size)
        done = generate_claimed(
            self.synthesizer, cache, self._writer, specs, self.synthesis_batch_size
        )
        self.counters.add(
            generated=done.generated, generation_seconds=done.seconds, by_others=done.by_others
        )
        return [done.records[spec.key] for spec in specs]

    def __getitems__(self, indices: Sequence[int]) -> list[dict[str, Any]]:
        return [
            self.to_item(self.specs[int(i)], record)
            for i, record in zip(indices, self.records(indices), strict=True)
        ]

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.__getitems__([index])[0]

    def to_item(self, spec: SampleSpec, record: SampleRecord) -> dict[str, Any]:
        out = self.transform(
            image=record.image,
            mask=record.mask,
            reliability=record.reliability,
            margin=record.margin.astype(np.float32),
        )
        mask = torch.as_tensor(np.asarray(out["mask"]), dtype=torch.int64)
        ignore = mask == IGNORE_INDEX  # padding included: reliability/margin 0 there
        reliability = torch.as_tensor(np.asarray(out["reliability"])).float().div_(255.0)
        margin = torch.as_tensor(np.asarray(out["margin"]), dtype=torch.float32)
        return {
            "image": out["image"].float(),
            "mask": mask,
            "reliability": reliability.masked_fill_(ignore, 0.0),
            "margin": margin.masked_fill_(ignore, 0.0),
            "prompt": spec.prompt.text,
            "name": f"synth_{spec.index:07d}_{spec.key[:12]}",
        }

    def close(self) -> None:
        if self._writer is not None and self._pid == os.getpid():
            self._writer.close()
        self._writer = None


def seed_synthetic_worker(worker_id: int) -> None:
    """DataLoader `worker_init_fn`: distinct augmentation streams per worker."""
    info = get_worker_info()
    if info is not None and isinstance(info.dataset, SyntheticSegDataset):
        info.dataset.reseed(torch.initial_seed())
