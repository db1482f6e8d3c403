"""Synthesis in several CPU processes side by side, each writing its own cache shards.

A small diffusion model on a CPU keeps one core busy better than two: intra-op threads share
little work per op at latent 16x16. Two one-thread processes drew the shapes-world main job's
images 1.3x as fast as one two-thread process on a 2-core machine (benchmarks/RESULTS.md,
"Synthesis in processes"). The batches stay those of a one-process run (process ``k`` takes
batches ``k, k + n, ...`` of the missing samples), so every sample is generated in the same
batch as it would be in one process. The cache's writers are per process, its shards atomic,
so a killed run resumes like a one-process run.

Processes are forked when each gets one thread (as DataLoader workers are; fast, nothing is
imported again) and spawned otherwise: GNU OpenMP deadlocks a forked child that uses more than
one thread after the parent has used its thread pool.
"""

from __future__ import annotations

import multiprocessing as mp
import queue as queue_module
import time
import traceback
from collections.abc import Sequence

import torch
from tqdm.auto import tqdm

from synthmask.cache import SampleCache
from synthmask.synthesis import (
    SampleSynthesizer,
    SynthesisReport,
    synthesize_into_cache,
    verify_plan,
)
from synthmask.synthesis_plan import SampleSpec, batched

_POLL_SECONDS = 0.5


def split_batches(
    specs: Sequence[SampleSpec], batch_size: int, parts: int
) -> list[list[SampleSpec]]:
    """Process ``k``'s specs: batches ``k, k + parts, ...`` of ``specs``, concatenated.

    Every batch but the last of ``specs`` is full, so each part, batched again by
    ``batch_size``, yields the very batches of a one-process run.
    """
    if batch_size < 1 or parts < 1:
        raise ValueError(f"batch_size={batch_size}, parts={parts}; both must be at least 1.")
    batches = list(batched(list(specs), batch_size))
    return [[spec for batch in batches[k::parts] for spec in batch] for k in range(parts)]


def check_processes(num_processes: int, device: str) -> None:
    """Refuse a process count below 1, and more than one process for a CUDA pipeline."""
    if num_processes < 1:
        raise ValueError(
            f"synthesis.processes={num_processes}; use 1 or more (1 = no extra process)."
        )
    if num_processes > 1 and str(device).startswith("cuda"):
        raise ValueError(
            f"synthesis.processes={num_processes} is for CPU synthesis; with CUDA give each GPU "
            "its own rank instead (torchrun --nproc_per_node=N synthmask synthesize ...)."
        )


def _run_part(
    synthesizer: SampleSynthesizer,
    cache_dir: str,
    specs: list[SampleSpec],
    batch_size: int,
    writer_label: str,
    shard_size: int,
    threads: int,
    messages: mp.Queue,
    part: int,
) -> None:
    """Body of one synthesis process: reports ("progress", part, n), then ("done", part,
    report) or ("error", part, traceback). The parent verified the cache already."""
    torch.set_num_threads(threads)
    try:
        report = synthesize_into_cache(
            synthesizer,
            SampleCache(cache_dir),
            specs,
            batch_size,
            writer_label=writer_label,
            shard_size=shard_size,
            progress=False,
            on_generated=lambda chunk, _records: messages.put(("progress", part, len(chunk))),
            verify=False,
        )
        messages.put(("done", part, report))
    except BaseException:  # noqa: BLE001 - the parent re-raises it with the traceback
        messages.put(("error", part, traceback.format_exc()))


def _copy_verification(source: SynthesisReport, target: SynthesisReport) -> None:
    for name in ("verified", "regenerated", "quarantined_shards", "verify_seconds"):
        setattr(target, name, getattr(source, name))


