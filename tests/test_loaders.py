"""Shared loader construction: unpadded distributed evaluation sampler, Lightning keeps it."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from lightning.pytorch.trainer.connectors.data_connector import _DataConnector
from lightning.pytorch.trainer.states import RunningStage
from torch.utils.data import (
    DataLoader,
    DistributedSampler,
    RandomSampler,
    SequentialSampler,
    TensorDataset,
)

from synthmask.datamodules import loaders
from synthmask.datamodules.loaders import (
    UnpaddedDistributedSampler,
    build_loader,
    shard_indices,
)


def _dataset(n: int) -> TensorDataset:
    return TensorDataset(torch.arange(n))


def test_shard_indices_ten_items_on_three_ranks() -> None:
    shards = [shard_indices(10, rank, 3) for rank in range(3)]
    assert shards == [[0, 3, 6, 9], [1, 4, 7], [2, 5, 8]]
    flat = [i for shard in shards for i in shard]
    assert len(flat) == len(set(flat)) == 10
    assert sorted(flat) == list(range(10))


def test_shard_indices_more_ranks_than_items_leaves_ranks_empty() -> None:
    assert [shard_indices(2, rank, 3) for rank in range(3)] == [[0], [1], []]


@pytest.mark.parametrize(("rank", "world"), [(3, 3), (-1, 2), (0, 0)])
def test_shard_indices_rejects_bad_rank(rank: int, world: int) -> None:
    with pytest.raises(ValueError, match="rank"):
        shard_indices(10, rank, world)


def test_unpadded_sampler_lengths_and_indices() -> None:
    samplers = [UnpaddedDistributedSampler(_dataset(10), num_replicas=3, rank=r) for r in range(3)]
    assert [len(s) for s in samplers] == [4, 3, 3]
    assert [list(s) for s in samplers] == [[0, 3, 6, 9], [1, 4, 7], [2, 5, 8]]
    # The padding DistributedSampler would give 4 per rank (12 > 10 items): two duplicates.
    padded = [DistributedSampler(_dataset(10), 3, r, shuffle=False) for r in range(3)]
    assert sum(len(s) for s in padded) == 12


def test_lightning_keeps_the_unpadded_sampler_under_ddp() -> None:
    """Lightning 2.6's data connector injects its padding sampler into any loader whose sampler
    is not a DistributedSampler; ours is one, so the loader comes back untouched."""
    accelerator = SimpleNamespace(use_distributed_sampler=True, is_distributed=True)
    connector = _DataConnector(SimpleNamespace(_accelerator_connector=accelerator))
    ours = DataLoader(
        _dataset(10), sampler=UnpaddedDistributedSampler(_dataset(10), num_replicas=3, rank=1)
    )
    plain = DataLoader(_dataset(10))
    assert not connector._requires_distributed_sampler(ours)
    assert connector._requires_distributed_sampler(plain)
    assert connector._prepare_dataloader(ours, False, RunningStage.VALIDATING) is ours


def test_build_loader_single_process_samplers_and_drop_last() -> None:
    val = build_loader(_dataset(5), batch_size=2, shuffle=False)
    train = build_loader(_dataset(5), batch_size=2, shuffle=True)
    tiny_train = build_loader(_dataset(1), batch_size=2, shuffle=True)
    assert isinstance(val.sampler, SequentialSampler)
    assert isinstance(train.sampler, RandomSampler)
    assert [len(b[0]) for b in val] == [2, 2, 1]
    assert len(train) == 2  # ragged last batch dropped
    assert len(tiny_train) == 1  # no full batch: keep the only one


def test_build_loader_shards_evaluation_but_not_training_under_ddp(monkeypatch) -> None:
    monkeypatch.setattr(loaders, "distributed_rank_and_world", lambda: (2, 3))
    val = build_loader(_dataset(10), batch_size=2, shuffle=False)
    train = build_loader(_dataset(10), batch_size=2, shuffle=True)
    assert isinstance(val.sampler, UnpaddedDistributedSampler)
    assert [b[0].tolist() for b in val] == [[2, 5], [8]]
    assert isinstance(train.sampler, RandomSampler)  # Lightning shards training itself


def test_datamodule_val_loader_is_sharded_under_ddp(monkeypatch) -> None:
    from synthmask.datamodules.shapes_world import ShapesWorldDataModule

    monkeypatch.setattr(loaders, "distributed_rank_and_world", lambda: (0, 3))
    data = ShapesWorldDataModule(image_size=32, n_train=2, n_val=10, n_test=4, batch_size=4)
    assert list(data.val_dataloader().sampler) == [0, 3, 6, 9]
    assert list(data.test_dataloader().sampler) == [0, 3]
