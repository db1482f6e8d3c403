"""Class vocabularies: VOC (20 + background), Cityscapes (19), ImageNet-S (50/300/919).

Vocabulary ids: 0 is the background slot of the pseudo-masks ("pixels no named class
claims"), foreground classes are 1..K. `dataset_ids` maps a vocabulary id to the data set's
label id where they differ: Cityscapes has no background class, so vocabulary id c is
trainId c - 1 and the background slot maps to 255 (ignore). Each class lists the WordNet
synsets (wnids = "n" + WordNet 3.0 noun offset) used for synonyms/hyponyms (augment.py).
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from synthmask.prompts.wordnet_table import load_wordnet_table
from synthmask.world.shapes import DEFAULT_SHAPES, get_shape

IGNORE_INDEX = 255


@dataclass(frozen=True)
class VocabularyClass:
    """One foreground class.

    Attributes:
        name: the data set's class name ("diningtable").
        word: the default word for prompts ("dining table").
        wnids: WordNet noun synsets of the class (synonyms/hyponyms come from them).
        exclude: WordNet words never used for this class (ambiguous or misleading).
        hyponym_wnids: curated synsets whose lemmas replace the hyponym closure of `wnids`.
        hyponyms: False = synonyms only.
        extra_words: hand-picked words added after the WordNet synonyms.
    """

    name: str
    word: str
    wnids: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    hyponym_wnids: tuple[str, ...] = ()
    hyponyms: bool = True
    extra_words: tuple[str, ...] = ()


@dataclass(frozen=True)
class Vocabulary:
    """Classes of a data set, indexed by vocabulary id (0 = background slot)."""

    name: str
    classes: tuple[VocabularyClass, ...]
    background_name: str = "background"
    dataset_ids: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        if self.dataset_ids is not None and len(self.dataset_ids) != self.num_classes:
            raise ValueError(
                f"vocabulary {self.name!r}: dataset_ids has {len(self.dataset_ids)} entries, "
                f"expected {self.num_classes} (background + classes)."
            )

    @property
    def num_classes(self) -> int:
        """C = K + 1 (background slot included)."""
        return len(self.classes) + 1

    @property
    def class_names(self) -> list[str]:
        return [self.background_name] + [c.name for c in self.classes]

    def word(self, class_id: int) -> str:
        """Default prompt word of a foreground class id."""
        if not 1 <= class_id < self.num_classes:
            raise KeyError(
                f"class id {class_id} is not a foreground class of {self.name!r} "
                f"(valid: 1..{self.num_classes - 1})."
            )
        return self.classes[class_id - 1].word

    def dataset_label(self, class_id: int) -> int:
        """The data set's label id for a vocabulary id (identity unless dataset_ids is set)."""
        return class_id if self.dataset_ids is None else self.dataset_ids[class_id]

    def class_id(self, key: str) -> int:
        """Foreground id from a class name, its default word or a wnid (case-insensitive)."""
        wanted = key.strip().lower()
        for class_id, cls in enumerate(self.classes, start=1):
            if wanted in (cls.name.lower(), cls.word.lower()) or key in cls.wnids:
                return class_id
        names = list(dict.fromkeys([c.name for c in self.classes] + [c.word for c in self.classes]))
        close = difflib.get_close_matches(key, names, n=3, cutoff=0.6)
        hint = f" Close matches: {close}." if close else ""
        shown = [c.name for c in self.classes]
        shown_text = f"{shown}" if len(shown) <= 40 else f"{shown[:40]} ... ({len(shown)} classes)"
        raise KeyError(
            f"class {key!r} is not in vocabulary {self.name!r}.{hint} Valid classes: {shown_text}"
        )


def _cls(
    name: str,
    word: str,
    wnids: tuple[str, ...],
    exclude: tuple[str, ...] = (),
    hyponym_wnids: tuple[str, ...] = (),
    hyponyms: bool = True,
    extra_words: tuple[str, ...] = (),
) -> VocabularyClass:
    return VocabularyClass(name, word, wnids, exclude, hyponym_wnids, hyponyms, extra_words)


# Curated hyponyms for people: WordNet's person closure is thousands of roles, some offensive.
PEOPLE = (
    "n10287213",  # man
    "n10787470",  # woman
    "n09917593",  # child
    "n10285313",  # boy
    "n10129825",  # girl
    "n09827683",  # baby
    "n09772029",  # teenager
    "n10375506",  # old man
    "n10377021",  # old woman
    "n09605289",  # adult
    "n10714465",  # toddler
    "n10412055",  # pedestrian
)

