"""Multi-class scene prompts: several classes per prompt, with plausible co-occurrence.

Technique 3 of METHOD.md synthesizes whole scenes after adapting the generator to the target
domain ("a car and a person on the road next to a building, a photo of a street scene,
cityscapes"), so one image yields a multi-class pseudo-mask. A scene is composed from:

- subjects ("thing" classes: car, person, rider, ...), 1..max_subjects of them;
- a ground (road / sidewalk), chosen among the grounds its first subject stands on;
- context classes ("stuff" and street furniture: building, vegetation, sky, pole, ...), each
  with its own phrase ("under the {sky}", "next to a {building}").

Every class mention becomes a ``ClassWord`` whose span indexes the final text, and whose id is
the class's vocabulary id (``synthmask.prompts.vocab``: 0 = background slot, classes 1..K).
Prompts are a pure function of (seed, index), so any worker/rank can build prompt i on its own.
The composer has ``PromptGenerator``'s interface (``vocabulary``, ``prompt(i)``,
``generate(n, start)``); ``synthmask.prompts.scene_config.ScenePromptConfig`` builds one for
Cityscapes street scenes or the shapes world and serves as a synthesis plan's prompt recipe.
"""

from __future__ import annotations

import difflib
import hashlib
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from synthmask.prompt_types import ClassWord, Prompt
from synthmask.prompts.vocab import Vocabulary, VocabularyClass, shapes_vocabulary  # noqa: F401 (re-export)

ROLES = ("subject", "ground", "context")


@dataclass(frozen=True)
class SceneClass:
    """How one class takes part in a scene.

    Attributes:
        name: the class name in the vocabulary (its vocabulary id is the class id).
        words: surface words for it (the first is canonical); one is drawn per mention.
        role: "subject" (a thing in front), "ground" (what subjects stand on) or "context".
        weight: relative chance of being drawn within its role.
        phrase: for context classes, the phrase around the word, e.g. "under the {}".
        article: article before a subject/ground word ("a", "the", "" for mass nouns).
        grounds: for subjects, the ground class names it stands on (empty = any ground).
        carries: for subjects, subject names it must be paired with ("rider" rides a
            "bicycle" or "motorcycle": one of them is added as "a rider on a bicycle").
    """

    name: str
    words: tuple[str, ...]
    role: str
    weight: float = 1.0
    phrase: str = "next to {}"
    article: str = "a"
    grounds: tuple[str, ...] = ()
    carries: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.role not in ROLES:
            raise ValueError(f"SceneClass {self.name!r}: role {self.role!r} unknown; use {ROLES}.")
        if not self.words:
            raise ValueError(f"SceneClass {self.name!r} has no words; give at least its name.")
        if self.weight <= 0:
            raise ValueError(f"SceneClass {self.name!r}: weight must be > 0, got {self.weight}.")
        if self.role == "context" and self.phrase.count("{}") != 1:
            raise ValueError(
                f"SceneClass {self.name!r}: phrase {self.phrase!r} needs exactly one '{{}}' "
                "where the class word goes."
            )


def _c(name, words, role, weight=1.0, phrase="next to {}", article="a", grounds=(), carries=()):
    return SceneClass(
        name, tuple(words), role, weight, phrase, article, tuple(grounds), tuple(carries)
    )


# Cityscapes' 19 evaluated classes (names as in synthmask.prompts.vocab.CITYSCAPES_CLASSES).
CITYSCAPES_SCENE_CLASSES: tuple[SceneClass, ...] = (
    _c("road", ["road", "street"], "ground", 4.0, article="the"),
    _c("sidewalk", ["sidewalk", "pavement"], "ground", 2.0, article="the"),

    _c("building", ["building", "house"], "context", 3.0, "next to a {}"),
    _c("wall", ["wall"], "context", 0.7, "beside a {}"),
    _c("fence", ["fence"], "context", 0.7, "along a {}"),
    _c("pole", ["pole", "lamp post"], "context", 0.8, "near a {}"),
    _c("traffic light", ["traffic light"], "context", 1.0, "near a {}"),
    _c("traffic sign", ["traffic sign", "road sign"], "context", 1.0, "near a {}"),
    _c("vegetation", ["trees", "vegetation"], "context", 2.5, "in front of {}"),
    _c("terrain", ["grass", "terrain"], "context", 0.7, "next to {}"),
    _c("sky", ["sky"], "context", 2.0, "under the {}"),
    _c("car", ["car"], "subject", 4.0, grounds=["road"]),
    _c("person", ["person", "pedestrian"], "subject", 3.0, grounds=["sidewalk", "road"]),
    _c("rider", ["rider", "cyclist"], "subject", 1.0, grounds=["road"], carries=["bicycle", "motorcycle"]),
    _c("truck", ["truck"], "subject", 1.0, grounds=["road"]),
    _c("bus", ["bus"], "subject", 1.0, grounds=["road"]),
    _c("train", ["tram", "train"], "subject", 0.5, grounds=["road"]),
    _c("motorcycle", ["motorcycle"], "subject", 1.0, grounds=["road"]),
    _c("bicycle", ["bicycle", "bike"], "subject", 1.0, grounds=["road", "sidewalk"]),
)  # fmt: skip
CITYSCAPES_SCENE_SUFFIX = "a photo of a street scene, cityscapes"


