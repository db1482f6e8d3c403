"""Prompts: class vocabularies, templates, WordNet synonym/hyponym augmentation, generation."""

from synthmask.prompt_types import ClassWord, Prompt
from synthmask.prompts.augment import WordNetAugmenter
from synthmask.prompts.generator import PromptGenerator, parse_prompt
from synthmask.prompts.templates import TEMPLATE_SETS, render_template
from synthmask.prompts.vocab import (
    VOCABULARIES,
    Vocabulary,
    VocabularyClass,
    get_vocabulary,
    imagenet_s_vocabulary,
)
from synthmask.prompts.wordnet_table import load_wordnet_table

__all__ = [
    "TEMPLATE_SETS",
    "VOCABULARIES",
    "ClassWord",
    "Prompt",
    "PromptGenerator",
    "Vocabulary",
    "VocabularyClass",
    "WordNetAugmenter",
    "get_vocabulary",
    "imagenet_s_vocabulary",
    "load_wordnet_table",
    "parse_prompt",
    "render_template",
]
