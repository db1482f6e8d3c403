"""Prompt data types shared by prompt generation, the shapes world's captions, token mapping,
masks and the cache.

They sit below every package (this module imports nothing from synthmask), so that
``synthmask.world`` can caption its scenes with them while ``synthmask.prompts`` builds on the
world's shapes and palette, with no cycle; ``synthmask.prompts`` re-exports them.

A `Prompt` is the text given to the diffusion model plus every class mention in it
(`ClassWord`), each with its character span so that the mention's tokens (and so its
cross-attention) can be mapped back to a class id.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ClassWord:
    """One class mention in a prompt.

    Attributes:
        word: surface word/phrase as it appears in the prompt text, e.g. "golden retriever".
        class_id: label id in the data set's class list (background = 0, foreground 1..K).
        start: character offset of the word in `Prompt.text`.
        end: end offset (exclusive): `text[start:end] == word`.
    """

    word: str
    class_id: int
    start: int
    end: int

    def __post_init__(self) -> None:
        if not self.word:
            raise ValueError(
                "ClassWord.word is empty; give the class word as it appears in the text."
            )
        if self.class_id < 0:
            raise ValueError(
                f"ClassWord {self.word!r} has negative class_id {self.class_id}; "
                "use the label id from the vocabulary (background 0, foreground 1..K)."
            )
        if not (0 <= self.start < self.end) or self.end - self.start != len(self.word):
            raise ValueError(
                f"ClassWord {self.word!r} has span [{self.start}, {self.end}) whose length does not "
                f"match the word (len {len(self.word)}); set end = start + len(word)."
            )

    def to_json(self) -> dict[str, Any]:
        return {"word": self.word, "class_id": self.class_id, "start": self.start, "end": self.end}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> ClassWord:
        return cls(
            word=str(d["word"]),
            class_id=int(d["class_id"]),
            start=int(d["start"]),
            end=int(d["end"]),
        )


@dataclass(frozen=True)
class Prompt:
    """A text prompt with every class mention it contains.

    Validation: each `ClassWord` span must satisfy `text[start:end] == word`. A prompt with
    no class word is allowed here (e.g. as an intermediate); consumers that need a class
    mention (token mapping, mask extraction) raise a ValueError naming the prompt.
    """

    text: str
    class_words: tuple[ClassWord, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.class_words, tuple):
            # Keep the dataclass hashable/frozen even when a list is passed.
            object.__setattr__(self, "class_words", tuple(self.class_words))
        for cw in self.class_words:
            if cw.end > len(self.text) or self.text[cw.start : cw.end] != cw.word:
                raise ValueError(
                    f"ClassWord {cw.word!r} span [{cw.start}, {cw.end}) does not match prompt "
                    f"{self.text!r} (found {self.text[cw.start : cw.end]!r}); "
                    "compute the span from the text, e.g. with Prompt.from_text_and_words."
                )

    @property
    def class_ids(self) -> tuple[int, ...]:
        """Distinct class ids named by the prompt, in order of first mention."""
        return tuple(dict.fromkeys(cw.class_id for cw in self.class_words))

    def to_json(self) -> dict[str, Any]:
        return {"text": self.text, "class_words": [cw.to_json() for cw in self.class_words]}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Prompt:
        return cls(
            text=str(d["text"]),
            class_words=tuple(ClassWord.from_json(c) for c in d.get("class_words", [])),
        )

    @classmethod
    def from_text_and_words(cls, text: str, words: list[tuple[str, int]]) -> Prompt:
        """Build a prompt, locating each (word, class_id) left to right in `text`.

        Repeated words are matched to successive occurrences. Raises ValueError when a
        word is not found in the text.
        """
        class_words = []
        cursor = 0
        for word, class_id in words:
            start = text.find(word, cursor)
            if start < 0:
                start = text.find(word)
            if start < 0:
                raise ValueError(
                    f"class word {word!r} not found in prompt {text!r}; "
                    "the word must appear verbatim in the text."
                )
            class_words.append(ClassWord(word, int(class_id), start, start + len(word)))
            cursor = start + len(word)
        return cls(text=text, class_words=tuple(class_words))
