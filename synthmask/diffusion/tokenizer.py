"""CLIP BPE tokenizer built from the vocabulary file that ships inside ``open_clip``.

The OpenAI CLIP tokenizer (the one Stable Diffusion 1.x uses) is fully determined by its BPE
merge list. ``open_clip`` ships that list as ``bpe_simple_vocab_16e6.txt.gz``; this module
rebuilds ``vocab.json`` / ``merges.txt`` from it exactly as CLIP does, so no download is needed:

- ids 0..255: the 256 byte characters of ``bytes_to_unicode`` (in its order),
- ids 256..511: the same characters with the end-of-word suffix ``</w>``,
- then one token per merge (the first 48894 merges of the file, in order),
- then ``<|startoftext|>`` (49406) and ``<|endoftext|>`` (49407): 49408 tokens in all.

The result is token-for-token identical to ``openai/clip-vit-large-patch14``'s vocabulary.
"""

from __future__ import annotations

import gzip
import json
from functools import lru_cache
from pathlib import Path

from transformers import CLIPTokenizer

BOS_TOKEN = "<|startoftext|>"
EOS_TOKEN = "<|endoftext|>"
CLIP_VOCAB_SIZE = 49408
# CLIP keeps 49152 - 256 - 2 merges: 256 byte tokens x2 (with/without </w>) + merges + 2 specials.
_NUM_MERGES = 49152 - 256 - 2


def open_clip_bpe_path() -> Path:
    """Path of the BPE merge file bundled with the installed ``open_clip`` package."""
    try:
        from open_clip.tokenizer import default_bpe
    except ImportError as err:  # pragma: no cover - open_clip is a hard dependency
        raise ImportError(
            "open_clip is not installed; it ships the CLIP BPE vocabulary. "
            "Install it with `pip install open_clip_torch`."
        ) from err
    path = Path(default_bpe())
    if not path.is_file():
        raise FileNotFoundError(
            f"open_clip's BPE vocabulary {path} is missing; reinstall open_clip_torch "
            "(`pip install --force-reinstall open_clip_torch`)."
        )
    return path


def bytes_to_unicode() -> dict[int, str]:
    """CLIP/GPT-2 map from the 256 byte values to printable unicode characters."""
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    byte_values = printable[:]
    code_points = printable[:]
    extra = 0
    for b in range(256):
        if b not in byte_values:
            byte_values.append(b)
            code_points.append(256 + extra)
            extra += 1
    return dict(zip(byte_values, [chr(c) for c in code_points], strict=True))


@lru_cache(maxsize=1)
def clip_vocab_and_merges() -> tuple[dict[str, int], tuple[tuple[str, str], ...]]:
    """CLIP's ``vocab`` (token -> id, 49408 entries) and ordered BPE ``merges``."""
    lines = gzip.open(open_clip_bpe_path()).read().decode("utf-8").split("\n")
    merges = tuple(tuple(line.split()) for line in lines[1 : _NUM_MERGES + 1])
    byte_chars = list(bytes_to_unicode().values())
    tokens = byte_chars + [c + "</w>" for c in byte_chars]
    tokens += ["".join(m) for m in merges]
    tokens += [BOS_TOKEN, EOS_TOKEN]
    vocab = {tok: i for i, tok in enumerate(tokens)}
    if len(vocab) != CLIP_VOCAB_SIZE:
        raise ValueError(
            f"rebuilt CLIP vocabulary has {len(vocab)} tokens, expected {CLIP_VOCAB_SIZE}; "
            f"the BPE file {open_clip_bpe_path()} is not CLIP's bpe_simple_vocab_16e6."
        )
    return vocab, merges  # type: ignore[return-value]


def write_vocab_files(save_dir: Path) -> None:
    """Write CLIP's classic ``vocab.json`` + ``merges.txt`` into ``save_dir``.

    Written beside ``tokenizer.json`` so that any transformers version (slow or fast
    tokenizer) loads the directory.
    """
    vocab, merges = clip_vocab_and_merges()
    save_dir.mkdir(parents=True, exist_ok=True)
    (save_dir / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    merge_lines = ["#version: 0.2"] + [" ".join(m) for m in merges]
    (save_dir / "merges.txt").write_text("\n".join(merge_lines) + "\n", encoding="utf-8")


def build_clip_tokenizer(
    save_dir: Path | str | None = None, model_max_length: int = 77
) -> CLIPTokenizer:
    """Build the OpenAI CLIP tokenizer (as used by Stable Diffusion 1.x) without a download.

    Args:
        save_dir: if given, the tokenizer is saved there with ``save_pretrained`` (plus
            ``vocab.json`` / ``merges.txt``) and can be reloaded with
            ``CLIPTokenizer.from_pretrained(save_dir)``.
        model_max_length: sequence length prompts are padded / truncated to (77 for SD).

    Returns:
        A ``CLIPTokenizer`` with 49408 tokens; BOS id 49406, EOS = pad = unk id 49407.
    """
    vocab, merges = clip_vocab_and_merges()
    tokenizer = CLIPTokenizer(
        vocab=dict(vocab),
        merges=list(merges),
        model_max_length=model_max_length,
    )
    if save_dir is not None:
        save_dir = Path(save_dir)
        tokenizer.save_pretrained(str(save_dir))
        write_vocab_files(save_dir)
    return tokenizer
