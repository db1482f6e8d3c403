"""CLIP tokenizer rebuilt from open_clip's BPE file: parity with open_clip and with SD 1.5's files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from open_clip.tokenizer import SimpleTokenizer
from transformers import CLIPTokenizer

from synthmask.diffusion.tokenizer import CLIP_VOCAB_SIZE, build_clip_tokenizer

SENTENCES = [
    "a photograph of a golden retriever",
    "A RED star, on a striped background!!",
    "it's 2024: a car and a person on a road, cityscapes",
    "an aeroplane   over\tthe tvmonitor and pottedplant",
]


@pytest.fixture(scope="module")
def tokenizer() -> CLIPTokenizer:
    return build_clip_tokenizer()


def test_vocab_size_and_special_ids(tokenizer: CLIPTokenizer) -> None:
    assert len(tokenizer) == CLIP_VOCAB_SIZE == 49408
    assert tokenizer.bos_token_id == 49406
    assert tokenizer.eos_token_id == 49407
    assert tokenizer.pad_token_id == 49407
    assert tokenizer.model_max_length == 77


@pytest.mark.parametrize("text", SENTENCES)
def test_ids_match_open_clip(tokenizer: CLIPTokenizer, text: str) -> None:
    expected = SimpleTokenizer().encode(text)
    ids = tokenizer(text).input_ids
    assert ids == [49406, *expected, 49407]


def test_known_ids(tokenizer: CLIPTokenizer) -> None:
    # "a"=320, "photograph"=8853, "of"=539, "golden"=3878, "retriever"=28394 in CLIP's vocabulary
    assert tokenizer("a photograph of a golden retriever").input_ids == [
        49406, 320, 8853, 539, 320, 3878, 28394, 49407,
    ]  # fmt: skip


def test_padding_and_truncation(tokenizer: CLIPTokenizer) -> None:
    ids = tokenizer("a dog", padding="max_length", max_length=77, truncation=True).input_ids
    assert len(ids) == 77 and ids[:4] == [49406, 320, 1929, 49407] and set(ids[4:]) == {49407}
    long_ids = tokenizer(
        "dog " * 100, padding="max_length", max_length=77, truncation=True
    ).input_ids
    assert len(long_ids) == 77 and long_ids[0] == 49406 and long_ids[-1] == 49407


def test_save_and_reload(tmp_path: Path, tokenizer: CLIPTokenizer) -> None:
    build_clip_tokenizer(tmp_path / "tok", model_max_length=64)
    assert {"tokenizer.json", "vocab.json", "merges.txt"} <= {
        p.name for p in (tmp_path / "tok").iterdir()
    }
    reloaded = CLIPTokenizer.from_pretrained(tmp_path / "tok")
    assert reloaded.model_max_length == 64
    for text in SENTENCES:
        assert reloaded(text).input_ids == tokenizer(text).input_ids


def test_classic_vocab_files_alone_load(tmp_path: Path, tokenizer: CLIPTokenizer) -> None:
    build_clip_tokenizer(tmp_path / "tok")
    (tmp_path / "tok" / "tokenizer.json").unlink()
    reloaded = CLIPTokenizer.from_pretrained(tmp_path / "tok")
    for text in SENTENCES:
        assert reloaded(text).input_ids == tokenizer(text).input_ids


def test_matches_sd15_tokenizer_files(realdata_dir: Path, tmp_path: Path) -> None:
    sd_dir = realdata_dir / "sd15-config" / "tokenizer"
    build_clip_tokenizer(tmp_path / "tok")
    ours = json.loads((tmp_path / "tok" / "vocab.json").read_text(encoding="utf-8"))
    theirs = json.loads((sd_dir / "vocab.json").read_text(encoding="utf-8"))
    assert ours == theirs
    our_merges = (tmp_path / "tok" / "merges.txt").read_text(encoding="utf-8").split("\n")
    their_merges = (sd_dir / "merges.txt").read_text(encoding="utf-8").split("\n")
    assert [m for m in our_merges if m] == [m for m in their_merges if m]
    sd_tok = CLIPTokenizer.from_pretrained(sd_dir)
    ours_tok = build_clip_tokenizer()
    assert sd_tok.model_max_length == ours_tok.model_max_length == 77
    for text in SENTENCES:
        kw = {"padding": "max_length", "max_length": 77, "truncation": True}
        assert sd_tok(text, **kw).input_ids == ours_tok(text, **kw).input_ids
