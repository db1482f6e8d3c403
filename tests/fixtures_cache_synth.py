"""A stand-in synthesizer for cache tests: records from `fixtures_cache.make_record`, optional
delay per batch, and a log of the keys it generated (imported by tests and their subprocesses)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

from fixtures_cache import key_of, make_record

from synthmask.cache import SampleRecord
from synthmask.synthesis_plan import SampleSpec


def make_specs(n: int) -> list[SampleSpec]:
    """Specs 0..n-1 with keys `key_of(i)` (the fake synthesizer ignores prompts)."""
    return [SampleSpec(index=i, prompt=None, seed=i, key=key_of(i)) for i in range(n)]


class FakeSynthesizer:
    """`generate(specs)` -> make_record(spec.index) each, after `delay` seconds per batch; the
    generated keys are appended to `log` (a file, so other processes' work can be counted)."""

    def __init__(self, delay: float = 0.0, log: Path | None = None) -> None:
        self.delay = delay
        self.log = log
        self.generated: list[str] = []

    def generate(self, specs: Sequence[SampleSpec]) -> list[SampleRecord]:
        time.sleep(self.delay)
        self.generated += [spec.key for spec in specs]
        if self.log is not None:
            with open(self.log, "a") as f:
                f.write("".join(f"{spec.key}\n" for spec in specs))
        return [make_record(spec.index) for spec in specs]


def manifest_keys(root: Path) -> list[str]:
    """Every key of every valid manifest line under `root` (duplicates kept)."""
    import json

    keys = []
    for path in (root / "manifest").glob("*.jsonl"):
        for line in path.read_text().splitlines():
            keys += [s["key"] for s in json.loads(line)["samples"]]
    return keys
