"""Map a prompt's class words to their token positions in the text encoder's sequence."""

from __future__ import annotations

from typing import Any

from synthmask.prompt_types import Prompt


def _word_token_indices(tokenizer: Any, text: str, start: int, end: int) -> list[int]:
    """Sequence indices (BOS = 0) of the tokens of ``text[start:end]`` (untruncated)."""
    if getattr(tokenizer, "is_fast", False):
        enc = tokenizer(
            text,
            return_offsets_mapping=True,
            truncation=False,
            add_special_tokens=True,
            verbose=False,
        )
        special = set(tokenizer.all_special_ids)
        return [
            i
            for i, (tid, (s, e)) in enumerate(
                zip(enc["input_ids"], enc["offset_mapping"], strict=True)
            )
            if not (tid in special and s == e) and s < end and e > start
        ]

    # Slow tokenizers (transformers 4.x CLIPTokenizer) have no offsets; CLIP's BPE works per
    # pre-token, so counting the tokens of the prefixes before and through the word finds it.
    def count(prefix: str) -> int:
        return len(tokenizer(prefix, add_special_tokens=False, verbose=False)["input_ids"])

    before = count(text[:start])
    return list(range(1 + before, 1 + count(text[:end])))


def class_token_positions(tokenizer: Any, prompt: Prompt) -> list[tuple[int, list[int]]]:
    """Token indices of every class word of ``prompt`` in the padded text-encoder sequence.

    Index 0 is BOS, so the first word token has index 1; a word split into several BPE tokens
    ("pottedplant" -> pot, ted, plant) gets all of them; each ``ClassWord`` (repeated words and
    several classes included) gets its own entry, in the prompt's order. A token overlapping a
    word's character span belongs to it (so "cat" inside "cats" maps to the token "cats").

    Returns:
        ``[(class_id, [token indices]), ...]`` with indices in ``[1, model_max_length - 2]``.

    Raises:
        ValueError (naming the prompt): no class word, a word that maps to no token, or a word
        cut off by truncation to ``tokenizer.model_max_length``.
    """
    if not prompt.class_words:
        raise ValueError(
            f"prompt {prompt.text!r} has no class word, so no attention can be mapped to a class; "
            "build it with Prompt.from_text_and_words(text, [(word, class_id), ...])."
        )
    max_len = int(getattr(tokenizer, "model_max_length", 77))
    last_kept = max_len - 2  # index max_len - 1 holds EOS after truncation
    positions: list[tuple[int, list[int]]] = []
    for cw in prompt.class_words:
        indices = _word_token_indices(tokenizer, prompt.text, cw.start, cw.end)
        if not indices:
            raise ValueError(
                f"class word {cw.word!r} of prompt {prompt.text!r} maps to no token; "
                "use a word made of letters or digits."
            )
        if indices[-1] > last_kept:
            raise ValueError(
                f"class word {cw.word!r} of prompt {prompt.text!r} is cut off: the text encoder "
                f"keeps {max_len} tokens and the word ends at token {indices[-1]}; shorten the "
                "prompt or move the class word forward."
            )
        positions.append((cw.class_id, indices))
    return positions
