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
from pathlib import Path

from synthmask.cache.errors import CacheNotWritableError, CacheWriteError
from synthmask.cache.manifest import MANIFEST_SUFFIX
from synthmask.cache.recovery import TEMP_PREFIX, dead_writer_locks, writer_of
from synthmask.cache.shard import SHARD_SUFFIX
from synthmask.cache.store import SampleCache

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


def _unlisted(cache: SampleCache) -> list[str]:
    known = cache.known_shards()
    return sorted(p.name for p in cache.shard_dir.glob(f"*{SHARD_SUFFIX}") if p.name not in known)


def verify(root: Path) -> int:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the problems are listed below, once each
        cache = _open(root, repair=False)
        start = time.perf_counter()
        total = sum(p.stat().st_size for p in cache.shard_dir.glob(f"*{SHARD_SUFFIX}"))
        shards = len(cache.shard_names())
        bad = cache.verify()
        seconds = time.perf_counter() - start
    unlisted = _unlisted(cache)
    print(
        f"{root}: {len(cache)} samples in {shards} shards; hashed {total / 1e6:.1f} MB in "
        f"{seconds:.2f} s"
    )
    for problem in cache.problems:
        print(f"  problem: {problem}")
    for name in unlisted:
        print(f"  unlisted shard (adopted by `repair` after its writer ends): {name}")
    if bad or cache.problems or unlisted:
        print(f"Fix: synthmask cache repair {root}")
        return PROBLEMS
    print("OK: every shard matches its manifest.")
    return OK


def repair(root: Path) -> int:
    cache = _open(root, repair=True)
    bad = cache.verify()
    with cache.writer("repair", shard_size=1) as writer:
        done = writer.recovered  # a new writer cleans up on start
    cache.refresh()
    print(
        f"{root}: {len(cache)} samples; quarantined {len(bad) + done.shards_quarantined} "
        f"shard(s), adopted {done.shards_adopted}, removed {done.temp_files_removed} temp "
        f"file(s) and {done.claims_removed} claim(s) of {len(done.dead_writers)} dead "
        f"writer(s), rewrote {done.manifests_compacted} manifest(s) with bad lines."
    )
    return OK


def stats(root: Path) -> int:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cache = _open(root, repair=False)
    shard_files = list(cache.shard_dir.glob(f"*{SHARD_SUFFIX}"))
    temps = list(cache.shard_dir.glob(f"{TEMP_PREFIX}*"))
    live, dead = dead_writer_locks(cache.lock_dir, own_id="") if cache.lock_dir.is_dir() else (
        set(), [])  # fmt: skip
    for _, fd in dead:  # only looked: leave them to a writer or `repair`
        os.close(fd)
    claims = list(cache.claims_dir.glob("*.claim")) if cache.claims_dir.is_dir() else []
    quarantined = (
        list(cache.quarantine_dir.glob(f"*{SHARD_SUFFIX}")) if cache.quarantine_dir.is_dir() else []
    )
    lines = [
        f"cache {root}",
        f"  samples             {len(cache)}",
        f"  shards              {len(cache.shard_names())} indexed, {len(_unlisted(cache))} "
        f"unlisted, {len(quarantined)} quarantined",
        f"  bytes               {sum(p.stat().st_size for p in shard_files) / 1e6:.1f} MB",
        f"  manifests           {len(list(cache.manifest_dir.glob(f'*{MANIFEST_SUFFIX}')))} "
        f"({sum(len(v) for v in cache.bad_manifest_lines.values())} bad lines)",
        f"  writers             {len(live - {''})} live, {len(dead)} dead",
        f"  claims              {len(claims)}",
        f"  temp files          {len(temps)} (of {len({writer_of(p.name) for p in temps})} "
        "writer(s))",
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