def synthesize_in_processes(
    synthesizer: SampleSynthesizer,
    cache: SampleCache,
    specs: Sequence[SampleSpec],
    batch_size: int,
    num_processes: int,
    writer_label: str = "w",
    shard_size: int = 64,
    threads_per_process: int | None = None,
    progress: bool = True,
    desc: str = "synthesize",
) -> SynthesisReport:
    """Generate the specs missing from ``cache`` in ``num_processes`` processes (fewer when
    there are fewer batches; 1 = in this process), each opening the cache at ``cache.root``.

    Args:
        threads_per_process: torch threads of each process; None = this process's threads
            divided among them (at least 1).

    Returns:
        The report of the whole pass: ``seconds`` is the wall time of the parallel part, so
        ``images_per_second`` is the combined rate.

    Raises:
        ValueError: a CUDA pipeline (one GPU per process is what torchrun ranks are for).
        RuntimeError: a process failed or died; what it finished is in the cache, and a rerun
            resumes from there.
    """
    check_processes(num_processes, synthesizer.pipeline.device)
    cache.refresh()
    checked = SynthesisReport(total=len(specs))
    verify_plan(cache, specs, checked)  # once here, so the processes need not hash again
    missing = [spec for spec in specs if spec.key not in cache]
    parts = [part for part in split_batches(missing, batch_size, num_processes) if part]
    if len(parts) <= 1:
        report = synthesize_into_cache(
            synthesizer, cache, specs, batch_size, writer_label, shard_size, progress, desc,
            verify=False, summary=False,
        )  # fmt: skip
        _copy_verification(checked, report)
        if progress:
            tqdm.write(f"{desc}: {report.summary()}")
        return report
    threads = threads_per_process or max(1, torch.get_num_threads() // len(parts))
    context = mp.get_context("fork" if threads == 1 and "fork" in mp.get_all_start_methods()
                             else "spawn")  # fmt: skip
    messages = context.Queue()
    synthesizer.release()  # each process loads its own pipeline
    processes = [
        context.Process(
            target=_run_part,
            args=(
                synthesizer,
                str(cache.root),
                part,
                batch_size,
                f"{writer_label}p{k}",
                shard_size,
                threads,
                messages,
                k,
            ),
            name=f"synthesis-{k}",
            daemon=True,
        )
        for k, part in enumerate(parts)
    ]
    report = SynthesisReport(total=len(specs), cache_hits=len(specs) - len(missing))
    _copy_verification(checked, report)
    bar = tqdm(
        total=len(specs), initial=report.cache_hits, unit="img", disable=not progress,
        desc=f"{desc} ({len(parts)} processes x {threads} thread{'s' * (threads > 1)})",
    )  # fmt: skip
    start = time.perf_counter()
    finished: dict[int, str | None] = {}  # part -> None (done) or the error text
    try:
        for process in processes:
            process.start()
        while len(finished) < len(parts):
            try:
                kind, part, payload = messages.get(timeout=_POLL_SECONDS)
            except queue_module.Empty:
                for k, process in enumerate(processes):
                    if k not in finished and not process.is_alive() and messages.empty():
                        finished[k] = f"exited with code {process.exitcode} before finishing"
                continue
            if kind == "progress":
                bar.update(payload)
                report.seconds = time.perf_counter() - start
                report.generated += payload
                bar.set_postfix(img_s=f"{report.images_per_second:.2f}",
                                cache_hits=report.cache_hits)  # fmt: skip
            elif kind == "done":
                finished[part] = None
                report.by_others += payload.by_others
                report.waited_seconds = max(report.waited_seconds, payload.waited_seconds)
            else:
                finished[part] = payload
    finally:
        bar.close()
        for k, process in enumerate(processes):
            if k not in finished:  # interrupted (e.g. Ctrl-C): stop it; its shards are safe
                process.terminate()
            process.join()
    report.seconds = time.perf_counter() - start
    if progress:
        tqdm.write(f"{desc}: {report.summary()}")
    errors = {k: text for k, text in finished.items() if text is not None}
    if errors:
        details = "\n".join(f"process {k}: {text}" for k, text in sorted(errors.items()))
        raise RuntimeError(
            f"{len(errors)} of {len(parts)} synthesis processes failed; the samples they "
            f"finished are in the cache {cache.root} and a rerun resumes from there.\n{details}"
        )
    return report
