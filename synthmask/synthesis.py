"""The synthesis engine: plan specs -> diffusion with attention capture -> pseudo-masks ->
cache records. Pure core (no Lightning); the data module and `synthmask synthesize` wrap it.
What to generate (plan, prompts, label space) lives in `synthesis_plan.py`.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from synthmask.cache import CacheWriter, SampleCache, SampleRecord
from synthmask.cache.claim_owners import ClaimWait
from synthmask.diffusion.capture import CaptureConfig
from synthmask.diffusion.pipeline import PipelineConfig, load_pipeline, pipeline_fingerprint
from synthmask.diffusion.sampling import generate_with_attention
from synthmask.diffusion.tokens import class_token_positions
from synthmask.masks import IGNORE_INDEX, MaskConfig, pseudo_masks, reliable_mask
from synthmask.synthesis_plan import LabelSpace, SampleSpec, batched, config_digest

# Stored margins are float32 margins rounded to multiples of 1/MARGIN_STEPS (exact in float16).
# The diffusion kernels give results that differ in the last float32 bits between batch sizes;
# on the grid, the stored margin (and the reliability recomputed from it) is the same for the
# same key except where a value lies within that noise of a grid midpoint. Measured on the tiny
# test pipeline, batch 5 vs 8 over 48 keys: margins differed in 48 keys unrounded, 17 at 1/1024,
# 3 at 1/256 (one pixel, one step each); images differ by one level in a few pixels of a quarter
# of the keys, which no rounding fixes (tests/test_cache_same_bytes.py holds the tolerance).
MARGIN_STEPS = 256


def _shifted(vocab_id: int) -> int:
    return vocab_id if vocab_id < IGNORE_INDEX else vocab_id + 1


def quantize_margin(margin: torch.Tensor) -> torch.Tensor:
    """Round float32 margins to multiples of 1/MARGIN_STEPS (inf stays inf).

    Shape:
        (B, H, W) float -> (B, H, W) float32
    """
    return torch.round(margin.float() * MARGIN_STEPS) / MARGIN_STEPS


@dataclass
class SampleSynthesizer:
    """Generates cache records for specs with one (lazily loaded) diffusion pipeline.

    Args:
        pipeline: which model and sampler settings.
        capture: which attention to record (self-attention is switched on when the mask
            method needs it).
        mask: how attention becomes a pseudo-mask and reliability.
        labels: vocabulary id -> stored label id (see LabelSpace).
    """

    pipeline: PipelineConfig
    labels: LabelSpace
    capture: CaptureConfig = field(default_factory=CaptureConfig)
    mask: MaskConfig = field(default_factory=MaskConfig)

    def __post_init__(self) -> None:
        if self.mask.build_method().needs_self_attention and not self.capture.self_attention:
            raise ValueError(
                f"mask method {self.mask.method!r} refines with self-attention, but "
                "capture.self_attention is false. Fix: set capture.self_attention: true "
                "(and capture.self_resolutions, e.g. [32])."
            )
        self._pipe = None
        self._fingerprint: dict[str, Any] | None = None

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_pipe"] = None  # DataLoader workers load their own pipeline when they need it
        return state

    def release(self) -> None:
        """Drop the loaded pipeline (frees its GPU memory before training)."""
        self._pipe = None

    def fingerprint(self) -> dict[str, Any]:
        """Everything besides prompt and seed that determines a sample (the cache-key config)."""
        if self._fingerprint is None:
            cfg = self.pipeline
            self._fingerprint = {
                "generator": pipeline_fingerprint(cfg),
                "dtype": cfg.dtype,
                "scheduler": cfg.scheduler,
                "steps": cfg.num_inference_steps,
                "guidance": cfg.guidance_scale,
                "height": cfg.height,
                "width": cfg.width,
                "capture": self.capture.to_json(),
                "mask": self.mask.to_dict(),
                "labels": list(self.labels.vocab_to_label),
            }
        return self._fingerprint

    @property
    def pipe(self) -> Any:
        if self._pipe is None:
            pipe = load_pipeline(self.pipeline)
            if not any(".attn2." in name for name in pipe.unet.attn_processors):
                raise ValueError(
                    f"the UNet of {self.pipeline.model!r} has no cross-attention (attn2) layers, "
                    "so class words cannot be located. Fix: use a text-conditioned UNet "
                    "(UNet2DConditionModel with CrossAttn*Block2D blocks)."
                )
            self._pipe = pipe
        return self._pipe

    def generate(self, specs: Sequence[SampleSpec]) -> list[SampleRecord]:
        """Synthesize `specs` as one diffusion batch.

        Masks are computed over the classes the batch's prompts name (so a 919-class vocabulary
        costs no more than VOC), then stored as label ids (`self.labels`).

        Shape:
            each record: image uint8 (H, W, 3), mask uint8/uint16 (H, W), reliability (H, W),
            margin float16 (H, W).
        """
        pipe, cfg = self.pipe, self.pipeline
        prompts = [spec.prompt for spec in specs]
        # Vocabulary ids >= 255 shift up by one, so that 255 only ever means "ignore" in the
        # masks pseudo_masks returns (identity for vocabularies under 255 classes).
        positions = [
            [(_shifted(c), tokens) for c, tokens in class_token_positions(pipe.tokenizer, prompt)]
            for prompt in prompts
        ]
        out = generate_with_attention(
            pipe,
            prompts,
            [spec.seed for spec in specs],
            self.capture,
            cfg.num_inference_steps,
            cfg.guidance_scale,
            cfg.height,
            cfg.width,
        )
        size = tuple(out.images.shape[1:3])
        device = next(iter(out.cross_attention.values())).device
        vocab_to_label = self.labels.vocab_to_label
        pseudo, margin, reliable = pseudo_masks(
            out.cross_attention,
            out.self_attention or None,
            positions,
            _shifted(len(vocab_to_label) - 1) + 1,
            size,
            self.mask,
            image=out.images.to(device),
            compact_scores=True,  # pseudo_masks works on the named classes only
        )
        lut_size = max(_shifted(len(vocab_to_label)), IGNORE_INDEX + 1)
        shifted_to_label = np.full(lut_size, IGNORE_INDEX, dtype=np.int64)
        shifted_to_label[[_shifted(v) for v in range(len(vocab_to_label))]] = vocab_to_label
        shifted_to_label[IGNORE_INDEX] = IGNORE_INDEX
        labels = shifted_to_label[pseudo.label.cpu().numpy()].astype(self.labels.mask_dtype)
        margin = quantize_margin(margin)
        reliable = reliable_mask(  # from the stored margin, so it is as deterministic
            margin, pseudo.label, self.mask.reliability_fraction, self.mask.reliability_threshold
        )
        margins = margin.cpu().numpy().astype(np.float16)
        reliables = reliable.cpu().numpy()
        digest = config_digest(self.fingerprint())
        records = []
        for i, spec in enumerate(specs):
            present = sorted(int(c) for c in np.unique(labels[i]) if c != IGNORE_INDEX)
            meta = {
                "index": spec.index,
                "prompt": spec.prompt.to_json(),
                "seed": spec.seed,
                "key": spec.key,
                "class_ids": present,
                "config_sha256": digest,
            }
            records.append(
                SampleRecord(out.images[i].numpy(), labels[i], reliables[i], margins[i], meta)
            )
        return records


@dataclass
class SynthesisReport:
    """What a synthesis pass did: `cache_hits + generated + by_others == total`.

    `verified` samples were counted as done after their shards' sha256 matched the manifest;
    `regenerated` ones were in a shard that failed (`quarantined_shards` of them) and were
    generated again; `by_others` were generated meanwhile by concurrent writers that had
    claimed them first (`waited_seconds` spent waiting for them).
    """

    total: int = 0
    cache_hits: int = 0
    generated: int = 0
    seconds: float = 0.0
    verified: int = 0
    regenerated: int = 0
    quarantined_shards: int = 0
    by_others: int = 0
    waited_seconds: float = 0.0
    verify_seconds: float = 0.0

    @property
    def images_per_second(self) -> float:
        return self.generated / self.seconds if self.seconds > 0 else 0.0

    @property
    def cache_hit_rate(self) -> float:
        return self.cache_hits / self.total if self.total else 0.0

    def summary(self) -> str:
        """One line for logs: counts of the pass (verified / regenerated / quarantined)."""
        return (
            f"{self.total} samples: {self.cache_hits} in the cache ({self.verified} verified), "
            f"{self.generated} generated ({self.regenerated} regenerated after "
            f"{self.quarantined_shards} shard(s) failed verification and were quarantined), "
            f"{self.by_others} generated by concurrent runs; verification took "
            f"{self.verify_seconds:.2f} s"
        )


def verify_plan(cache: SampleCache, specs: Sequence[SampleSpec], report: SynthesisReport) -> None:
    """Hash the shards holding the plan's cached keys (each shard once per process);
    quarantined shards' keys become missing. Fills the report's verification fields."""
    start = time.perf_counter()
    keys = [spec.key for spec in specs]
    before = {key for key in keys if key in cache}
    report.quarantined_shards += len(cache.verify_shards(cache.shards_of(list(before))))
    after = {key for key in keys if key in cache}
    report.verified += len(after)
    report.regenerated += len(before - after)
    report.verify_seconds += time.perf_counter() - start


def claim_chunk(
    writer: CacheWriter, cache: SampleCache, chunk: Sequence[SampleSpec]
) -> tuple[list[SampleSpec], list[SampleSpec]]:
    """Claim the chunk's missing keys -> (ours to generate, claimed by other writers)."""
    todo = [spec for spec in chunk if spec.key not in cache]
    mine = [spec for spec in todo if writer.claim(spec.key)]
    cache.refresh()  # a key committed between our index refresh and our claim is done
    done = [spec.key for spec in mine if spec.key in cache]
    writer.release(done)
    mine = [spec for spec in mine if spec.key not in cache]
    taken = {spec.key for spec in mine}
    others = [spec for spec in todo if spec.key not in taken and spec.key not in cache]
    return mine, others


