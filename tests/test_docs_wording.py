"""Docs, configs, code and results speak of the product: no work-log words (working sessions,
who did what, ticket numbers) and no paths of one machine in any tracked text file."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TEXT_SUFFIXES = {".md", ".py", ".yaml", ".yml", ".toml", ".txt", ".csv", ".jsonl", ".json", ".cfg"}
# Vendored vocabularies (tokenizer, WordNet nouns): third-party data, not prose.
ALLOWED = ("synthmask/assets/shapes_ldm/tokenizer/", "synthmask/assets/wordnet_nouns.json")
PATTERNS = {
    "working session": re.compile(
        r"\bsessions?[ -]\d|\b(this|next|a later|later|previous|earlier|new) session\b", re.I
    ),
    "who did it": re.compile(
        r"\b(other|another|each|every|world|owned by the) helpers?\b|\bhelpers?'s?(?=\s)|"
        r"\bhelpers? (that|who)\b",
        re.I,
    ),
    "ticket number": re.compile(r"\bissues? ?#?\d+|(?<![\w&#/])#\d{1,3}\b", re.I),
    "machine path": re.compile(r"(?<![\w.])/(work|root|tmp|home)/"),
}


def worklog_hits(text: str) -> list[str]:
    """``"kind: line"`` for every line of ``text`` with a work-log word or a machine path."""
    return [
        f"{kind}: {line.strip()[:120]}"
        for line in text.splitlines()
        for kind, pattern in PATTERNS.items()
        if pattern.search(line)
    ]


def tracked_text_files() -> list[Path]:
    out = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True)
    names = [n for n in out.stdout.splitlines() if Path(n).suffix in TEXT_SUFFIXES]
    names = [n for n in names if not n.startswith(ALLOWED) and n != "tests/test_docs_wording.py"]
    return [REPO / n for n in names if (REPO / n).is_file()]


@pytest.mark.parametrize(
    ("line", "kind"),
    [
        ("Measured in session 5 on this machine", "working session"),
        ("the session-3 classifier", "working session"),
        ("Each section is owned by the helper that measured it", "who did it"),
        ("two other helpers' experiments", "who did it"),
        ("see issue #5's probes", "ticket number"),
        ("the wording of the recorded #7 runs", "ticket number"),
        ("cache `/work/ldm_runs/ablation_cache`", "machine path"),
    ],
)
def test_patterns_catch_work_log_lines(line: str, kind: str) -> None:
    assert [h.split(":")[0] for h in worklog_hits(line)] == [kind]


@pytest.mark.parametrize(
    "line",
    [
        "Pure helpers of the benchmark (a helper function is a programming word)",
        "colour #ff0000, heading ## Results, step 46441",
        "outputs go to runs/ below the work directory; tmp_path / 'cache'",
    ],
)
def test_patterns_leave_plain_words_alone(line: str) -> None:
    assert worklog_hits(line) == []


def test_tracked_text_files_have_no_work_log_words() -> None:
    files = tracked_text_files()
    assert len(files) > 100  # the walk found the repository's files
    hits = [
        f"{path.relative_to(REPO)}: {hit}"
        for path in files
        for hit in worklog_hits(path.read_text(errors="replace"))
    ]
    assert hits == [], "work-log words or machine paths:\n" + "\n".join(hits)
