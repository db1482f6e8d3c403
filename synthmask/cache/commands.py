"""`synthmask cache verify|repair|stats DIR`: check, fix or describe a cache without synthesizing.

Exit codes: 0 = fine (verify: every shard and manifest line checked out; repair: done),
1 = verify found problems (run `repair`), 2 = bad usage or DIR is not a cache.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from synthmask.cache.claim_owners import claim_owners
from synthmask.cache.errors import CacheNotWritableError, CacheWriteError
from synthmask.cache.manifest import MANIFEST_SUFFIX
from synthmask.cache.recovery import (
    CACHE_FOLDERS,
    shard_files,
    temp_files,
    writer_of,
    writer_states,
)
from synthmask.cache.shard import SHARD_SUFFIX
from synthmask.cache.store import SampleCache
from synthmask.cache.strays import Stray, find_strays

OK, PROBLEMS, USAGE = 0, 1, 2


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse exits 2 on usage errors: keep that
        self.print_usage(sys.stderr)
        self.exit(USAGE, f"synthmask cache: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="synthmask cache",
        description="Check, repair or describe a synthmask sample cache.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="{verify,repair,stats}")
    for name, text in (
        ("verify", "hash every shard against its manifest; change nothing (exit 1 on problems)"),
        ("repair", "quarantine bad shards, adopt unlisted ones, clean after dead writers, "
                   "rewrite manifests without bad lines"),
        ("stats", "samples, shards, bytes, writers and claims of the cache"),
    ):  # fmt: skip
        command = sub.add_parser(name, help=text, description=text)
        command.add_argument("dir", type=Path, help="the cache directory (cache_dir)")
    return parser


def _open(root: Path, repair: bool) -> SampleCache:
    if not (root / "manifest").is_dir() and not (root / "shards").is_dir():
        raise FileNotFoundError(
            f"{root} is not a synthmask cache (no manifest/ or shards/ folder); pass the "
            "cache_dir of a synthesis run."
        )
    return SampleCache(root, create=False, repair=repair)


def _strays(cache: SampleCache) -> list[Stray]:
    return [stray for folder in CACHE_FOLDERS for stray in find_strays(cache.root / folder)]


@dataclass
class _Leftovers:
    """What writers left or are writing, as verify and stats see it (nothing is changed)."""

    unlisted: list[str]  # finished shards without a manifest line, writer not running
    finishing: list[str]  # the same, of a running writer (it lists them itself)
    dead_temps: list[str]  # temp files of writers that are gone
    live_temps: list[str]  # temp files being written now
    quarantined_listed: list[str]  # listed shards that sit in quarantine/
    running: set[str]


def _leftovers(cache: SampleCache) -> _Leftovers:
    states = writer_states(cache.lock_dir, own_id="")
    states.close()  # only looked: leave dead writers to a writer or `repair`
    running = states.running - {""}
    known = cache.known_shards()
    unlisted = [p.name for p in shard_files(cache.shard_dir) if p.name not in known]
    temps = [p.name for p in temp_files(cache.shard_dir)]
    listed_missing = {n for names in cache.missing_shards.values() for n in names}
    return _Leftovers(
        unlisted=[n for n in unlisted if writer_of(n) not in running],
        finishing=[n for n in unlisted if writer_of(n) in running],
        dead_temps=[n for n in temps if writer_of(n) not in running],
        live_temps=[n for n in temps if writer_of(n) in running],
        quarantined_listed=sorted(
            n for n in listed_missing if os.path.lexists(cache.quarantine_dir / n)
        ),
        running=running,
    )


def verify(root: Path) -> int:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the problems are listed below, once each
        cache = _open(root, repair=False)
        start = time.perf_counter()
        total = sum(p.stat().st_size for p in shard_files(cache.shard_dir))
        shards = len(cache.shard_names())
        bad = cache.verify()
        seconds = time.perf_counter() - start
    left = _leftovers(cache)
    strays = _strays(cache)
    stale = [o for o in claim_owners(cache.claims_dir, cache.lock_dir) if o.stale]
    print(
        f"{root}: {len(cache)} samples in {shards} shards; hashed {total / 1e6:.1f} MB in "
        f"{seconds:.2f} s"
    )
    problems = [*cache.problems]
    problems += [
        f"{stray.describe()} (`repair` moves it to quarantine/)"
        for stray in strays
        if not any(problem.startswith(f"{stray.path}:") for problem in cache.problems)
    ]
    problems += [f"unlisted shard of a writer that is gone (`repair` verifies and adopts it): "
                 f"{name}" for name in left.unlisted]  # fmt: skip
    problems += [f"temp file of a writer that is gone (`repair` removes it): {name}"
                 for name in left.dead_temps]  # fmt: skip
    for problem in problems:
        print(f"  problem: {problem}")
    notes = [f"shard being listed by its running writer: {name}" for name in left.finishing]
    notes += [f"shard being written by a running writer: {name}" for name in left.live_temps]
    if left.quarantined_listed:
        notes.append(
            f"{len(left.quarantined_listed)} listed shard(s) sit in quarantine/ (their samples "
            "are generated again; `repair` drops their records)"
        )
    notes += [f"stale claims of {owner.describe()} (the next writer or `repair` removes "
              "them)" for owner in stale]  # fmt: skip
    for note in notes:
        print(f"  note: {note}")
    if bad or problems:
        print(f"Fix: synthmask cache repair {root}")
        return PROBLEMS
    print("OK: every listed shard is present and matches its manifest.")
    return OK


def repair(root: Path) -> int:
    cache = _open(root, repair=True)
    cache.verify()
    with cache.writer("repair", shard_size=1) as writer:
        done = writer.recovered  # a new writer cleans up on start
    cache.refresh()
    print(
        f"{root}: {len(cache)} samples; quarantined {cache.stats.quarantined_shards} "
        f"shard(s) and {done.strays_quarantined} stray(s), adopted "
        f"{done.shards_adopted}, removed {done.temp_files_removed} temp file(s) and "
        f"{done.claims_removed} claim(s) of {len(done.dead_writers)} dead and "
        f"{len(done.stalled_writers)} stalled writer(s), rewrote {done.manifests_compacted} "
        "manifest(s) with bad lines or records of missing shards."
    )
    return OK


def stats(root: Path) -> int:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cache = _open(root, repair=False)
    shard_paths = shard_files(cache.shard_dir)
    left = _leftovers(cache)
    owners = claim_owners(cache.claims_dir, cache.lock_dir)
    quarantined = (
        list(cache.quarantine_dir.glob(f"*{SHARD_SUFFIX}")) if cache.quarantine_dir.is_dir() else []
    )
    states = writer_states(cache.lock_dir, own_id="")
    dead = len(states.dead)
    states.close()
    live_claims = sum(len(o.claims) for o in owners if not o.stale)
    stale_claims = sum(len(o.claims) for o in owners if o.stale)
    manifests = [p for p in cache.manifest_dir.glob(f"*{MANIFEST_SUFFIX}") if p.is_file()]
    lines = [
        f"cache {root}",
        f"  samples             {len(cache)}",
        f"  shards              {len(cache.shard_names())} indexed, "
        f"{len(left.unlisted) + len(left.finishing)} unlisted, {len(quarantined)} quarantined",
        f"  bytes               {sum(p.stat().st_size for p in shard_paths) / 1e6:.1f} MB",
        f"  manifests           {len(manifests)} "
        f"({sum(len(v) for v in cache.bad_manifest_lines.values())} bad lines)",
        f"  writers             {len(states.live - {''})} live, {len(states.stalled)} "
        f"stalled, {dead} dead",
        f"  claims              {live_claims} live, {stale_claims} stale",
        *[f"    {owner.describe()}" for owner in owners],
        f"  temp files          {len(left.live_temps)} being written, "
        f"{len(left.dead_temps)} left by writers that are gone",
        f"  strays              {len(_strays(cache))} (`synthmask cache verify` lists them)",
    ]
    print("\n".join(lines))
    return OK


def main(argv: Sequence[str]) -> int:
    """Run `synthmask cache ...` with `argv` (the words after `cache`); returns the exit code."""
    args = build_parser().parse_args(list(argv))
    command = {"verify": verify, "repair": repair, "stats": stats}[args.command]
    try:
        return command(args.dir.expanduser())
    except (FileNotFoundError, NotADirectoryError, CacheNotWritableError, CacheWriteError) as err:
        print(f"synthmask cache {args.command}: {err}", file=sys.stderr)
        return USAGE