def generate_and_add(
    synthesizer: SampleSynthesizer, writer: CacheWriter, specs: Sequence[SampleSpec]
) -> tuple[list[SampleRecord], float]:
    """Generate the claimed `specs` and add them to `writer` (buffered until its next flush)
    -> (their records in order, seconds spent generating)."""
    start = time.perf_counter()
    with torch.inference_mode():
        records = synthesizer.generate(specs)
    seconds = time.perf_counter() - start
    for spec, record in zip(specs, records, strict=True):
        writer.add(spec.key, record)
    return records, seconds


def _generate_all(
    synthesizer: SampleSynthesizer,
    cache: SampleCache,
    writer: CacheWriter,
    specs: Sequence[SampleSpec],
    batch_size: int,
    report: SynthesisReport,
    on_batch: Callable[[Sequence[SampleSpec], list[SampleRecord]], None],
    log: Callable[[str], None] = print,
) -> None:
    """Generate `specs` until every key is in the cache, claiming each key first.

    Keys claimed by another live writer are left to it and re-checked after each pass; a
    writer found dead or stalled has its claims reaped (writer.recover) and they are taken
    over here. While waiting, `log` is told which keys, whose claims and for how long (at
    first, then every WAIT_REPORT_SECONDS).
    """
    pending, generated_before = list(specs), report.generated
    wait = ClaimWait(cache.claims_dir, cache.lock_dir, log)
    while pending:
        waiting: list[SampleSpec] = []
        progressed = False
        for chunk in batched(pending, batch_size):
            cache.refresh()
            mine, others = claim_chunk(writer, cache, chunk)
            waiting += others
            if not mine:
                continue
            records, seconds = generate_and_add(synthesizer, writer, mine)
            report.seconds += seconds
            report.generated += len(mine)
            progressed = True
            on_batch(mine, records)
        cache.refresh()
        pending = [spec for spec in waiting if spec.key not in cache]
        if pending and not progressed:
            writer.flush()  # never wait while holding claims others may wait for
            keys = [spec.key for spec in pending]
            report.waited_seconds += wait.poll(keys, writer.recover)
        elif progressed:
            wait.reset()
    report.by_others += len(specs) - (report.generated - generated_before)


