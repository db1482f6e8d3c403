"""ScenePromptConfig: multi-class scene prompts as a plan's prompt recipe.

Same interface as ``synthmask.synthesis_plan.PromptConfig`` (``prompts(vocabulary,
num_prompts, seed) -> list[Prompt]``), so a synthetic data module can take either: templates
with one class per prompt, or whole scenes naming several classes (Technique 3).
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass

from synthmask.prompt_types import Prompt
from synthmask.prompts.scenes import (
    CITYSCAPES_SCENE_CLASSES,
    CITYSCAPES_SCENE_SUFFIX,
    SHAPES_SCENE_PREFIX,
    SceneClass,
    ScenePromptComposer,
)
from synthmask.prompts.vocab import Vocabulary
from synthmask.world.palette import PALETTE
from synthmask.world.shapes import get_shape

SCENE_SETS = ("cityscapes", "shapes")


@dataclass
class ScenePromptConfig:
    """How a plan's scene prompts are composed.

    Attributes:
        scenes: "cityscapes" (street scenes: subjects on a road/sidewalk with context classes)
            or "shapes" (several shape classes, optional colours, in the shapes-world grammar).
        min_subjects, max_subjects: subject (thing / shape) classes per prompt.
        min_context, max_context: context (stuff) classes per prompt (street scenes only).
        prefix: text before the scene (None = the set's default: "" for both; e.g.
            "a picture of " for a generator trained with such lead-ins).
        suffix: text after ", " (None = the set's default: the Cityscapes LoRA caption "a photo
            of a street scene, cityscapes" / none). Match it to the LoRA's training caption.
        color_prob: shapes only: chance an object's colour is named. The default 1.0 matches the
            shipped shapes LDM's training captions (colour always named): without a colour its
            generations name the shape ~0.2 less often (CHANGELOG.md, 2026-11-25).
        synonyms: shapes only: draw shape synonyms ("disk") as well as class names.
        class_colors: shapes only: one fixed colour per class (class name -> palette colour,
            e.g. {"circle": "red"}), always named: the paper's fixed-template baseline in the
            shipped LDM's caption grammar ("a red circle"). Classes left out get random
            colours as ``color_prob`` says. None (default): every colour is drawn.
    """

    scenes: str = "cityscapes"
    min_subjects: int = 1
    max_subjects: int = 2
    min_context: int = 1
    max_context: int = 2
    prefix: str | None = None
    suffix: str | None = None
    color_prob: float = 1.0
    synonyms: bool = False
    class_colors: dict[str, str] | None = None

    def __post_init__(self) -> None:
        if self.scenes not in SCENE_SETS:
            close = difflib.get_close_matches(self.scenes, SCENE_SETS, n=2)
            hint = f" (did you mean {', '.join(close)}?)" if close else ""
            raise KeyError(f"unknown scene set {self.scenes!r}{hint}; valid: {list(SCENE_SETS)}.")
        for name, color in (self.class_colors or {}).items():
            if color not in PALETTE:
                close = difflib.get_close_matches(color, PALETTE, n=2)
                hint = f" (did you mean {', '.join(close)}?)" if close else ""
                raise KeyError(
                    f"class_colors[{name!r}] = {color!r} is not a shapes-world colour{hint}; "
                    f"valid: {', '.join(PALETTE)}."
                )
        if self.class_colors and self.scenes != "shapes":
            raise ValueError("class_colors applies to scenes='shapes' only; remove it.")

    def composer(self, vocabulary: Vocabulary, seed: int) -> ScenePromptComposer:
        """The composer over ``vocabulary`` (class ids = its vocabulary ids)."""
        if self.scenes == "cityscapes":
            return ScenePromptComposer(
                vocabulary=vocabulary,
                scene_classes=CITYSCAPES_SCENE_CLASSES,
                min_subjects=self.min_subjects,
                max_subjects=self.max_subjects,
                min_context=self.min_context,
                max_context=self.max_context,
                prefix=self.prefix or "",
                suffix=CITYSCAPES_SCENE_SUFFIX if self.suffix is None else self.suffix,
                seed=seed,
            )
        return self._shapes_composer(vocabulary, seed)

    def _shapes_composer(self, vocabulary: Vocabulary, seed: int) -> ScenePromptComposer:
        scene_classes = []
        for cls in vocabulary.classes:
            try:
                spec = get_shape(cls.name)
            except KeyError as err:
                raise ValueError(
                    f"scenes='shapes' needs a shapes-world vocabulary, but {vocabulary.name!r} "
                    f"has class {cls.name!r}: {err}. Fix: use the shapes vocabulary."
                ) from err
            words = spec.synonyms if self.synonyms else (cls.word,)
            scene_classes.append(SceneClass(cls.name, tuple(words), "subject"))
        return ScenePromptComposer(
            vocabulary=vocabulary,
            scene_classes=tuple(scene_classes),
            min_subjects=self.min_subjects,
            max_subjects=self.max_subjects,
            min_context=0,
            max_context=0,
            ground_prob=0.0,
            prefix=SHAPES_SCENE_PREFIX if self.prefix is None else self.prefix,
            suffix=self.suffix or "",
            modifiers=tuple(PALETTE),
            modifier_prob=self.color_prob,
            class_modifiers=dict(self.class_colors or {}),
            seed=seed,
        )

    def prompts(self, vocabulary: Vocabulary, num_prompts: int, seed: int) -> list[Prompt]:
        """The first ``num_prompts`` scene prompts (prompt i depends only on seed and i)."""
        return self.composer(vocabulary, seed).generate(num_prompts)

    def to_json(self) -> dict:
        data = dict(self.__dict__)
        if data["class_colors"] is None:  # configs without it describe themselves as before
            del data["class_colors"]
        return data