# In the data set's class order. `exclude`: WordNet words that are ambiguous or misleading
# in a prompt ("machine" for car, "wheel" for bicycle, Latin names).
VOC_CLASSES: tuple[VocabularyClass, ...] = (
    _cls("aeroplane", "aeroplane", ("n02691156",), ("amphibian", "kamikaze")),
    _cls("bicycle", "bicycle", ("n02834778",), ("wheel", "ordinary", "cycle")),
    _cls("bird", "bird", ("n01503061",)),
    _cls("boat", "boat", ("n02858304",), ("gig", "lighter", "ark", "hoy", "tender")),
    _cls("bottle", "bottle", ("n02876657",), ("gourd", "Dewar")),
    _cls("bus", "bus", ("n02924116",), ("passenger vehicle", "jitney", "charabanc")),
    _cls("car", "car", ("n02958343",), ("machine", "funny wagon", "hot rod")),
    _cls("cat", "cat", ("n02121808",), ("pussy", "puss", "queen", "tom", "Felis domesticus",
                                         "Felis catus")),
    _cls("chair", "chair", ("n03001627",), ("chair of state",)),
    _cls("cow", "cow", ("n02403454", "n02402425"), ("springer", "springing cow", "moo-cow")),
    _cls("diningtable", "dining table", ("n03201208",), ("board", "high table", "triclinium"),
         extra_words=("table", "kitchen table", "breakfast table", "picnic table", "coffee table")),
    _cls("dog", "dog", ("n02084071",), ("Canis familiaris", "cur")),
    _cls("horse", "horse", ("n02374451",), ("buckskin", "dun", "gray", "mount", "crowbait",
                                           "Equus caballus")),
    _cls("motorbike", "motorbike", ("n03790512",)),
    _cls("person", "person", ("n00007846",), ("soul", "mortal", "someone", "somebody"), PEOPLE),
    _cls("pottedplant", "potted plant", ("n13083023", "n11536230")),
    _cls("sheep", "sheep", ("n02411705",), ("Ovis aries", "tup", "Lincoln", "Hampshire")),
    _cls("sofa", "sofa", ("n04256520",), ("squab", "lounge")),
    _cls("train", "train", ("n04468005",), ("commuter", "rattler", "car train")),
    _cls("tvmonitor", "tv monitor", ("n04405907", "n03085219"), ("idiot box", "boob tube",
                                                                 "goggle box")),
)  # fmt: skip

CITYSCAPES_CLASSES: tuple[VocabularyClass, ...] = (
    _cls("road", "road", ("n04096066",), ("line", "trail", "shortcut", "route")),
    _cls("sidewalk", "sidewalk", ("n04215402",)),
    _cls("building", "building", ("n02913152",)),
    _cls("wall", "wall", ("n04546855",), ("attic", "firewall", "proscenium")),
    _cls("fence", "fence", ("n03327234",), ("backstop", "weir", "windbreak")),
    _cls("pole", "pole", ("n03976657",), hyponyms=False),
    _cls("traffic light", "traffic light", ("n06874185",), ("go-ahead",)),
    _cls("traffic sign", "traffic sign", ("n06794110",), hyponyms=False),
    _cls("vegetation", "vegetation", ("n08436759",), ("stand", "growth", "brush", "botany")),
    _cls("terrain", "terrain", ("n08674563",)),
    _cls("sky", "sky", ("n09436708",), ("blue", "wild blue yonder")),
    _cls("person", "person", ("n10412055",), hyponym_wnids=PEOPLE),
    _cls("rider", "rider", ("n09986189", "n10334009")),
    _cls("car", "car", ("n02958343",), ("machine", "funny wagon", "hot rod")),
    _cls("truck", "truck", ("n04490091",), ("wagon",)),
    _cls("bus", "bus", ("n02924116",), ("passenger vehicle", "jitney", "charabanc")),
    _cls("train", "train", ("n04468005",), ("commuter", "rattler", "car train")),
    _cls("motorcycle", "motorcycle", ("n03790512",)),
    _cls("bicycle", "bicycle", ("n02834778",), ("wheel", "ordinary", "cycle")),
)  # fmt: skip


def voc_vocabulary() -> Vocabulary:
    """PASCAL VOC 2012: background + 20 classes, ids as in the VOC label PNGs."""
    return Vocabulary("voc", VOC_CLASSES)


def cityscapes_vocabulary() -> Vocabulary:
    """Cityscapes' 19 train classes (vocabulary id = trainId + 1; background -> 255)."""
    dataset_ids = (IGNORE_INDEX, *range(len(CITYSCAPES_CLASSES)))
    return Vocabulary("cityscapes", CITYSCAPES_CLASSES, dataset_ids=dataset_ids)


