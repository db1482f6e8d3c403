"""DataLoader construction shared by the data modules, with unpadded distributed evaluation.

Lightning gives every loader without a ``DistributedSampler`` a ``DistributedSampler`` (or a
``DistributedSamplerWrapper``) under DDP, and both pad the data set to a multiple of the world
size by repeating samples: with 10 validation images on 3 ranks, two images are counted twice and
skew the synced mIoU. Evaluation loaders built here carry an ``UnpaddedDistributedSampler``
instead when a process group with world size > 1 is initialized; it subclasses
``DistributedSampler``, so Lightning keeps it (``_requires_distributed_sampler`` is False).
Ranks may then see different numbers of batches, which validation tolerates: metrics are synced
once at epoch end, not per step.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset, DistributedSampler


def shard_indices(num_items: int, rank: int, world_size: int) -> list[int]:
    """The indices rank ``rank`` of ``world_size`` evaluates: rank, rank + world_size, ... < n.

    Every index belongs to exactly one rank; shard sizes differ by at most one (10 items on 3
    ranks: 4, 3, 3). No index is repeated to even them out.
    """
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank={rank}, world_size={world_size}: need 0 <= rank < world_size.")
    return list(range(rank, num_items, world_size))


class UnpaddedDistributedSampler(DistributedSampler):
    """In-order, unpadded shard of a data set for distributed evaluation (see module docstring).

    Args:
        dataset: the data set to shard (only its length is used).
        num_replicas, rank: world size and this process's rank (default: the process group's).
    """

    def __init__(
        self, dataset: Dataset, num_replicas: int | None = None, rank: int | None = None
    ) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=False)
        self.indices = shard_indices(len(dataset), self.rank, self.num_replicas)
        self.num_samples = len(self.indices)
        self.total_size = len(dataset)

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return self.num_samples


def distributed_rank_and_world() -> tuple[int, int]:
    """(rank, world size) of the initialized default process group; (0, 1) when there is none."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def build_loader(
    dataset: Dataset,
    batch_size: int,
    shuffle: bool,
    num_workers: int = 0,
    collate_fn: Callable[[list[Any]], Any] | None = None,
    pin_memory: bool = False,
    worker_init_fn: Callable[[int], None] | None = None,
) -> DataLoader:
    """The loader of one split: shuffled for training, in order (and unpadded under DDP) for
    evaluation.

    Training drops a ragged last batch (BatchNorm fails on a batch of 1), but only when at least
    one full batch exists, so tiny data sets still train. Workers are persistent when > 0.
    """
    sampler = None
    rank, world_size = distributed_rank_and_world()
    if not shuffle and world_size > 1:
        sampler = UnpaddedDistributedSampler(dataset, num_replicas=world_size, rank=rank)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        sampler=sampler,
        num_workers=num_workers,
        persistent_workers=num_workers > 0,
        pin_memory=pin_memory,
        collate_fn=collate_fn,
        worker_init_fn=worker_init_fn,
        drop_last=shuffle and len(dataset) >= batch_size,
    )
