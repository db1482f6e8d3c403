"""What to synthesize: the plan of (prompt, seed, key) specs, the prompt recipe and label space.

A *plan* is the list of `SampleSpec`s of a data set: spec `i` has its prompt, its own seed (a
pure function of the plan seed and `i`, so growing `num_images` keeps the first specs) and its
content-addressed cache key. Work is split by index (`owned_indices`), never by what is missing
from the cache, so every rank/worker agrees on who generates which sample.
"""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from synthmask.cache import canonical_json, sample_key
from synthmask.masks import IGNORE_INDEX
from synthmask.prompt_types import Prompt
from synthmask.prompts import TEMPLATE_SETS, PromptGenerator, Vocabulary, parse_prompt
from synthmask.prompts.augment import WordNetAugmenter
from synthmask.prompts.templates import CONTEXTS

PLACEHOLDER_NAME = "<unused: 255 = ignore>"
# The plan (every sample's prompt, seed and key) is built in memory before synthesis starts:
# about 1 KB and 0.1-0.3 ms per sample on one CPU core, so 10 million samples take about 10 GB
# and tens of minutes. Larger plans are refused at once instead of growing silently.
MAX_NUM_IMAGES = 10_000_000
PLAN_PROGRESS_MIN = 10_000  # plans at least this large show a progress bar while built
_PLAN_CHUNK = 2_000


def check_num_images(num_images: int, name: str = "synthesis.num_images") -> None:
    """ValueError naming `name` unless 1 <= num_images <= MAX_NUM_IMAGES."""
    if isinstance(num_images, bool) or not isinstance(num_images, (int, np.integer)):
        raise ValueError(f"{name}={num_images!r}; give a whole number of images, e.g. 2000.")
    if num_images < 1:
        raise ValueError(f"{name}={num_images}; it must be at least 1.")
    if num_images > MAX_NUM_IMAGES:
        raise ValueError(
            f"{name}={num_images:,} is more than the {MAX_NUM_IMAGES:,} samples one plan can "
            "hold: the plan (prompt, seed and cache key of every sample) is built in memory "
            "first, about 1 KB per sample. Use at most "
            f"{MAX_NUM_IMAGES:,} (run several data sets with different `seed`s for more)."
        )


def _plan_bar(total: int, desc: str) -> tqdm:
    """A progress bar for building a large plan (disabled below PLAN_PROGRESS_MIN)."""
    return tqdm(total=total, desc=desc, unit="sample", unit_scale=True, mininterval=1.0,
                disable=total < PLAN_PROGRESS_MIN, file=sys.stderr)  # fmt: skip


@dataclass
class PromptConfig:
    """How the prompts of a plan are made (see `synthmask.prompts.PromptGenerator`).

    Attributes:
        templates: a TEMPLATE_SETS name ("default", "photo", "context", "photo+context", ...)
            or a list of templates with `{class}` (and optional `{context}`) slots.
        augment: replace class words by WordNet synonyms/hyponyms (prompt augmentation).
        classes: subset of class names to synthesize (default: every class of the vocabulary).
        multi_class_prob: probability of a multi-class template.
        multi_class_templates: TEMPLATE_SETS name or list with several `{class}` slots.
        contexts: words for `{context}` (default: the bundled list).
        keep_prob: with `augment`, probability of keeping the class's default word.
        max_hyponyms: with `augment`, cap on hyponym words per class.
        texts: explicit captions instead of templates, cycled over the plan; their class words
            are found by `parse_prompt` (a caption naming no class is an error).
    """

    templates: str | list[str] = "default"
    augment: bool = False
    classes: list[str] | None = None
    multi_class_prob: float = 0.0
    multi_class_templates: str | list[str] = "multi"
    contexts: list[str] | None = None
    keep_prob: float = 0.25
    max_hyponyms: int | None = None
    texts: list[str] | None = None

    def _template_list(self, value: str | list[str], what: str) -> list[str]:
        if isinstance(value, str):
            if value not in TEMPLATE_SETS:
                raise KeyError(
                    f"unknown {what} set {value!r}; valid names: {sorted(TEMPLATE_SETS)} "
                    "(or give a list of templates with {class} slots)."
                )
            return list(TEMPLATE_SETS[value])
        return list(value)

    def prompts(self, vocabulary: Vocabulary, num_prompts: int, seed: int) -> list[Prompt]:
        """The first `num_prompts` prompts (prompt i depends only on seed and i); at most
        MAX_NUM_IMAGES, with a progress bar from PLAN_PROGRESS_MIN on."""
        if num_prompts > MAX_NUM_IMAGES:
            check_num_images(num_prompts)
        if self.texts is not None:
            if not self.texts:
                raise ValueError("prompts.texts is empty; give captions or remove `texts`.")
            augmenter = WordNetAugmenter(vocabulary) if self.augment else None
            parsed = [parse_prompt(text, vocabulary, augmenter) for text in self.texts]
            return [parsed[i % len(parsed)] for i in range(num_prompts)]
        generator = PromptGenerator(  # raises on a template without a {class} slot
            vocabulary,
            templates=self._template_list(self.templates, "template"),
            augment=self.augment,
            seed=seed,
            classes=self.classes,
            multi_class_prob=self.multi_class_prob,
            multi_class_templates=self._template_list(self.multi_class_templates, "template"),
            contexts=CONTEXTS if self.contexts is None else tuple(self.contexts),
            keep_prob=self.keep_prob,
            max_hyponyms=self.max_hyponyms,
        )
        prompts: list[Prompt] = []
        with _plan_bar(num_prompts, "plan: prompts") as bar:
            for start in range(0, num_prompts, _PLAN_CHUNK):
                count = min(_PLAN_CHUNK, num_prompts - start)
                prompts += generator.generate(count, start=start)
                bar.update(count)
        return prompts


