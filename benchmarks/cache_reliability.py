"""Cache reliability: faults injected into synthesis passes on one cache, what verification
costs, and how batch-invariant stored samples are. Writes `benchmarks/results/
cache_reliability.csv` (one row per fault: trials, samples lost and duplicated after recovery,
samples regenerated), `cache_verify_cost.csv` and `cache_batch_invariance.csv` (one row per
run: the same keys synthesized at batch 5 and batch 8 on the tiny test pipeline; keys whose
margins are bitwise identical, pixels that differ per field, CPU model and thread count).

Usage: python benchmarks/cache_reliability.py [--trials 20] [--samples 48] [--real 1]
       [--batch-keys 48] [--threads 1]

Faults (each trial on a fresh cache, then one ordinary synthesis pass, then counted):
- concurrent: two synthesis processes on one empty cache (no fault: exactly-once claims)
- concurrent+kill: the same, one SIGKILLed at a random point and restarted
- manifest-line: a manifest line replaced by `{}`, `123`, `[]`, `null`, a string, bytes
- manifest-bitflip: one random bit flipped in a manifest
- shard-byteflip: one random byte of a shard flipped (found by the pass's verification)
- disk-full: ENOSPC on a random shard write, then a rerun
- manifest-append: ENOSPC on a random manifest append, then a rerun
- real pipeline (`--real N`): two data-module runs on the tiny test pipeline, one killed mid-way
"Lost" = plan keys missing at the end, "duplicated" = manifest entries beyond one per key.
The fake synthesizer draws 32x32 records; the real pipeline is the tests' tiny SD pipeline.
"""

from __future__ import annotations

import argparse
import csv
import errno
import json
import os
import random
import shutil
import signal
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

import synthmask.cache.writer as writer_module
from synthmask.cache import SampleCache, SampleRecord
from synthmask.synthesis import synthesize_into_cache
from synthmask.synthesis_plan import SampleSpec

RESULTS = Path(__file__).resolve().parent / "results"
BATCH, SHARD = 4, 4


