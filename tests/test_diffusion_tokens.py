"""Class words -> token positions in the 77-token CLIP sequence."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from transformers import CLIPTokenizer

from synthmask.diffusion.tokenizer import build_clip_tokenizer
from synthmask.diffusion.tokens import class_token_positions
from synthmask.prompt_types import ClassWord, Prompt


@pytest.fixture(scope="module", name="tokenizer")
def tokenizer_fixture() -> CLIPTokenizer:
    return build_clip_tokenizer()


class SlowTokenizer:
    """A tokenizer without offsets (like transformers 4.x's slow CLIPTokenizer)."""

    is_fast = False

    def __init__(self, fast: CLIPTokenizer) -> None:
        self._fast = fast
        self.model_max_length = fast.model_max_length

    def __call__(self, text: str, **kw: Any) -> dict[str, list[int]]:
        kw.pop("return_offsets_mapping", None)
        return {"input_ids": self._fast(text, **kw)["input_ids"]}


PROMPTS = [
    # text, [(word, class)], expected [(class, indices)]; BOS = 0
    ("a photo of a dog", [("dog", 12)], [(12, [5])]),
    ("a photo of a golden retriever", [("golden retriever", 12)], [(12, [5, 6])]),
    ("a pottedplant next to a tvmonitor", [("pottedplant", 16), ("tvmonitor", 20)],
     [(16, [2, 3, 4]), (20, [8, 9])]),
    ("a dog and a cat and a dog", [("dog", 12), ("cat", 8), ("dog", 12)],
     [(12, [2]), (8, [5]), (12, [8])]),
    ("A  DOG,  on the grass.", [("DOG", 12)], [(12, [2])]),
]  # fmt: skip


@pytest.mark.parametrize(("text", "words", "expected"), PROMPTS)
def test_positions(tokenizer: CLIPTokenizer, text: str, words: list, expected: list) -> None:
    prompt = Prompt.from_text_and_words(text, words)
    positions = class_token_positions(tokenizer, prompt)
    assert positions == expected
    ids = tokenizer(text).input_ids
    for (_, indices), cw in zip(positions, prompt.class_words, strict=True):
        decoded = tokenizer.decode([ids[i] for i in indices]).replace(" ", "")
        assert decoded == cw.word.lower().replace(" ", "")


@pytest.mark.parametrize(("text", "words", "expected"), PROMPTS)
def test_slow_tokenizer_fallback(
    tokenizer: CLIPTokenizer, text: str, words: list, expected: list
) -> None:
    prompt = Prompt.from_text_and_words(text, words)
    assert class_token_positions(SlowTokenizer(tokenizer), prompt) == expected


def test_word_inside_a_longer_word_maps_to_that_token(tokenizer: CLIPTokenizer) -> None:
    prompt = Prompt("two cats", (ClassWord("cat", 8, 4, 7),))
    assert class_token_positions(tokenizer, prompt) == [(8, [2])]  # the token "cats"


def test_no_class_word_raises_naming_prompt(tokenizer: CLIPTokenizer) -> None:
    with pytest.raises(ValueError, match="'a photo of nothing' has no class word"):
        class_token_positions(tokenizer, Prompt("a photo of nothing"))


def test_word_without_tokens_raises(tokenizer: CLIPTokenizer) -> None:
    prompt = Prompt("a dog  here", (ClassWord(" ", 1, 5, 6),))
    with pytest.raises(ValueError, match="maps to no token"):
        class_token_positions(tokenizer, prompt)


def test_truncation_boundary(tokenizer: CLIPTokenizer) -> None:
    # 74 filler tokens: the word at index 75 is the last kept one (76 = EOS).
    kept = Prompt.from_text_and_words("a " * 74 + "dog", [("dog", 1)])
    assert class_token_positions(tokenizer, kept) == [(1, [75])]
    cut = Prompt.from_text_and_words("a " * 75 + "dog", [("dog", 1)])
    with pytest.raises(ValueError, match="'dog' of prompt .* is cut off"):
        class_token_positions(tokenizer, cut)
    half = Prompt.from_text_and_words("a " * 74 + "pottedplant", [("pottedplant", 16)])
    with pytest.raises(ValueError, match="cut off"):
        class_token_positions(tokenizer, half)


def test_sd15_tokenizer_gives_same_positions(realdata_dir: Path, tokenizer: CLIPTokenizer) -> None:
    sd_tok = CLIPTokenizer.from_pretrained(realdata_dir / "sd15-config" / "tokenizer")
    for text, words, expected in PROMPTS:
        prompt = Prompt.from_text_and_words(text, words)
        assert class_token_positions(sd_tok, prompt) == expected