@dataclass(frozen=True)
class SampleSpec:
    """What sample `index` of a plan is: its prompt, seed and cache key."""

    index: int
    prompt: Prompt
    seed: int
    key: str


def spec_seed(plan_seed: int, index: int) -> int:
    """The seed of sample `index`: independent streams per index, stable as the plan grows."""
    return int(np.random.SeedSequence([int(plan_seed) % 2**63, int(index)]).generate_state(1)[0])


def check_prompt_has_class_word(prompt: Prompt, index: int) -> None:
    if not prompt.class_words:
        raise ValueError(
            f"prompt {index} {prompt.text!r} names no class word, so its attention cannot give a "
            "mask. Fix: every template must contain the class placeholder '{}' (or give "
            "Prompt.class_words for hand-written prompts)."
        )


def config_digest(fingerprint: dict[str, Any]) -> str:
    """sha256 of the canonical JSON of a synthesis fingerprint (hashed once per plan)."""
    return hashlib.sha256(canonical_json(fingerprint).encode("utf-8")).hexdigest()


def build_plan(
    prompts: Sequence[Prompt], plan_seed: int, fingerprint: dict[str, Any]
) -> list[SampleSpec]:
    """Specs for `prompts` (one per sample, in order). Raises ValueError on a classless prompt.

    The key of spec i is `sample_key({"sha256": config_digest(fingerprint)}, prompt, seed)`:
    content-addressed by everything in the fingerprint, without re-serializing it per sample.
    """
    if len(prompts) > MAX_NUM_IMAGES:
        check_num_images(len(prompts))
    config = {"sha256": config_digest(fingerprint)}
    specs = []
    with _plan_bar(len(prompts), "plan: cache keys") as bar:
        for index, prompt in enumerate(prompts):
            check_prompt_has_class_word(prompt, index)
            seed = spec_seed(plan_seed, index)
            specs.append(SampleSpec(index, prompt, seed, sample_key(config, prompt, seed)))
            if (index + 1) % _PLAN_CHUNK == 0:
                bar.update(_PLAN_CHUNK)
        bar.update(len(prompts) % _PLAN_CHUNK)
    return specs


@dataclass(frozen=True)
class LabelSpace:
    """Training label ids of a vocabulary.

    Vocabulary ids are 0 = background slot, 1..K = classes; label ids are what masks store and
    the segmenter predicts: `vocab_to_label[v]` (255 = ignore, e.g. Cityscapes' background).
    Label spaces with 255 or more ids skip 255 (ids >= 255 shift up by one, as the ImageNet-S
    data module does), so 255 always means ignore.
    """

    class_names: tuple[str, ...]
    vocab_to_label: tuple[int, ...]

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def mask_dtype(self) -> type:
        return np.uint8 if self.num_classes <= IGNORE_INDEX else np.uint16

    @classmethod
    def from_vocabulary(cls, vocabulary: Vocabulary) -> LabelSpace:
        ids = [vocabulary.dataset_label(v) for v in range(vocabulary.num_classes)]
        named = [
            (i, n) for i, n in zip(ids, vocabulary.class_names, strict=True) if i != IGNORE_INDEX
        ]
        if max(i for i, _ in named) >= IGNORE_INDEX:
            ids = [i if i < IGNORE_INDEX else i + 1 for i in ids]
            named = [(i if i < IGNORE_INDEX else i + 1, n) for i, n in named]
        names = [PLACEHOLDER_NAME] * (max(i for i, _ in named) + 1)
        for i, name in named:
            names[i] = name
        return cls(tuple(names), tuple(ids))


def owned_indices(num_items: int, part: int, num_parts: int) -> range:
    """Indices `part::num_parts` of `range(num_items)` (rank- or worker-sharding)."""
    if not 0 <= part < num_parts:
        raise ValueError(f"part {part} is outside 0..{num_parts - 1}")
    return range(part, num_items, num_parts)


def batched(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
