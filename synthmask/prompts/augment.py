"""Synonym + hyponym augmentation of class words from the bundled WordNet table.

Every word keeps its class id, so the attention of a substituted word ("beagle") becomes the
mask of its class ("dog"). Word lists are deterministic: the class's default word first, then
WordNet synonyms (most frequent sense first), then hyponyms (most frequent first). Words in
a class's `exclude` list are dropped, and a word that two classes would share ("bike":
bicycle and motorbike) is dropped from both unless it is one class's default word.
"""

from __future__ import annotations

import random
from collections import defaultdict

from synthmask.prompts.vocab import Vocabulary
from synthmask.prompts.wordnet_table import WordNetTable, load_wordnet_table


class WordNetAugmenter:
    """Class id -> candidate words (default word, synonyms, hyponyms).

    Args:
        vocabulary: the class list.
        synonyms / hyponyms: which WordNet relations to use.
        max_hyponyms: keep at most this many hyponym words per class (None = table's cap).
        table: a WordNetTable (default: the bundled one).
    """

    def __init__(
        self,
        vocabulary: Vocabulary,
        synonyms: bool = True,
        hyponyms: bool = True,
        max_hyponyms: int | None = None,
        table: WordNetTable | None = None,
    ) -> None:
        self.vocabulary = vocabulary
        table = table or load_wordnet_table()
        candidates: dict[int, list[str]] = {}
        for class_id, cls in enumerate(vocabulary.classes, start=1):
            words = [cls.word]
            if synonyms:
                words += [w for wnid in cls.wnids for w in table.synonyms(wnid)]
                words += list(cls.extra_words)
            if hyponyms and cls.hyponyms:
                if cls.hyponym_wnids:
                    extra = [w for wnid in cls.hyponym_wnids for w in table.synonyms(wnid)]
                else:
                    extra = [w for wnid in cls.wnids for w in table.hyponyms(wnid)]
                words += extra[:max_hyponyms] if max_hyponyms is not None else extra
            excluded = {w.lower() for w in cls.exclude}
            unique: dict[str, str] = {}
            for word in words:
                key = word.lower()
                if key not in unique and (key not in excluded or word == cls.word):
                    unique[key] = word
            candidates[class_id] = list(unique.values())
        owners: dict[str, set[int]] = defaultdict(set)
        for class_id, words in candidates.items():
            for word in words:
                owners[word.lower()].add(class_id)
        defaults = {cls.word.lower(): i for i, cls in enumerate(vocabulary.classes, start=1)}
        self._words: dict[int, tuple[str, ...]] = {}
        for class_id, words in candidates.items():
            kept = [
                w
                for w in words
                if len(owners[w.lower()]) == 1 or defaults.get(w.lower()) == class_id
            ]
            self._words[class_id] = tuple(kept)
        self._word_to_class = {
            w.lower(): class_id for class_id, words in self._words.items() for w in words
        }

    def words(self, class_id: int) -> tuple[str, ...]:
        """Candidate words of a class, default word first."""
        if class_id not in self._words:
            raise KeyError(
                f"class id {class_id} is not a foreground class of {self.vocabulary.name!r} "
                f"(valid: 1..{self.vocabulary.num_classes - 1})."
            )
        return self._words[class_id]

    def word_to_class(self) -> dict[str, int]:
        """Lower-cased word -> class id, for every candidate word."""
        return dict(self._word_to_class)

    def class_of(self, word: str) -> int:
        try:
            return self._word_to_class[word.lower()]
        except KeyError:
            raise KeyError(
                f"word {word!r} is not a candidate word of any class of {self.vocabulary.name!r}."
            ) from None

    def sample(self, class_id: int, rng: random.Random, keep_prob: float = 0.25) -> str:
        """The default word with probability keep_prob, else a uniform pick among the others."""
        words = self.words(class_id)
        if len(words) == 1 or rng.random() < keep_prob:
            return words[0]
        return rng.choice(words[1:])
