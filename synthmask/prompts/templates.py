"""Prompt templates with named slots: `{class}` (a class word) and `{context}` (a scene).

"a photo of a {class} in the {context}" -> "a photo of a dog in the park". Rendering computes
each class word's character span, and turns "a" into "an" before a vowel ("an aeroplane").
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from synthmask.prompt_types import ClassWord, Prompt

SLOT = re.compile(r"\{([^{}]*)\}")
SLOTS = ("class", "context")

DEFAULT_TEMPLATES: tuple[str, ...] = ("a photograph of a {class}",)

PHOTO_TEMPLATES: tuple[str, ...] = (
    "a photograph of a {class}",
    "a photo of a {class}",
    "a picture of a {class}",
    "a close-up photo of a {class}",
    "a high quality photo of a {class}",
    "a realistic photo of a {class}",
    "an image of a {class}",
    "a photo of the {class}",
)

CONTEXT_TEMPLATES: tuple[str, ...] = (
    "a photo of a {class} in the {context}",
    "a photograph of a {class} in a {context}",
    "a {class} in the {context}",
    "a picture of a {class} near the {context}",
)

CONTEXTS: tuple[str, ...] = (
    "street", "park", "city", "countryside", "field", "garden", "forest", "beach", "snow",
    "kitchen", "living room", "room", "yard", "harbor", "mountains", "desert", "farm",
    "rain", "evening", "morning",
)  # fmt: skip

MULTI_CLASS_TEMPLATES: tuple[str, ...] = (
    "a photograph of a {class} and a {class}",
    "a photo of a {class} next to a {class}",
    "a {class} and a {class} in the {context}",
)

CITYSCAPES_TEMPLATES: tuple[str, ...] = (
    "a photo of a street scene with a {class} and a {class}, cityscapes",
    "a dash-cam photo of a {class} and a {class} on a city road",
    "a {class}, a {class} and a {class} in a city street, cityscapes",
)

TEMPLATE_SETS: dict[str, tuple[str, ...]] = {
    "default": DEFAULT_TEMPLATES,
    "photo": PHOTO_TEMPLATES,
    "context": CONTEXT_TEMPLATES,
    "photo+context": PHOTO_TEMPLATES + CONTEXT_TEMPLATES,
    "multi": MULTI_CLASS_TEMPLATES,
    "cityscapes": CITYSCAPES_TEMPLATES,
}


def template_slots(template: str) -> list[str]:
    """Slot names in order; raises ValueError for unknown slots or no class slot."""
    slots = SLOT.findall(template)
    unknown = [s for s in slots if s not in SLOTS]
    if unknown:
        raise ValueError(
            f"template {template!r} has unknown slots {unknown}; use {{class}} for class words "
            "and {context} for the scene."
        )
    if "class" not in slots:
        raise ValueError(
            f"template {template!r} has no {{class}} slot: a prompt without any class word gives "
            "no mask. Add {class} where the class word goes."
        )
    return slots


def render_template(
    template: str, class_words: Sequence[tuple[str, int]], context: str | None = None
) -> Prompt:
    """Fill the slots: class words in order, the context everywhere {context} appears."""
    slots = template_slots(template)
    n_class = slots.count("class")
    if n_class != len(class_words):
        raise ValueError(
            f"template {template!r} has {n_class} class slots, got {len(class_words)} class words."
        )
    if "context" in slots and not context:
        raise ValueError(f"template {template!r} needs a context (e.g. 'park').")
    text = ""
    spans: list[ClassWord] = []
    words = iter(class_words)
    cursor = 0
    for match in SLOT.finditer(template):
        text += template[cursor : match.start()]
        cursor = match.end()
        if match.group(1) == "context":
            text += context or ""
            continue
        word, class_id = next(words)
        article = re.search(r"(^|\s)([aA]) $", text)
        if article and word[:1].lower() in "aeiou":
            text = text[: article.end(2)] + "n "
        spans.append(ClassWord(word, int(class_id), len(text), len(text) + len(word)))
        text += word
    text += template[cursor:]
    return Prompt(text=text, class_words=tuple(spans))
