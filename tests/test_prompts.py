"""Prompt types, vocabularies, WordNet augmentation and deterministic generation."""

from __future__ import annotations

import pytest

from synthmask.prompts import (
    TEMPLATE_SETS,
    ClassWord,
    Prompt,
    PromptGenerator,
    WordNetAugmenter,
    get_vocabulary,
    load_wordnet_table,
    parse_prompt,
    render_template,
)
from synthmask.prompts.vocab import read_wnid_list


def assert_spans(prompts: list[Prompt]) -> None:
    for p in prompts:
        assert p.class_words, p
        for cw in p.class_words:
            assert p.text[cw.start : cw.end] == cw.word


# ---------------------------------------------------------------- types
def test_prompt_json_round_trip_and_span_validation() -> None:
    p = Prompt.from_text_and_words(
        "a dog and a cat and a dog", [("dog", 12), ("cat", 8), ("dog", 12)]
    )
    assert [(c.start, c.end) for c in p.class_words] == [(2, 5), (12, 15), (22, 25)]
    assert p.class_ids == (12, 8)
    assert Prompt.from_json(p.to_json()) == p
    with pytest.raises(ValueError, match="does not match prompt"):
        Prompt("a dog", (ClassWord("cat", 1, 2, 5),))
    with pytest.raises(ValueError, match="not found"):
        Prompt.from_text_and_words("a dog", [("cat", 8)])


# ---------------------------------------------------------------- vocabularies
def test_vocabularies_and_registry_errors() -> None:
    voc = get_vocabulary("voc")
    assert voc.num_classes == 21 and voc.class_names[0] == "background"
    assert voc.class_names[15] == "person" and voc.class_id("dining table") == 11
    assert voc.class_id("diningtable") == 11 and voc.class_id("n02084071") == 12
    city = get_vocabulary("cityscapes")
    assert city.num_classes == 20 and city.class_names[1] == "road"
    assert (
        city.dataset_label(0) == 255 and city.dataset_label(1) == 0 and city.dataset_label(19) == 18
    )
    with pytest.raises(KeyError, match=r"Close matches: \['dog'\]"):
        voc.class_id("dgo")
    with pytest.raises(KeyError, match="valid names") as err:
        get_vocabulary("vocc")
    assert "voc" in str(err.value)
    with pytest.raises(ValueError, match="ImageNetS_categories_im50"):
        get_vocabulary("imagenet_s50")


def test_imagenet_s_from_category_file(tmp_path, realdata_dir) -> None:
    listing = realdata_dir / "imagenet-s" / "ImageNetS_categories_im50.txt"
    vocab = get_vocabulary("imagenet_s50", categories=listing)
    assert vocab.num_classes == 51 and vocab.class_names[0] == "other"
    wnids = read_wnid_list(listing)
    assert vocab.classes[0].wnids == (wnids[0],) and vocab.classes[0].name == "goldfish"
    big = get_vocabulary(
        "imagenet_s919", realdata_dir / "imagenet-s" / "ImageNetS_categories_im919.txt"
    )
    assert big.num_classes == 920
    # from a split folder of wnid sub-folders, and the size check
    for wnid in wnids[:3]:
        (tmp_path / wnid).mkdir()
    with pytest.raises(ValueError, match="needs 50 categories, got 3"):
        get_vocabulary("imagenet_s50", tmp_path)


def test_imagenet1k_names_come_from_wordnet() -> None:
    vocab = get_vocabulary("imagenet1k")
    assert vocab.num_classes == 1001
    assert vocab.classes[0].wnids == ("n01440764",) and vocab.classes[0].word == "tench"
    table = load_wordnet_table()
    assert "WordNet 3.0" in table.source and len(table.imagenet1k_wnids) == 1000