def synthesize_into_cache(
    synthesizer: SampleSynthesizer,
    cache: SampleCache,
    specs: Sequence[SampleSpec],
    batch_size: int,
    writer_label: str,
    shard_size: int = 64,
    progress: bool = True,
    desc: str = "synthesize",
    on_generated: Callable[[Sequence[SampleSpec], list[SampleRecord]], None] | None = None,
    verify: bool = True,
    summary: bool = True,
) -> SynthesisReport:
    """Generate the specs missing from `cache` in batches and write them through one writer.

    Exactly once across processes sharing the cache: each key is claimed before it is
    generated (see synthmask/cache/claims.py), keys claimed by concurrent runs are waited for,
    and a killed run's claims are taken over. With `verify`, the shards holding the specs that
    count as done are hashed first, and samples of failing shards are regenerated.
    The progress bar shows images/s of generation and the number of cache hits, and with
    `summary` a last line gives the report's counts. Resumable: after a kill, rerunning skips
    every key already in a finished shard.
    """
    cache.refresh()
    report = SynthesisReport(total=len(specs))
    if verify:
        verify_plan(cache, specs, report)
    missing = [spec for spec in specs if spec.key not in cache]
    report.cache_hits = len(specs) - len(missing)
    bar = tqdm(
        total=len(specs), initial=report.cache_hits, unit="img", desc=desc, disable=not progress
    )
    bar.set_postfix(img_s="-", cache_hits=report.cache_hits)

    def on_batch(chunk: Sequence[SampleSpec], records: list[SampleRecord]) -> None:
        if on_generated is not None:
            on_generated(chunk, records)
        bar.update(len(chunk))
        bar.set_postfix(img_s=f"{report.images_per_second:.2f}", cache_hits=report.cache_hits)

    try:
        damaged = bool(cache.bad_manifest_lines or cache.wrong_records)
        if missing or (damaged and os.access(cache.manifest_dir, os.W_OK)):
            # a new writer also rewrites damaged manifests, so their warning is not repeated
            with cache.writer(writer_label, shard_size=shard_size) as writer:
                # the new writer adopted (and checked sample by sample) shards of dead writers
                adopted = [spec for spec in missing if spec.key in cache]
                report.cache_hits += len(adopted)
                report.verified += len(adopted)
                bar.update(len(adopted))
                missing = [spec for spec in missing if spec.key not in cache]
                _generate_all(
                    synthesizer, cache, writer, missing, batch_size, report, on_batch,
                    log=lambda message: tqdm.write(f"{desc}: {message}", file=sys.stderr),
                )  # fmt: skip
            bar.update(report.by_others)
    finally:
        bar.close()
    if progress and summary:
        tqdm.write(f"{desc}: {report.summary()}")
    return report
