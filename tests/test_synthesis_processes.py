"""Synthesis in several CPU processes: same samples as one process, each exactly once, its own
writer per process, a failed process reported with the cache left resumable."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from fixtures_diffusion import tiny_pipeline_dir_fixture  # noqa: F401  (fixture tiny_pipeline_dir: 32 px)
from fixtures_synthetic import make_synthetic_dm

from synthmask.cache import SampleCache
from synthmask.datamodules.synthetic import SyntheticSegDataModule
from synthmask.diffusion.pipeline import PipelineConfig
from synthmask.synthesis import SampleSynthesizer
from synthmask.synthesis_plan import SampleSpec, batched
from synthmask.synthesis_processes import split_batches


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


def make_dm(
    pipe_dir: Path, cache_dir: Path, synthesis: dict | None = None, **overrides
) -> SyntheticSegDataModule:
    """7 images in batches of 2: 4 batches, the last one short."""
    return make_synthetic_dm(
        pipe_dir,
        cache_dir,
        synthesis={"num_images": 7, "batch_size": 2, **(synthesis or {})},
        **overrides,
    )


def manifest_writers_and_keys(cache_dir: Path) -> tuple[set[str], list[str]]:
    writers, keys = set(), []
    for path in (cache_dir / "manifest").glob("*.jsonl"):
        writers.add(path.stem.rsplit("-", 1)[0])
        for line in path.read_text().splitlines():
            keys += [sample["key"] for sample in json.loads(line)["samples"]]
    return writers, keys


def test_split_batches_keeps_the_batches_of_one_process() -> None:
    specs = list(range(11))  # stand-ins: split_batches only slices
    parts = split_batches(specs, batch_size=3, parts=2)
    assert parts == [[0, 1, 2, 6, 7, 8], [3, 4, 5, 9, 10]]
    one_process = [list(b) for b in batched(specs, 3)]
    rebatched = sorted(list(b) for part in parts for b in batched(part, 3))
    assert rebatched == sorted(one_process)
    assert split_batches(specs[:2], 3, 4) == [[0, 1], [], [], []]
    with pytest.raises(ValueError, match="at least 1"):
        split_batches(specs, 0, 2)


def test_two_processes_make_the_same_samples_each_once(tiny_pipeline_dir, tmp_path):
    serial = make_dm(tiny_pipeline_dir, tmp_path / "serial")
    serial.synthesize()
    dm = make_dm(tiny_pipeline_dir, tmp_path / "parallel", synthesis={"processes": 2})
    report = dm.synthesize()
    assert (report.generated, report.cache_hits, report.total) == (7, 0, 7)
    assert report.images_per_second > 0
    writers, keys = manifest_writers_and_keys(tmp_path / "parallel")
    assert writers == {"r0p0", "r0p1"}  # one writer per process
    assert sorted(keys) == sorted(spec.key for spec in dm.plan())  # each sample exactly once
    one, two = SampleCache(tmp_path / "serial"), SampleCache(tmp_path / "parallel")
    for spec in dm.plan():  # same batches as one process: the same samples
        a, b = one[spec.key], two[spec.key]
        assert np.abs(a.image.astype(int) - b.image.astype(int)).max() <= 1
        assert (a.mask == b.mask).mean() >= 0.99
    rerun = make_dm(
        tiny_pipeline_dir, tmp_path / "parallel", synthesis={"processes": 2}
    ).synthesize()
    assert (rerun.generated, rerun.cache_hits) == (0, 7)


def test_failed_process_is_reported_and_a_rerun_resumes(tiny_pipeline_dir, tmp_path, monkeypatch):
    generate = SampleSynthesizer.generate

    def fails_on_late_samples(self, specs: list[SampleSpec]):
        if any(spec.index >= 2 for spec in specs):  # batch 1 (process 1) fails, batch 0 not
            raise OSError("disk on fire")
        return generate(self, specs)

    monkeypatch.setattr(SampleSynthesizer, "generate", fails_on_late_samples)  # forked: inherited
    dm = make_dm(tiny_pipeline_dir, tmp_path / "cache", synthesis={"num_images": 4, "processes": 2})
    with pytest.raises(RuntimeError, match=r"1 of 2 synthesis processes failed.*rerun resumes"):
        dm.synthesize()
    _, keys = manifest_writers_and_keys(tmp_path / "cache")
    assert sorted(keys) == sorted(spec.key for spec in dm.plan()[:2])  # process 0's batch
    monkeypatch.setattr(SampleSynthesizer, "generate", generate)
    rerun = make_dm(
        tiny_pipeline_dir, tmp_path / "cache", synthesis={"num_images": 4, "processes": 2}
    )
    report = rerun.synthesize()
    assert (report.generated, report.cache_hits) == (2, 2)


def test_processes_are_refused_for_cuda_and_below_one(tiny_pipeline_dir, tmp_path):
    cuda = PipelineConfig(model=str(tiny_pipeline_dir), device="cuda")
    with pytest.raises(ValueError, match="torchrun"):
        make_dm(tiny_pipeline_dir, tmp_path / "c", pipeline=cuda, synthesis={"processes": 2})
    with pytest.raises(ValueError, match=r"synthesis\.processes=0"):
        make_dm(tiny_pipeline_dir, tmp_path / "c", synthesis={"processes": 0})
