"""The plan of a data set is built in memory before synthesis: an absurd `num_images` is refused
at once with the stated maximum, and a large plan shows progress while it is built."""

from __future__ import annotations

import time

import pytest

import synthmask.synthesis_plan as plan_module
from synthmask.datamodules.settings import SynthesisConfig
from synthmask.prompts import PromptGenerator, get_vocabulary
from synthmask.prompts.templates import CONTEXTS
from synthmask.synthesis_plan import MAX_NUM_IMAGES, PromptConfig, build_plan, check_num_images


def test_num_images_beyond_the_maximum_fails_at_once() -> None:
    start = time.perf_counter()
    with pytest.raises(ValueError, match=r"synthesis.num_images=1,000,000,000,000 is more than"):
        SynthesisConfig(num_images=10**12).check()
    with pytest.raises(ValueError, match=f"at most {MAX_NUM_IMAGES:,}"):
        PromptConfig().prompts(get_vocabulary("voc"), MAX_NUM_IMAGES + 1, 0)
    assert time.perf_counter() - start < 2.0
    SynthesisConfig(num_images=MAX_NUM_IMAGES).check()  # the maximum itself is allowed
    for bad in (0, 2.5, True):
        with pytest.raises(ValueError, match="synthesis.num_images"):
            check_num_images(bad)  # type: ignore[arg-type]


def test_a_large_plan_shows_progress_and_equals_the_unchunked_one(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(plan_module, "PLAN_PROGRESS_MIN", 100)
    monkeypatch.setattr(plan_module, "_PLAN_CHUNK", 64)
    vocabulary = get_vocabulary("voc")
    config = PromptConfig(templates="photo+context", augment=True, multi_class_prob=0.3)
    prompts = config.prompts(vocabulary, 300, seed=7)
    specs = build_plan(prompts, 7, {"generator": "x"})
    err = capsys.readouterr().err
    assert "plan: prompts" in err and "plan: cache keys" in err and "300/300" in err
    whole = PromptGenerator(
        vocabulary,
        templates=config._template_list(config.templates, "template"),
        augment=True,
        seed=7,
        multi_class_prob=0.3,
        multi_class_templates=config._template_list(config.multi_class_templates, "template"),
        contexts=CONTEXTS,
        keep_prob=config.keep_prob,
    ).generate(300)
    assert prompts == whole  # generated in chunks, the same prompts
    assert [s.index for s in specs] == list(range(300)) and len({s.key for s in specs}) == 300
    config.prompts(vocabulary, 99, seed=7)
    assert "plan:" not in capsys.readouterr().err  # small plans stay quiet
