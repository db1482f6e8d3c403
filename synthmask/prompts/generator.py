"""Deterministic prompt generation: class word (optionally WordNet-augmented) x template.

Prompt i depends only on (seed, i): `generate(10)[:5] == generate(5)`, and a resumed run
can continue at `start=`. Classes cycle in vocabulary order (prompt i names class
i mod K first), so every class gets the same number of prompts; multi-class prompts add
other classes drawn at random.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from synthmask.prompt_types import ClassWord, Prompt
from synthmask.prompts.augment import WordNetAugmenter
from synthmask.prompts.templates import (
    CONTEXTS,
    DEFAULT_TEMPLATES,
    MULTI_CLASS_TEMPLATES,
    render_template,
    template_slots,
)
from synthmask.prompts.vocab import Vocabulary


@dataclass
class PromptGenerator:
    """N prompts for a vocabulary, deterministic for a seed.

    Args:
        vocabulary: class list (see vocab.get_vocabulary).
        templates: templates with {class} (and optionally {context}) slots.
        augment: replace class words by WordNet synonyms/hyponyms (augment.py).
        seed: integer seed.
        classes: subset of class names/words/wnids to use (default: all).
        multi_class_prob: probability of drawing from `multi_class_templates`.
        multi_class_templates: templates with several {class} slots.
        contexts: words for the {context} slot.
        keep_prob: with augment, probability of keeping the class's default word.
        max_hyponyms: with augment, cap on hyponym words per class.
    """

    vocabulary: Vocabulary
    templates: Sequence[str] = DEFAULT_TEMPLATES
    augment: bool = False
    seed: int = 0
    classes: Sequence[str] | None = None
    multi_class_prob: float = 0.0
    multi_class_templates: Sequence[str] = MULTI_CLASS_TEMPLATES
    contexts: Sequence[str] = CONTEXTS
    keep_prob: float = 0.25
    max_hyponyms: int | None = None
    class_ids: tuple[int, ...] = field(init=False)

    def __post_init__(self) -> None:
        if not self.templates:
            raise ValueError("templates is empty; give at least one template with a {class} slot.")
        if not 0.0 <= self.multi_class_prob <= 1.0:
            raise ValueError(f"multi_class_prob must be in [0, 1], got {self.multi_class_prob}.")
        if self.classes is None:
            self.class_ids = tuple(range(1, self.vocabulary.num_classes))
        else:
            self.class_ids = tuple(dict.fromkeys(self.vocabulary.class_id(c) for c in self.classes))
        if not self.class_ids:
            raise ValueError("classes is empty; name at least one class of the vocabulary.")
        used = list(self.templates) + (
            list(self.multi_class_templates) if self.multi_class_prob > 0 else []
        )
        for template in used:
            slots = template_slots(template)
            if slots.count("class") > len(self.class_ids):
                raise ValueError(
                    f"template {template!r} needs {slots.count('class')} distinct classes but only "
                    f"{len(self.class_ids)} are used."
                )
            if "context" in slots and not self.contexts:
                raise ValueError(f"template {template!r} needs contexts; contexts is empty.")
        self._augmenter = (
            WordNetAugmenter(self.vocabulary, max_hyponyms=self.max_hyponyms)
            if self.augment
            else None
        )

    def _word(self, class_id: int, rng: random.Random) -> str:
        if self._augmenter is None:
            return self.vocabulary.word(class_id)
        return self._augmenter.sample(class_id, rng, self.keep_prob)

    def prompt(self, index: int) -> Prompt:
        """The index-th prompt (depends only on seed and index)."""
        rng = random.Random(f"synthmask-prompts/{self.seed}/{index}")
        first = self.class_ids[index % len(self.class_ids)]
        multi = self.multi_class_prob > 0 and rng.random() < self.multi_class_prob
        template = rng.choice(list(self.multi_class_templates if multi else self.templates))
        slots = template_slots(template)
        others = [c for c in self.class_ids if c != first]
        chosen = [first] + rng.sample(others, slots.count("class") - 1)
        words = [(self._word(c, rng), c) for c in chosen]
        context = rng.choice(list(self.contexts)) if "context" in slots else None
        return render_template(template, words, context)

    def generate(self, n: int, start: int = 0) -> list[Prompt]:
        """Prompts start .. start + n - 1."""
        return [self.prompt(i) for i in range(start, start + n)]


def parse_prompt(
    text: str, vocabulary: Vocabulary, augmenter: WordNetAugmenter | None = None
) -> Prompt:
    """Find the class words in a free caption (whole words, case-insensitive, longest first).

    Words are the vocabulary's default words, plus the augmenter's synonyms/hyponyms if given.
    Raises ValueError when the text names no class.
    """
    if augmenter is not None:
        lookup = augmenter.word_to_class()
    else:
        lookup = {c.word.lower(): i for i, c in enumerate(vocabulary.classes, start=1)}
    alternatives = sorted(lookup, key=len, reverse=True)
    pattern = re.compile(
        r"(?<![\w-])(" + "|".join(re.escape(w) for w in alternatives) + r")(?![\w-])",
        re.IGNORECASE,
    )
    words = [
        ClassWord(m.group(0), lookup[m.group(0).lower()], m.start(), m.end())
        for m in pattern.finditer(text)
    ]
    if not words:
        examples = [c.word for c in vocabulary.classes[:5]]
        raise ValueError(
            f"prompt {text!r} names no class of vocabulary {vocabulary.name!r}; include a class "
            f"word (e.g. {examples}) so its attention can become a mask."
        )
    return Prompt(text=text, class_words=tuple(words))