# ---------------------------------------------------------------- augmentation
def test_synonyms_and_hyponyms_map_to_their_class() -> None:
    voc = get_vocabulary("voc")
    aug = WordNetAugmenter(voc)
    dog = aug.words(12)
    assert dog[0] == "dog" and {"puppy", "terrier", "spaniel"} <= set(dog)
    assert aug.class_of("puppy") == 12 and aug.class_of("Airplane") == 1
    assert aug.class_of("couch") == 18 and aug.class_of("heifer") == 10
    assert {"man", "woman", "child"} <= set(aug.words(15))
    # exclusions and shared words: "machine" is not a car, "bike" is both bicycle and motorbike
    assert "machine" not in aug.words(7)
    assert "bike" not in aug.words(2) and "bike" not in aug.words(14)
    assert "motorbike" in aug.words(14)
    with pytest.raises(KeyError, match="not a candidate word"):
        aug.class_of("spaceship")
    synonyms_only = WordNetAugmenter(voc, hyponyms=False)
    assert "puppy" not in synonyms_only.words(12) and "domestic dog" in synonyms_only.words(12)


# ---------------------------------------------------------------- templates
def test_render_template_spans_articles_and_errors() -> None:
    p = render_template("a photo of a {class} in the {context}", [("aeroplane", 1)], "park")
    assert p.text == "a photo of an aeroplane in the park"
    assert p.class_words == (ClassWord("aeroplane", 1, 14, 23),)
    multi = render_template("A {class} and a {class}", [("owl", 3), ("dog", 12)])
    assert multi.text == "An owl and a dog" and [c.class_id for c in multi.class_words] == [3, 12]
    with pytest.raises(ValueError, match="no \\{class\\} slot"):
        render_template("a photo of a landscape", [])
    with pytest.raises(ValueError, match="unknown slots"):
        render_template("a {animal}", [("dog", 12)])


# ---------------------------------------------------------------- generation
def test_generator_deterministic_per_seed_and_prefix_stable() -> None:
    voc = get_vocabulary("voc")
    kw = {"templates": TEMPLATE_SETS["photo+context"], "augment": True, "multi_class_prob": 0.3}
    a = PromptGenerator(voc, seed=7, **kw).generate(60)
    b = PromptGenerator(voc, seed=7, **kw).generate(60)
    c = PromptGenerator(voc, seed=8, **kw).generate(60)
    assert a == b
    assert [p.text for p in a] != [p.text for p in c]
    assert PromptGenerator(voc, seed=7, **kw).generate(10, start=50) == a[50:]
    assert_spans(a + c)
    # balanced: prompt i names class i mod 20 first
    assert [p.class_words[0].class_id for p in a[:20]] == list(range(1, 21))
    assert any(len(p.class_ids) == 2 for p in a) and all(len(p.class_ids) <= 2 for p in a)
    # every substituted word maps back to its class
    aug = WordNetAugmenter(voc)
    for p in a:
        for cw in p.class_words:
            assert aug.class_of(cw.word) == cw.class_id
    assert any(cw.word != voc.word(cw.class_id) for p in a for cw in p.class_words)


def test_generator_default_is_the_paper_prompt_and_subsets() -> None:
    voc = get_vocabulary("voc")
    prompts = PromptGenerator(voc, classes=["dog", "cat"]).generate(4)
    assert [p.text for p in prompts] == [
        "a photograph of a dog",
        "a photograph of a cat",
        "a photograph of a dog",
        "a photograph of a cat",
    ]
    assert prompts[0].class_words == (ClassWord("dog", 12, 18, 21),)
    with pytest.raises(KeyError, match="not in vocabulary 'voc'"):
        PromptGenerator(voc, classes=["dgo"])
    with pytest.raises(ValueError, match="no \\{class\\} slot"):
        PromptGenerator(voc, templates=["a photo of nothing"])
    city = get_vocabulary("cityscapes")
    scenes = PromptGenerator(city, templates=TEMPLATE_SETS["cityscapes"], augment=True, seed=1)
    out = scenes.generate(20)
    assert_spans(out)
    assert all(len(p.class_ids) >= 2 for p in out)


def test_parse_prompt_finds_class_words() -> None:
    voc = get_vocabulary("voc")
    aug = WordNetAugmenter(voc)
    p = parse_prompt("A puppy and a tabby cat on the couch", voc, aug)
    assert [(c.word, c.class_id) for c in p.class_words] == [
        ("puppy", 12),
        ("tabby cat", 8),  # longest match wins
        ("couch", 18),
    ]
    assert_spans([p])
    with pytest.raises(ValueError, match="names no class"):
        parse_prompt("a photo of a landscape", voc)
