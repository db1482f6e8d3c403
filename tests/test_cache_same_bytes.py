"""Same key, same bytes: what a sample stores does not depend on the batch it was generated in,
up to a stated tolerance that holds on every CPU (the diffusion kernels are not bitwise
batch-invariant)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from fixtures_diffusion import tiny_pipeline_dir_fixture  # noqa: F401  (fixture tiny_pipeline_dir)
from fixtures_synthetic import make_synthetic_dm

from synthmask.cache import SampleCache, SampleRecord
from synthmask.synthesis import MARGIN_STEPS, quantize_margin

N = 16


def test_quantize_margin_is_on_the_grid_and_exact_in_float16() -> None:
    margin = torch.tensor([[[0.0, 0.1234567, 0.99999, float("inf")]]])
    q = quantize_margin(margin)
    assert torch.equal(q[..., :3] * MARGIN_STEPS, torch.round(q[..., :3] * MARGIN_STEPS))
    assert torch.equal(q.half().float(), q) and torch.isinf(q[0, 0, 3])
    assert abs(float(q[0, 0, 1]) - 0.1234567) <= 0.5 / MARGIN_STEPS


def synthesize_at(pipe_dir: Path, root: Path, batch: int, n: int = N) -> SampleCache:
    dm = make_synthetic_dm(pipe_dir, root, synthesis={
        "num_images": n, "batch_size": batch, "shard_size": n})  # fmt: skip
    dm.synthesize(log_to_wandb=False)
    return SampleCache(root)


def differences(a: SampleRecord, b: SampleRecord) -> dict[str, int | float]:
    """Per-key differences between two stores of one sample (pixel counts and largest gaps)."""
    margin_a, margin_b = a.margin.astype(np.float32), b.margin.astype(np.float32)
    finite = np.isfinite(margin_a) & np.isfinite(margin_b)
    mask = a.mask != b.mask
    near_tie = (np.abs(margin_a) <= 1 / MARGIN_STEPS) | (np.abs(margin_b) <= 1 / MARGIN_STEPS)
    image_gap = np.abs(a.image.astype(int) - b.image.astype(int))
    return {
        "mask_pixels": int(mask.sum()),
        "mask_pixels_off_ties": int((mask & ~near_tie).sum()),
        "reliability_pixels": int((a.reliability != b.reliability).sum()),
        "margin_pixels": int((margin_a != margin_b).sum()),
        "margin_gap": float(np.abs(margin_a - margin_b)[finite].max(initial=0.0)),
        "margin_inf_mismatch": int((np.isinf(margin_a) != np.isinf(margin_b)).sum()),
        "image_pixels": int(image_gap.any(-1).sum()),
        "image_gap": int(image_gap.max()),
    }


def test_batch_5_and_batch_8_store_the_same_samples_within_tolerance(
    tiny_pipeline_dir: Path, tmp_path: Path
) -> None:
    """What holds on every CPU, whatever the thread count (the diffusion kernels are not
    bitwise batch-invariant, and how far they are off differs between CPUs):

    - masks identical except at near ties (stored margin <= one grid step in either store),
      where float noise may pick the other class;
    - reliability differs in at most 2 pixels per pixel whose margin or mask differs (the
      per-class top-k ranking swaps at most one pair per changed value);
    - margins at most one grid step (1/256) apart, in at most 1% of pixels;
    - images at most one intensity level apart, in at most 1% of pixels.

    How often margins are bitwise identical (45 of 48 keys on one CPU, 14 of 16 on another)
    is a measurement, not a guarantee: benchmarks/cache_reliability.py --batch-keys reports it.
    """
    caches = {batch: synthesize_at(tiny_pipeline_dir, tmp_path / f"b{batch}", batch)
              for batch in (5, 8)}  # fmt: skip
    assert sorted(caches[5].keys()) == sorted(caches[8].keys()) and len(caches[5]) == N
    totals: dict[str, float] = {}
    pixels = 0
    for key in caches[5].keys():
        diff = differences(caches[5][key], caches[8][key])
        assert diff["mask_pixels_off_ties"] == 0, (key, diff)
        changed = diff["margin_pixels"] + diff["mask_pixels"]
        assert diff["reliability_pixels"] <= 2 * changed, (key, diff)
        assert diff["margin_gap"] <= 1 / MARGIN_STEPS and diff["margin_inf_mismatch"] == 0
        assert diff["image_gap"] <= 1, (key, diff)
        for name, value in diff.items():
            totals[name] = totals.get(name, 0) + value
        pixels += caches[5][key].mask.size
    assert totals["margin_pixels"] <= 0.01 * pixels, totals
    assert totals["image_pixels"] <= 0.01 * pixels, totals