def imagenet_vocabulary(wnids: Sequence[str], name: str = "imagenet") -> Vocabulary:
    """A vocabulary of ImageNet synsets in the given order (ids 1..K; 0 = "other").

    Class names and prompt words are the synsets' first WordNet lemmas (bundled table).
    """
    table = load_wordnet_table()
    missing = [w for w in wnids if w not in table]
    if missing:
        raise KeyError(
            f"wnids {missing[:5]} (of {len(missing)}) are not in the bundled WordNet table, which "
            "covers the ImageNet-1k synsets; regenerate it with "
            "synthmask/prompts/build_wordnet_table.py --extra-wnids."
        )
    classes = tuple(
        VocabularyClass(table[w]["lemmas"][0], table[w]["lemmas"][0], (w,)) for w in wnids
    )
    return Vocabulary(name, classes, background_name="other")


IMAGENET_S_SIZES = {"imagenet_s50": 50, "imagenet_s300": 300, "imagenet_s919": 919}


def read_wnid_list(source: str | Path) -> list[str]:
    """wnids from an ImageNet-S category file (one wnid per line) or a data set split folder
    (`<root>/ImageNetS919/validation/<wnid>/...`: the sorted sub-folder names)."""
    path = Path(source)
    if path.is_file():
        wnids = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    elif path.is_dir():
        wnids = sorted(p.name for p in path.iterdir() if p.is_dir() and p.name.startswith("n"))
    else:
        raise FileNotFoundError(
            f"{path} is neither a category list nor a folder of wnid sub-folders; pass the "
            "ImageNet-S file data/categories/ImageNetS_categories_im919.txt (or _im50/_im300) "
            "or a split folder such as ImageNetS919/validation."
        )
    bad = [w for w in wnids if not (w.startswith("n") and w[1:].isdigit() and len(w) == 9)]
    if bad or not wnids:
        raise ValueError(f"{path} does not list wnids like 'n01443537' (bad entries: {bad[:3]}).")
    return wnids


def imagenet_s_vocabulary(name: str, categories: str | Path | Sequence[str]) -> Vocabulary:
    """ImageNet-S-50/300/919: class i = i-th wnid of the sorted category list (1-based)."""
    wnids = (
        list(categories) if not isinstance(categories, (str, Path)) else read_wnid_list(categories)
    )
    expected = IMAGENET_S_SIZES[name]
    if len(wnids) != expected:
        raise ValueError(
            f"{name} needs {expected} categories, got {len(wnids)}; pass the matching "
            f"ImageNetS_categories_im{expected}.txt."
        )
    return imagenet_vocabulary(sorted(wnids), name=name)


def _imagenet1k() -> Vocabulary:
    return imagenet_vocabulary(load_wordnet_table().imagenet1k_wnids, name="imagenet1k")


def shapes_vocabulary(shapes: Sequence[str] | None = None) -> Vocabulary:
    """The shapes world's classes: background 0, shape i -> id i + 1; the world's caption
    synonyms ("disk" for circle) are the augmentation words (no WordNet synsets)."""
    names = tuple(DEFAULT_SHAPES if shapes is None else shapes)
    return Vocabulary(
        "shapes",
        tuple(
            VocabularyClass(n, n, hyponyms=False, extra_words=get_shape(n).synonyms[1:])
            for n in names
        ),
    )


VOCABULARIES: dict[str, Callable[..., Vocabulary]] = {
    "voc": voc_vocabulary,
    "shapes": shapes_vocabulary,
    "cityscapes": cityscapes_vocabulary,
    "imagenet1k": _imagenet1k,
    "imagenet_s50": lambda categories: imagenet_s_vocabulary("imagenet_s50", categories),
    "imagenet_s300": lambda categories: imagenet_s_vocabulary("imagenet_s300", categories),
    "imagenet_s919": lambda categories: imagenet_s_vocabulary("imagenet_s919", categories),
}


def get_vocabulary(name: str, categories: str | Path | Sequence[str] | None = None) -> Vocabulary:
    """Vocabulary by name; ImageNet-S ones need `categories` (category file, split folder or
    wnid list), since their class lists are not bundled."""
    if name not in VOCABULARIES:
        close = difflib.get_close_matches(name, list(VOCABULARIES), n=3)
        hint = f" Did you mean {close}?" if close else ""
        raise KeyError(f"unknown vocabulary {name!r}; valid names: {sorted(VOCABULARIES)}.{hint}")
    if name in IMAGENET_S_SIZES:
        if categories is None:
            n = IMAGENET_S_SIZES[name]
            raise ValueError(
                f"vocabulary {name!r} needs its category list: pass categories= the ImageNet-S "
                f"file data/categories/ImageNetS_categories_im{n}.txt, the split folder "
                f"ImageNetS{n}/validation, or a list of {n} wnids."
            )
        return VOCABULARIES[name](categories)
    if categories is not None:
        raise ValueError(f"vocabulary {name!r} has a fixed class list; do not pass categories.")
    return VOCABULARIES[name]()
