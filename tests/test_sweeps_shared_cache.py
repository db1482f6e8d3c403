"""Trials and ranks sharing one cache, in one process: the on-the-fly data pipeline leaves keys
another writer claimed to that writer, waits for them and reads them; the run's totals
(``synth/generated``, ``synth/cached``) count what it generated and what it only read."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from fixtures_diffusion import tiny_pipeline_dir_fixture  # noqa: F401  (fixture tiny_pipeline_dir)
from fixtures_synthetic import make_synthetic_dm

from synthmask.cache import SampleCache
from synthmask.callbacks.synthesis_stats import run_synthesis_totals


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


def manifest_keys(cache_dir: Path) -> list[str]:
    return [
        sample["key"]
        for path in (cache_dir / "manifest").glob("*.jsonl")
        for line in path.read_text().splitlines()
        for sample in json.loads(line)["samples"]
    ]


def single_process_trainer() -> SimpleNamespace:
    return SimpleNamespace(strategy=SimpleNamespace(root_device=torch.device("cpu")), world_size=1)


@pytest.mark.timeout(300)
def test_keys_claimed_by_another_writer_are_waited_for_and_read(
    tiny_pipeline_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """A concurrent trial holds the claims of 2 of the 6 keys and commits them only once this
    run has committed the other 4 (so this run must wait for them)."""
    cache_dir = tmp_path / "cache"
    dm = make_synthetic_dm(tiny_pipeline_dir, cache_dir, synthesis={"mode": "on_the_fly"})
    dm.setup("fit")
    specs = dm.plan()
    theirs = specs[1:3]
    their_records = dm.synthesizer.generate(theirs)  # drawn up front: one thread uses torch
    other = SampleCache(cache_dir).writer("othertrial", shard_size=2)
    assert all(other.claim(spec.key) for spec in theirs)
    commits: list[float] = []

    def other_trial_commits() -> None:
        try:
            view, deadline = SampleCache(cache_dir), time.perf_counter() + 120
            while time.perf_counter() < deadline:  # until the run committed its own 4 keys
                view.refresh()
                if len(view) >= 4:
                    break
                time.sleep(0.1)
            for spec, record in zip(theirs, their_records, strict=True):
                other.add(spec.key, record)
        finally:
            other.close()  # commits, or gives the claims back: the run never waits forever
            commits.append(time.perf_counter())

    thread = threading.Thread(target=other_trial_commits)
    thread.start()
    records = dm._train.records(range(len(specs)))
    returned = time.perf_counter()
    thread.join()
    assert [r.meta["key"] for r in records] == [s.key for s in specs]
    assert commits and returned >= commits[0]  # it waited for the other trial's commit
    assert "2 sample(s) claimed by other writers" in capsys.readouterr().out  # and said so
    stats = dm.synthesis_stats()
    assert (stats["generated"], stats["by_others"]) == (4, 2)
    keys = manifest_keys(cache_dir)
    assert sorted(keys) == sorted(s.key for s in specs)  # every key once, none generated twice
    assert not list((cache_dir / "claims").iterdir())  # every claim given back
    assert run_synthesis_totals(single_process_trainer(), dm) == (4, 2)
    dm.teardown("fit")


def test_totals_count_each_used_sample_once_over_epochs(
    tiny_pipeline_dir: Path, tmp_path: Path
) -> None:
    """A run on a filled cache generated nothing and read every sample it used, once however
    many epochs read it; an ahead pass counts what it generated."""
    cache_dir = tmp_path / "cache"
    ahead = make_synthetic_dm(tiny_pipeline_dir, cache_dir, synthesis={"num_images": 4})
    ahead.setup("fit")
    assert run_synthesis_totals(single_process_trainer(), ahead) == (4, 0)
    reader = make_synthetic_dm(
        tiny_pipeline_dir, cache_dir, synthesis={"num_images": 6, "mode": "on_the_fly"}
    )
    reader.setup("fit")
    for _epoch in range(2):
        for _batch in reader.train_dataloader():
            pass
    assert run_synthesis_totals(single_process_trainer(), reader) == (2, 4)
    reader.teardown("fit")
