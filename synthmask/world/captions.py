"""Captions of shapes-world scenes, with the character span of every class word.

Format (optional parts in brackets, drawn per the CaptionConfig):
    [a picture of ]a [large ][red ]star[ at the top left] and a [blue ]ring[ on the right]
    [ on a striped background]
Objects are joined with ", " and a final " and ".
"""

from __future__ import annotations

import numpy as np

from synthmask.prompt_types import ClassWord, Prompt
from synthmask.world.backgrounds import get_background
from synthmask.world.config import CaptionConfig
from synthmask.world.layout import SceneObject
from synthmask.world.shapes import get_shape

PREFIXES: tuple[str, ...] = ("a picture of ", "an image of ", "a drawing of ")
SIZE_WORDS: dict[str, tuple[str, ...]] = {"small": ("small", "little"), "large": ("large", "big")}


def article(word: str) -> str:
    """Indefinite article for the following word ("an orange", "a red")."""
    return "an" if word[:1].lower() in "aeiou" else "a"


def position_phrase(position: str) -> str:
    """Caption phrase of a position name: "top left" -> "at the top left", "left" -> "on the left"."""
    if position == "center":
        return "in the center"
    if position in ("left", "right"):
        return f"on the {position}"
    return f"at the {position}"


def _pick(rng: np.random.Generator, words: tuple[str, ...], synonym_prob: float) -> str:
    if len(words) > 1 and rng.random() < synonym_prob:
        return words[int(rng.integers(1, len(words)))]
    return words[0]


def build_caption(
    objects: list[SceneObject] | tuple[SceneObject, ...],
    background: str,
    config: CaptionConfig,
    rng: np.random.Generator,
) -> Prompt:
    """Caption naming every object's class, with a ClassWord (id + span) per class mention."""
    if not objects:
        raise ValueError("build_caption needs at least one object; a scene always has one.")
    order = list(range(len(objects)))
    if config.shuffle_order:
        order = [int(i) for i in rng.permutation(len(objects))]
    text = _pick(rng, PREFIXES, 1.0) if rng.random() < config.prefix_prob else ""
    class_words: list[ClassWord] = []
    for n, idx in enumerate(order):
        obj = objects[idx]
        if n > 0:
            text += " and " if n == len(order) - 1 else ", "
        modifiers = []
        if rng.random() < config.size_prob:
            modifiers.append(_pick(rng, SIZE_WORDS[obj.size_name], config.synonym_prob))
        if rng.random() < config.color_prob:
            modifiers.append(obj.color_name)
        word = _pick(rng, get_shape(obj.shape).synonyms, config.synonym_prob)
        head = " ".join([*modifiers, word])
        text += f"{article(head)} {' '.join(modifiers) + ' ' if modifiers else ''}"
        class_words.append(ClassWord(word, obj.class_id, len(text), len(text) + len(word)))
        text += word
        if rng.random() < config.position_prob:
            text += " " + position_phrase(obj.position_name)
    if rng.random() < config.background_prob:
        text += (
            f" on a {_pick(rng, get_background(background).words, config.synonym_prob)} background"
        )
    return Prompt(text=text, class_words=tuple(class_words))