@dataclass
class ScenePromptComposer:
    """Deterministic multi-class scene prompts over a vocabulary.

    Args:
        vocabulary: the classes (a class word's id is its vocabulary id; 0 = background).
        scene_classes: role/words/phrases per class (names must be in the vocabulary).
        min_subjects, max_subjects: subject classes per prompt (distinct classes).
        min_context, max_context: context phrases per prompt.
        ground_prob: chance the ground is named (needs a ground class).
        suffix: appended after ", " (e.g. the LoRA's training caption), "" for none.
        prefix: text before the first subject (e.g. "a picture of "), "" for none.
        modifiers: words that may precede a subject word (e.g. colours: "a red star").
        modifier_prob: chance each subject gets a modifier.
        class_modifiers: class name -> the one modifier always used for it (overrides
            ``modifiers`` / ``modifier_prob`` for that class).
        seed: prompts are a pure function of (seed, index).

    Example: "a car and a pedestrian on the road next to a building under the sky,
    a photo of a street scene, cityscapes".
    """

    vocabulary: Vocabulary
    scene_classes: Sequence[SceneClass] = CITYSCAPES_SCENE_CLASSES
    min_subjects: int = 1
    max_subjects: int = 2
    min_context: int = 1
    max_context: int = 2
    ground_prob: float = 0.9
    suffix: str = CITYSCAPES_SCENE_SUFFIX
    prefix: str = ""
    modifiers: Sequence[str] = ()
    modifier_prob: float = 0.0
    class_modifiers: Mapping[str, str] = field(default_factory=dict)
    seed: int = 0
    _by_name: dict[str, SceneClass] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._by_name = {sc.name: sc for sc in self.scene_classes}
        for sc in self.scene_classes:
            self.class_id(sc.name)
            for other in (*sc.grounds, *sc.carries):
                if other not in self._by_name:
                    raise ValueError(
                        f"SceneClass {sc.name!r} refers to {other!r}, which has no SceneClass; "
                        "add it or remove the reference."
                    )
        for name in self.class_modifiers:
            if name not in self._by_name:
                raise KeyError(
                    f"class_modifiers names {name!r}, which is not a scene class; valid: "
                    f"{', '.join(self._by_name)}."
                )
        if not self._role("subject"):
            raise ValueError("scene_classes has no 'subject' class; a scene needs at least one.")
        if not 1 <= self.min_subjects <= self.max_subjects:
            raise ValueError(
                f"need 1 <= min_subjects <= max_subjects, got {self.min_subjects}, "
                f"{self.max_subjects}."
            )
        if not 0 <= self.min_context <= self.max_context:
            raise ValueError(
                f"need 0 <= min_context <= max_context, got {self.min_context}, {self.max_context}."
            )
        for name in ("ground_prob", "modifier_prob"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name}={getattr(self, name)} is not a probability; use 0..1.")
        self.modifiers = tuple(self.modifiers)
        if self.modifier_prob > 0 and not self.modifiers:
            raise ValueError("modifier_prob > 0 but modifiers is empty; give e.g. colour words.")

    @property
    def class_names(self) -> list[str]:
        return self.vocabulary.class_names

    def class_id(self, name: str) -> int:
        """Vocabulary id of class ``name``; KeyError with close matches."""
        names = self.vocabulary.class_names[1:]
        if name in names:
            return names.index(name) + 1
        close = difflib.get_close_matches(name, names, n=3)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise KeyError(
            f"scene class {name!r} is not in vocabulary {self.vocabulary.name!r}{hint}; valid "
            f"names: {', '.join(names)}."
        )

    def _role(self, role: str) -> list[SceneClass]:
        return [sc for sc in self.scene_classes if sc.role == role]

    def _rng(self, index: int) -> random.Random:
        digest = hashlib.sha256(f"scene:{self.seed}:{index}".encode()).digest()
        return random.Random(int.from_bytes(digest[:8], "little"))

    def generate(self, n: int, start: int = 0) -> list[Prompt]:
        """Prompts ``start .. start + n - 1`` (``PromptGenerator.generate``'s interface)."""
        return [self.prompt(i) for i in range(start, start + n)]

    prompts = generate

    def prompt(self, index: int) -> Prompt:
        """Prompt number ``index`` (same seed and index -> same prompt)."""
        rng = self._rng(index)
        builder = _TextBuilder()
        builder.add(self.prefix)
        subjects = self._draw_subjects(rng)
        for n, (subject, vehicle) in enumerate(subjects):
            if n > 0:
                builder.add(" and " if n == len(subjects) - 1 else ", ")
            self._add_subject(builder, rng, subject, vehicle)
        ground = self._draw_ground(rng, subjects[0][0])
        if ground is not None:
            builder.add(" on ")
            self._add_with_article(builder, rng, ground)
        for context in self._draw_context(rng):
            before, after = context.phrase.split("{}")
            builder.add(" " + before)
            builder.add_word(rng.choice(context.words), self.class_id(context.name))
            builder.add(after)
        if self.suffix:
            builder.add(", " + self.suffix)
        return builder.build()

    def _draw_subjects(self, rng: random.Random) -> list[tuple[SceneClass, SceneClass | None]]:
        pool = self._role("subject")
        count = rng.randint(self.min_subjects, min(self.max_subjects, len(pool)))
        chosen: list[tuple[SceneClass, SceneClass | None]] = []
        used: set[str] = set()
        while len(chosen) < count:
            options = [sc for sc in pool if sc.name not in used]
            if not options:
                break
            subject = _weighted_choice(rng, options)
            used.add(subject.name)
            vehicle = None
            if subject.carries:
                carried = [self._by_name[n] for n in subject.carries if n not in used]
                if carried:
                    vehicle = _weighted_choice(rng, carried)
                    used.add(vehicle.name)
            chosen.append((subject, vehicle))
        return chosen

    def _draw_ground(self, rng: random.Random, first: SceneClass) -> SceneClass | None:
        grounds = self._role("ground")
        if first.grounds:
            grounds = [g for g in grounds if g.name in first.grounds]
        if not grounds or rng.random() >= self.ground_prob:
            return None
        return _weighted_choice(rng, grounds)

    def _draw_context(self, rng: random.Random) -> list[SceneClass]:
        pool = self._role("context")
        count = min(rng.randint(self.min_context, self.max_context), len(pool))
        chosen: list[SceneClass] = []
        while len(chosen) < count:
            pick = _weighted_choice(rng, [sc for sc in pool if sc not in chosen])
            chosen.append(pick)
        return chosen

    def _add_subject(self, builder, rng, subject: SceneClass, vehicle: SceneClass | None) -> None:
        modifier = ""
        if subject.name in self.class_modifiers:
            modifier = self.class_modifiers[subject.name]
        elif self.modifiers and rng.random() < self.modifier_prob:
            modifier = rng.choice(self.modifiers)
        self._add_with_article(builder, rng, subject, modifier)
        if vehicle is not None:
            builder.add(" on ")
            self._add_with_article(builder, rng, vehicle)

    def _add_with_article(
        self, builder, rng: random.Random, sc: SceneClass, modifier: str = ""
    ) -> None:
        word = rng.choice(sc.words)
        head = f"{modifier} " if modifier else ""
        article = sc.article
        if article == "a" and (head or word)[:1].lower() in "aeiou":
            article = "an"
        if article:
            builder.add(article + " ")
        builder.add(head)
        builder.add_word(word, self.class_id(sc.name))


def _weighted_choice(rng: random.Random, options: list[SceneClass]) -> SceneClass:
    return rng.choices(options, weights=[o.weight for o in options], k=1)[0]


class _TextBuilder:
    """Appends text and records the span of every class word as it is written."""

    def __init__(self) -> None:
        self.text = ""
        self.class_words: list[ClassWord] = []

    def add(self, text: str) -> None:
        self.text += text

    def add_word(self, word: str, class_id: int) -> None:
        start = len(self.text)
        self.text += word
        self.class_words.append(ClassWord(word, class_id, start, start + len(word)))

    def build(self) -> Prompt:
        return Prompt(text=self.text, class_words=tuple(self.class_words))


# The shipped shapes-world LDM was trained on the world's captions without a lead-in and with every
# object's colour named; prompts in that grammar are drawn faithfully (benchmarks/RESULTS.md).
SHAPES_SCENE_PREFIX = ""