def record(i: int, size: int = 32) -> SampleRecord:
    """A smooth random image with a blocky mask (compresses like real samples)."""
    rng = np.random.default_rng(i)
    low = rng.integers(0, 256, (max(size // 8, 1), max(size // 8, 1), 3), dtype=np.uint8)
    image = np.kron(low, np.ones((8, 8, 1), np.uint8))[:size, :size]
    image = image + rng.integers(0, 8, (size, size, 3), dtype=np.uint8)
    mask = (rng.random((size, size)) > 0.5).astype(np.uint8)
    margin = (np.round(rng.random((size, size)) * 256) / 256).astype(np.float16)
    return SampleRecord(image, mask, mask > 0, margin, {"i": i})


class FakeSynth:
    """Records from `record`; every generated key is logged next to the cache (all processes
    of a trial append to one log, so repeated work is counted)."""

    def __init__(self, log: Path, delay: float = 0.0) -> None:
        self.log, self.delay = log, delay

    def generate(self, specs: Sequence[SampleSpec]) -> list[SampleRecord]:
        time.sleep(self.delay)
        with open(self.log, "a") as f:
            f.write("".join(f"{spec.key}\n" for spec in specs))
        return [record(spec.index) for spec in specs]


def generated(root: Path) -> int:
    log = root.parent / "generated.log"
    return len(log.read_text().split()) if log.exists() else 0


def specs(n: int) -> list[SampleSpec]:
    return [SampleSpec(i, None, i, f"{i:064x}") for i in range(n)]


def run_pass(root: Path, n: int, delay: float = 0.0, label: str = "w") -> None:
    synth = FakeSynth(root.parent / "generated.log", delay)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        synthesize_into_cache(synth, SampleCache(root), specs(n), BATCH, label,
                              shard_size=SHARD, progress=False)  # fmt: skip


def count(root: Path, n: int, plan_keys: bool = True) -> tuple[int, int]:
    """(lost, duplicated) over the plan's n keys (`specs(n)`; else whatever keys the cache
    holds, for the real pipeline's plan), from the manifests as a reader sees them."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cache = SampleCache(root)
        keys = [spec.key for spec in specs(n)] if plan_keys else cache.keys()
        readable = sum(cache.get(key) is not None for key in keys)
    entries: list[str] = []
    shards_seen: set[str] = set()
    for path in (root / "manifest").glob("*.jsonl"):
        for line in path.read_bytes().splitlines():
            try:
                rec = json.loads(line)
                if rec["shard"] in shards_seen or not (root / "shards" / rec["shard"]).exists():
                    continue  # a record of a quarantined shard, or a re-listed one
                shards_seen.add(rec["shard"])
                entries += [s["key"] for s in rec["samples"]]
            except (ValueError, KeyError, TypeError):
                continue
    return n - readable, len(entries) - len(set(entries))


def fork_pass(root: Path, n: int, label: str, delay: float) -> int:
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            run_pass(root, n, delay, label)
            code = 0
        finally:
            os._exit(code)
    return pid


def wait(pid: int) -> None:
    _, status = os.waitpid(pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"synthesis process {pid} failed")


def trial_concurrent(root: Path, n: int, rng: random.Random, kill: bool) -> bool:
    """Two forked passes; with `kill`, one is SIGKILLed after a random delay and restarted.
    Returns whether the kill hit the pass while it was still running."""
    a, b = fork_pass(root, n, "a", 0.01), fork_pass(root, n, "b", 0.01)
    mid_way = False
    if kill:
        time.sleep(rng.uniform(0.02, 0.4))
        mid_way = os.waitpid(a, os.WNOHANG)[0] == 0  # reaps `a` when it had finished
        if mid_way:
            os.kill(a, signal.SIGKILL)
            os.waitpid(a, 0)
        a = fork_pass(root, n, "a2", 0.01)
    wait(a)
    wait(b)
    return mid_way


def damage_manifest_line(root: Path, n: int, rng: random.Random) -> None:
    run_pass(root, n)
    (path,) = (root / "manifest").glob("*.jsonl")
    lines = path.read_bytes().splitlines(keepends=True)
    bad = rng.choice([b"{}", b"123", b"[]", b"null", b'"x"', b"\xff\xfe\x00"])
    lines[rng.randrange(len(lines))] = bad + b"\n"
    path.write_bytes(b"".join(lines))
    run_pass(root, n)


def flip_manifest_bit(root: Path, n: int, rng: random.Random) -> None:
    run_pass(root, n)
    (path,) = (root / "manifest").glob("*.jsonl")
    data = bytearray(path.read_bytes())
    bit = rng.randrange(len(data) * 8)
    data[bit // 8] ^= 1 << (bit % 8)
    path.write_bytes(bytes(data))
    run_pass(root, n)


def flip_shard_byte(root: Path, n: int, rng: random.Random) -> None:
    run_pass(root, n)
    shard = rng.choice(sorted((root / "shards").glob("*.safetensors")))
    data = bytearray(shard.read_bytes())
    data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
    shard.write_bytes(bytes(data))
    run_pass(root, n)


def _fail_nth(target: str, nth: int) -> Callable[[], None]:
    """Make the nth call of writer_module.<target> raise ENOSPC; returns an undo function."""
    real, calls = getattr(writer_module, target), [0]

    def failing(*args):
        calls[0] += 1
        if calls[0] == nth:
            if target == "_write_all":
                real(args[0], args[1][: len(args[1]) // 2])  # a partial write, then full
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(*args)

    setattr(writer_module, target, failing)
    return lambda: setattr(writer_module, target, real)


def disk_full(target: str) -> Callable[[Path, int, random.Random], None]:
    def trial(root: Path, n: int, rng: random.Random) -> None:
        undo = _fail_nth(target, rng.randrange(1, n // SHARD + 1))
        try:
            run_pass(root, n)
        except OSError as err:
            assert "ENOSPC" in str(err), err
        finally:
            undo()
        if list((root / "shards").glob(".tmp-*")):
            raise AssertionError("a temp file was left behind")
        run_pass(root, n)

    return trial


def real_pipeline_trial(root: Path, n: int, rng: random.Random) -> bool:
    """Two data-module runs (tiny SD pipeline) on one cache, one killed mid-way, restarted."""
    import subprocess

    tests = Path(__file__).resolve().parents[1] / "tests"
    body = (
        f"import sys, torch\nsys.path.insert(0, {str(tests)!r})\ntorch.set_num_threads(1)\n"
        "from pathlib import Path\nfrom fixtures_synthetic import make_synthetic_dm, "
        "tiny_pipeline_dir\n"
        f"dm = make_synthetic_dm(tiny_pipeline_dir(), Path({str(root)!r}), synthesis={{"
        f"'num_images': {n}, 'batch_size': 2, 'shard_size': 2}})\n"
        "dm.synthesize(log_to_wandb=False)\n"
    )

    def start() -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-c", body], stderr=subprocess.DEVNULL)

    a, b = start(), start()
    while not any((root / "manifest").glob("*.jsonl")):
        time.sleep(0.2)
    time.sleep(rng.uniform(0.0, 1.0))
    mid_way = a.poll() is None
    a.send_signal(signal.SIGKILL)
    a.wait()
    a = start()
    if a.wait() or b.wait():
        raise RuntimeError("a data-module run failed")
    return mid_way


def verify_cost(sizes: Sequence[int], samples: int) -> list[dict]:
    """Seconds to verify a cache's shards (warm page cache) as synthesize does, per size."""
    rows = []
    for size in sizes:
        root = Path(tempfile.mkdtemp(prefix="synthmask-verify-"))
        try:
            cache = SampleCache(root)
            with cache.writer("bench", shard_size=64) as writer:
                for i in range(samples):
                    writer.add(f"{i:064x}", record(i, size))
            mb = sum(p.stat().st_size for p in (root / "shards").iterdir()) / 1e6
            times = []
            for _ in range(3):
                fresh = SampleCache(root)  # verification is remembered per process: reopen
                start = time.perf_counter()
                assert fresh.verify_shards(fresh.shard_names()) == []
                times.append(time.perf_counter() - start)
            seconds = min(times)
            rows.append({"image_px": size, "samples": samples, "shard_mb": round(mb, 2),
                         "verify_s": round(seconds, 4), "mb_per_s": round(mb / seconds, 1),
                         "ms_per_1000_samples": round(1000 * seconds / samples * 1000, 1)})  # fmt: skip
            print(rows[-1], flush=True)
        finally:
            shutil.rmtree(root, ignore_errors=True)
    return rows


def cpu_model() -> str:
    """The CPU's model name (Linux), else the platform's processor string."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine()


def batch_invariance(keys: int, threads: int, batches: tuple[int, int] = (5, 8)) -> dict:
    """Synthesize the same `keys` at two batch sizes on the tiny test pipeline and count what
    differs. The test suite asserts only the machine-independent bounds (tests/
    test_cache_same_bytes.py); how many keys come out bitwise identical is measured here."""
    import torch

    tests = Path(__file__).resolve().parents[1] / "tests"
    sys.path.insert(0, str(tests))
    from fixtures_synthetic import make_synthetic_dm, tiny_pipeline_dir

    torch.set_num_threads(threads)
    work = Path(tempfile.mkdtemp(prefix="synthmask-batch-"))
    try:
        caches = []
        for batch in batches:
            dm = make_synthetic_dm(tiny_pipeline_dir(), work / f"b{batch}", synthesis={
                "num_images": keys, "batch_size": batch, "shard_size": keys})  # fmt: skip
            dm.synthesize(log_to_wandb=False)
            caches.append(SampleCache(work / f"b{batch}"))
        row = {"cpu": cpu_model(), "threads": threads, "batches": f"{batches[0]} vs {batches[1]}",
               "keys": keys, "keys_same_margins": 0, "keys_same_images": 0, "pixels": 0,
               "margin_pixels": 0, "mask_pixels": 0, "reliability_pixels": 0,
               "image_pixels": 0, "max_margin_gap": 0.0, "max_image_gap": 0}  # fmt: skip
        for key in caches[0].keys():
            a, b = caches[0][key], caches[1][key]
            margin_a, margin_b = a.margin.astype(np.float32), b.margin.astype(np.float32)
            finite = np.isfinite(margin_a) & np.isfinite(margin_b)
            image_gap = np.abs(a.image.astype(int) - b.image.astype(int))
            row["keys_same_margins"] += int(np.array_equal(a.margin, b.margin))
            row["keys_same_images"] += int(not image_gap.any())
            row["pixels"] += a.mask.size
            row["margin_pixels"] += int((margin_a != margin_b).sum())
            row["mask_pixels"] += int((a.mask != b.mask).sum())
            row["reliability_pixels"] += int((a.reliability != b.reliability).sum())
            row["image_pixels"] += int(image_gap.any(-1).sum())
            gap = float(np.abs(margin_a - margin_b)[finite].max(initial=0.0))
            row["max_margin_gap"] = max(row["max_margin_gap"], gap)
            row["max_image_gap"] = max(row["max_image_gap"], int(image_gap.max()))
        print(row, flush=True)
        return row
    finally:
        shutil.rmtree(work, ignore_errors=True)


def append_csv(path: Path, row: dict) -> None:
    """Append one row (with a header if the file is new): runs on several CPUs accumulate."""
    new = not path.exists()
    with open(path, "a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(row))
        if new:
            writer.writeheader()
        writer.writerow(row)
    print(f"appended to {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--samples", type=int, default=48)
    parser.add_argument("--real", type=int, default=1, help="real-pipeline kill trials")
    parser.add_argument("--verify-samples", type=int, default=256)
    parser.add_argument("--batch-keys", type=int, default=48,
                        help="keys of the batch-invariance run (0: skip it)")  # fmt: skip
    parser.add_argument("--threads", type=int, default=1, help="torch threads of that run")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    faults: dict[str, Callable[[Path, int, random.Random], bool | None]] = {
        "concurrent": lambda r, n, g: trial_concurrent(r, n, g, kill=False),
        "concurrent+kill": lambda r, n, g: trial_concurrent(r, n, g, kill=True),
        "manifest-line": damage_manifest_line,
        "manifest-bitflip": flip_manifest_bit,
        "shard-byteflip": flip_shard_byte,
        "disk-full": disk_full("_write_all"),
        "manifest-append": disk_full("append_line"),
    }
    plan = [(name, fn, args.trials, args.samples) for name, fn in faults.items()]
    plan.append(("real-pipeline concurrent+kill", real_pipeline_trial, args.real, 12))
    rows = []
    rng = random.Random(0)
    for name, fn, trials, n in plan:
        lost = duplicated = regenerated = kills_mid_way = 0
        start = time.perf_counter()
        for _ in range(trials):
            root = Path(tempfile.mkdtemp(prefix="synthmask-fault-")) / "cache"
            root.parent.mkdir(parents=True, exist_ok=True)
            try:
                kills_mid_way += bool(fn(root, n, rng))
                regenerated += max(0, generated(root) - n)
                trial_lost, trial_dup = count(root, n, plan_keys=fn is not real_pipeline_trial)
                lost, duplicated = lost + trial_lost, duplicated + trial_dup
            finally:
                shutil.rmtree(root.parent, ignore_errors=True)
        rows.append({"fault": name, "trials": trials, "samples_per_trial": n, "lost": lost,
                     "duplicated": duplicated, "regenerated": regenerated,
                     "kills_mid_way": kills_mid_way,
                     "seconds": round(time.perf_counter() - start, 1)})  # fmt: skip
        print(rows[-1], flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    write_csv(args.out / "cache_reliability.csv", rows)
    write_csv(args.out / "cache_verify_cost.csv", verify_cost((32, 128, 512), args.verify_samples))
    if args.batch_keys > 0:
        row = batch_invariance(args.batch_keys, args.threads)
        append_csv(args.out / "cache_batch_invariance.csv", row)


def write_csv(path: Path, rows: list[dict]) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
