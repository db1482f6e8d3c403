"""Pseudo-mask methods on hand-built attention with hand-computed answers."""

from __future__ import annotations

import json

import pytest
import torch

from synthmask.masks import (
    IGNORE_INDEX,
    MASK_METHODS,
    DenseCRFParams,
    MaskConfig,
    PseudoMask,
    attn2mask_from_heatmaps,
    build_mask_method,
    class_heatmaps,
    crf_refine,
    otsu_thresholds,
    pseudo_masks,
    reliability_margin,
    reliable_mask,
    self_refine_from_maps,
    threshold_from_heatmaps,
)
from synthmask.masks.self_refine import propagate

NEG_INF = float("-inf")
T = 6  # text tokens in the toy attention


def attention(maps: dict[int, list[list[float]]], side: int = 2) -> torch.Tensor:
    """(1, T, side, side) attention with the given token maps, zeros elsewhere."""
    out = torch.zeros(1, T, side, side)
    for token, values in maps.items():
        out[0, token] = torch.tensor(values)
    return out


def heat_and_present(maps: list[list[list[float]]], present: list[bool]):
    heat = torch.tensor([maps], dtype=torch.float32)
    return heat, torch.tensor([present])


# ---------------------------------------------------------------- heatmaps
def test_multi_token_word_sum_vs_mean_with_repeated_mention() -> None:
    # class 1 is named twice: "teddy bear" (tokens 1, 2) and "bear" (token 3); mentions -> max.
    cross = {2: attention({1: [[0.3, 0], [0, 0]], 2: [[0.3, 0], [0, 0]], 3: [[0, 0.4], [0, 0]]})}
    positions = [[(1, [1, 2]), (1, [3])]]
    kw = {"size": (2, 2), "interpolation": "nearest"}
    summed, present = class_heatmaps(cross, positions, 3, token_reduce="sum", **kw)
    mean, _ = class_heatmaps(cross, positions, 3, token_reduce="mean", **kw)
    # sum: max([[.6,0],[0,0]], [[0,.4],[0,0]]) -> min-max -> [[1, 2/3], [0, 0]]
    torch.testing.assert_close(summed[0, 1], torch.tensor([[1.0, 2 / 3], [0.0, 0.0]]))
    # mean: max([[.3,0],[0,0]], [[0,.4],[0,0]]) -> [[.75, 1], [0, 0]]
    torch.testing.assert_close(mean[0, 1], torch.tensor([[0.75, 1.0], [0.0, 0.0]]))
    assert present.tolist() == [[False, True, False]]
    assert summed[0, 0].abs().sum() == 0 and summed[0, 2].abs().sum() == 0
    # mention_reduce="sum" adds the mentions: [[.6,.4],[0,0]] -> [[1, 2/3], [0, 0]] as well,
    # but with overlapping mentions the two rules differ:
    cross = {2: attention({1: [[0.5, 0.2], [0, 0]], 3: [[0.4, 0.6], [0, 0]]})}
    added, _ = class_heatmaps(cross, [[(1, [1]), (1, [3])]], 3, mention_reduce="sum", **kw)
    torch.testing.assert_close(added[0, 1], torch.tensor([[0.9 / 0.9, 0.8 / 0.9], [0.0, 0.0]]))


def test_resolution_weights_average_after_upsampling() -> None:
    low = attention({1: [[1, 0], [0, 0]]}, side=2)
    high = torch.zeros(1, T, 4, 4)
    high[0, 1, 3, 3] = 1.0
    cross = {2: low, 4: high}
    heat, _ = class_heatmaps(
        cross, [[(1, [1])]], 2, (4, 4), interpolation="nearest", resolution_weights=(3.0, 1.0)
    )
    expected = torch.zeros(4, 4)
    expected[:2, :2] = 1.0  # 0.75 / 0.75
    expected[3, 3] = 1 / 3  # 0.25 / 0.75
    torch.testing.assert_close(heat[0, 1], expected)
    only_high, _ = class_heatmaps(cross, [[(1, [1])]], 2, (4, 4), resolutions=(4,))
    assert only_high[0, 1, 3, 3] == 1.0 and only_high[0, 1, 0, 0] == 0.0


def test_bicubic_upsampling_is_clamped_and_normalised() -> None:
    cross = {2: attention({1: [[1, 0], [0, 0]]})}
    heat, _ = class_heatmaps(cross, [[(1, [1])]], 2, (16, 16))
    assert heat.min() == 0.0 and heat.max() == 1.0
    assert heat[0, 1, :8, :8].max() == 1.0 and heat[0, 1, -4:, -4:].max() < 0.02


def test_heatmap_errors_name_the_problem() -> None:
    cross = {2: attention({1: [[1, 0], [0, 0]]})}
    with pytest.raises(KeyError, match=r"available: \[2\]"):
        class_heatmaps(cross, [[(1, [1])]], 2, (2, 2), resolutions=(8,))
    with pytest.raises(ValueError, match="no class word"):
        class_heatmaps(cross, [[]], 2, (2, 2))
    with pytest.raises(ValueError, match="outside the foreground ids"):
        class_heatmaps(cross, [[(5, [1])]], 3, (2, 2))
    with pytest.raises(ValueError, match="truncated"):
        class_heatmaps(cross, [[(1, [99])]], 3, (2, 2))


# ---------------------------------------------------------------- attn2mask
def test_attn2mask_background_rule_and_multi_class() -> None:
    heat, present = heat_and_present(
        [[[0, 0], [0, 0]], [[0.9, 0.5], [0.3, 0.0]], [[0.1, 0.7], [0.35, 0.0]]],
        [False, True, True],
    )
    mask = attn2mask_from_heatmaps(heat, present, beta=0.2)
    # bg = 1 - max - 0.2: [[-0.1, 0.1], [0.45, 0.8]]
    torch.testing.assert_close(mask.scores[0, 0], torch.tensor([[-0.1, 0.1], [0.45, 0.8]]))
    assert mask.label[0].tolist() == [[1, 2], [0, 0]]
    ignored = attn2mask_from_heatmaps(heat, present, beta=0.2, ignore_margin=0.15)
    # margins: 0.8, 0.2, 0.1 (0.45 vs 0.35), 0.8
    assert ignored.label[0].tolist() == [[1, 2], [IGNORE_INDEX, 0]]


def test_attn2mask_single_class_threshold_is_0_4_and_absent_never_wins() -> None:
    heat, present = heat_and_present(
        [[[0, 0], [0, 0]], [[0.41, 0.39], [1.0, 0.0]], [[0, 0], [0, 0]]], [False, True, False]
    )
    mask = attn2mask_from_heatmaps(heat, present, beta=0.2)
    assert mask.label[0].tolist() == [[1, 0], [1, 0]]  # bg at heat 1.0 is -0.2 < absent? no: -inf
    assert torch.isneginf(mask.scores[0, 2]).all()


def test_pseudo_masks_attn2mask_end_to_end_on_hand_attention() -> None:
    # "a dog and a cat": dog (class 12) token 2, cat (class 8) token 5; 2x2 latent, no resize
    cross = {2: attention({2: [[0.8, 0.1], [0.0, 0.2]], 5: [[0.0, 0.6], [0.1, 0.3]]})}
    config = MaskConfig(interpolation="nearest")
    pseudo, margin, reliable = pseudo_masks(
        cross, None, [[(12, [2]), (8, [5])]], 21, (2, 2), config
    )
    # dog heat [[1, .125], [0, .25]]; cat heat [[0, 1], [1/6, .5]]; margins vs the runner-up
    # bg = 1 - max - .2 = [[-.2, -.2], [.6333, .3]] -> labels [[12, 8], [0, 8]]
    assert pseudo.label[0].tolist() == [[12, 8], [0, 8]]
    expected_margin = torch.tensor([[1.0, 0.875], [0.6333 - 1 / 6, 0.2]])
    torch.testing.assert_close(margin[0], expected_margin, atol=1e-4, rtol=0)
    # per class top 50%: dog 1 pixel -> reliable; cat 2 pixels (.875, .2) -> the first; bg 1
    assert reliable[0].tolist() == [[True, True], [True, False]]


def test_pseudo_masks_compact_scores_match_dense() -> None:
    cross = {2: attention({2: [[0.8, 0.1], [0.0, 0.2]], 5: [[0.0, 0.6], [0.1, 0.3]]})}
    positions = [[(12, [2]), (8, [5])]]
    config = MaskConfig(interpolation="nearest")
    dense, margin, _ = pseudo_masks(cross, None, positions, 21, (2, 2), config)
    compact, margin_c, _ = pseudo_masks(
        cross, None, positions, 21, (2, 2), config, compact_scores=True
    )
    assert compact.class_ids.tolist() == [0, 8, 12] and compact.scores.shape == (1, 3, 2, 2)
    assert torch.equal(dense.scores[:, [0, 8, 12]], compact.scores)
    assert torch.isneginf(dense.scores[:, [1, 2, 20]]).all() and dense.class_ids is None
    assert torch.equal(dense.label, compact.label) and torch.equal(margin, margin_c)
    with pytest.raises(ValueError, match="outside the foreground ids"):
        pseudo_masks(cross, None, [[(21, [2])]], 21, (2, 2), config)


# ---------------------------------------------------------------- threshold
def test_threshold_fixed_and_per_class() -> None:
    heat, present = heat_and_present(
        [[[0, 0], [0, 0]], [[0.9, 0.6], [0.2, 0.4]], [[0, 0], [0, 0]]], [False, True, False]
    )
    assert threshold_from_heatmaps(heat, present, 0.5).label[0].tolist() == [[1, 1], [0, 0]]
    heat, present = heat_and_present(
        [[[0, 0], [0, 0]], [[0.9, 0.6], [0.2, 0.4]], [[0.95, 0.85], [0.1, 0.95]]],
        [False, True, True],
    )
    mask = threshold_from_heatmaps(heat, present, {1: 0.3, 2: 0.8})
    # excess 1: [[.6, .3], [-.1, .1]]; excess 2: [[.15, .05], [-.7, .15]]
    assert mask.label[0].tolist() == [[1, 1], [0, 2]]
    assert (mask.label != IGNORE_INDEX).all()
    torch.testing.assert_close(mask.scores[0, 0], torch.zeros(2, 2))
    # the same through pseudo_masks with real class ids (7 and 9): thresholds follow the ids
    cross = {2: torch.zeros(1, T, 2, 2)}
    cross[2][0, 1] = heat[0, 1]
    cross[2][0, 2] = heat[0, 2]
    config = MaskConfig(
        method="threshold", params={"threshold": {7: 0.3, 9: 0.8}}, interpolation="nearest"
    )
    pseudo, _, _ = pseudo_masks(cross, None, [[(7, [1]), (9, [2])]], 10, (2, 2), config)
    # here the heatmaps are min-max normalised first:
    # heat7 = ([.9,.6],[.2,.4]) -> ([1, 4/7], [0, 2/7]); heat9 = ([.95,.85],[.1,.95]) -> ([1, 15/17], [0, 1])
    # excess7 = [[.7, .271], [-.3, -.014]]; excess9 = [[.2, .082], [-.8, .2]]
    assert pseudo.label[0].tolist() == [[7, 7], [0, 9]]


def test_threshold_otsu_search_on_bimodal_map() -> None:
    values = torch.full((4, 4), 0.1)
    values[:, 2:] = 0.9
    heat = torch.stack([torch.zeros(4, 4), values])[None]
    present = torch.tensor([[False, True]])
    # every split between bin 25 (0.1) and bin 230 (0.9) is optimal; the lowest edge wins
    assert otsu_thresholds(heat)[0, 1].item() == pytest.approx(26 / 256)
    mask = threshold_from_heatmaps(heat, present, "otsu")
    assert mask.label[0].tolist() == [[0, 0, 1, 1]] * 4
    with pytest.raises(ValueError, match="otsu"):
        threshold_from_heatmaps(heat, present, "median")


# ---------------------------------------------------------------- self_refine
SELF = torch.tensor(
    [[1.0, 0, 0, 0], [0.55, 0.45, 0, 0], [0.3, 0, 0.7, 0], [0, 0, 0, 1.0]]
)  # row-stochastic, rows = query pixels in raster order


def test_self_refine_threshold_and_ignore_band() -> None:
    maps = torch.zeros(1, 2, 2, 2)
    maps[0, 1, 0, 0] = 1.0
    present = torch.tensor([[False, True]])
    one = self_refine_from_maps(maps, present, SELF[None], (2, 2), tau=1)
    # refined = S @ [1,0,0,0] = [1, .55, .3, 0]: >= .6 -> 1, [.5,.6) -> 255, < .5 -> 0
    assert one.label[0].tolist() == [[1, IGNORE_INDEX], [0, 0]]
    two = self_refine_from_maps(maps, present, SELF[None], (2, 2), tau=2)
    # S @ [1, .55, .3, 0] = [1, .7975, .51, 0]
    assert two.label[0].tolist() == [[1, 1], [IGNORE_INDEX, 0]]
    torch.testing.assert_close(two.scores[0, 1].flatten(), torch.tensor([1.0, 0.7975, 0.51, 0.0]))
    no_band = self_refine_from_maps(maps, present, SELF[None], (2, 2), tau=2, ignore_low=None)
    assert no_band.label[0].tolist() == [[1, 1], [0, 0]]


def test_self_refine_multi_class_end_to_end() -> None:
    cross = {2: attention({1: [[1, 0], [0, 0]], 4: [[0, 0], [0, 1]]})}
    self_att = {2: torch.eye(4)[None]}
    config = MaskConfig(method="self_refine", params={"self_resolution": 2})
    pseudo, _, _ = pseudo_masks(cross, self_att, [[(3, [1]), (7, [4])]], 10, (2, 2), config)
    assert pseudo.label[0].tolist() == [[3, 0], [0, 7]]
    with pytest.raises(ValueError, match="CaptureConfig"):
        pseudo_masks(cross, None, [[(3, [1])]], 10, (2, 2), config)


def test_propagate_equals_matrix_power() -> None:
    generator = torch.Generator().manual_seed(0)
    s = torch.rand(1, 16, 16, generator=generator).softmax(-1)
    maps = torch.rand(1, 3, 4, 4, generator=generator)
    expected = torch.linalg.matrix_power(s[0], 4) @ maps[0].flatten(1).t()
    torch.testing.assert_close(propagate(maps, s, 4)[0].flatten(1).t(), expected)


# ---------------------------------------------------------------- reliability
def test_reliability_margin_top1_minus_top2() -> None:
    scores = torch.tensor([[[[0.5, 0.2]], [[0.1, 0.9]], [[NEG_INF, NEG_INF]]]])
    torch.testing.assert_close(reliability_margin(scores), torch.tensor([[[0.4, 0.7]]]))
    lonely = torch.tensor([[[[0.5]], [[NEG_INF]]]])
    assert torch.isposinf(reliability_margin(lonely)).all()


def test_reliable_top_half_per_class_exact_map() -> None:
    label = torch.tensor([[[1, 1, 1, 1], [0, 0, 0, IGNORE_INDEX]]])
    margin = torch.tensor([[[0.9, 0.1, 0.5, 0.5], [0.3, 0.2, 0.7, 0.99]]])
    # class 1: keep ceil(4/2)=2 -> .9 and the first of the tied .5s; class 0: ceil(1.5)=2
    expected = [[[True, False, True, False], [True, False, True, False]]]
    assert reliable_mask(margin, label).tolist() == expected
    fixed = reliable_mask(margin, label, threshold=0.5)
    assert fixed.tolist() == [[[True, False, True, True], [False, False, True, False]]]
    assert not reliable_mask(margin, label, fraction=0.0).any()
    assert reliable_mask(margin, label, fraction=1.0).tolist() == [
        [[True] * 4, [True] * 3 + [False]]
    ]


# ---------------------------------------------------------------- CRF
def crf_toy() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """16x16 image: red left of column 9, blue from 9; label edge wrongly at column 6 + noise."""
    image = torch.zeros(1, 16, 16, 3, dtype=torch.uint8)
    image[..., 0] = 200
    image[:, :, 9:, 0] = 20
    image[:, :, 9:, 2] = 220
    truth = torch.zeros(1, 16, 16, dtype=torch.long)
    truth[:, :, 9:] = 1
    noisy = torch.zeros(1, 16, 16, dtype=torch.long)
    noisy[:, :, 6:] = 1
    rows, cols = torch.meshgrid(torch.arange(16), torch.arange(16), indexing="ij")
    flip = ((rows * 7 + cols * 3) % 11 == 0)[None]
    noisy = torch.where(flip, 1 - noisy, noisy)
    return image, noisy, truth


def test_crf_snaps_noisy_label_to_colour_edge() -> None:
    image, noisy, truth = crf_toy()
    scores = torch.zeros(1, 3, 16, 16)
    scores[:, 2] = NEG_INF  # class 2 absent
    refined = crf_refine(PseudoMask(noisy, scores), image)
    assert (noisy != truth).sum() > 40
    assert torch.equal(refined.label, truth)
    assert torch.isneginf(refined.scores[:, 2]).all()
    torch.testing.assert_close(refined.scores[:, :2].sum(1), torch.ones(1, 16, 16))
    # channels-first float input gives the same answer
    chw = crf_refine(PseudoMask(noisy, scores), image.permute(0, 3, 1, 2).float())
    assert torch.equal(chw.label, truth)


def test_crf_working_grid_and_ignore() -> None:
    image, noisy, truth = crf_toy()
    big = lambda x: x.repeat_interleave(4, 1).repeat_interleave(4, 2)  # noqa: E731
    image, noisy, truth = big(image), big(noisy), big(truth)
    noisy[:, 0, 0] = IGNORE_INDEX
    scores = torch.zeros(1, 2, 64, 64)
    refined = crf_refine(PseudoMask(noisy, scores), image, DenseCRFParams(max_side=16))
    agree = (refined.label == truth).float().mean().item()
    assert agree > 0.97 > (noisy == truth).float().mean().item()
    assert refined.label[0, 0, 0] == IGNORE_INDEX


def test_crf_through_config_needs_image() -> None:
    cross = {2: attention({1: [[1, 0], [0, 0]]})}
    config = MaskConfig(crf=True)
    with pytest.raises(ValueError, match="image"):
        pseudo_masks(cross, None, [[(1, [1])]], 2, (2, 2), config)
    image = torch.zeros(1, 2, 2, 3, dtype=torch.uint8)
    pseudo, _, _ = pseudo_masks(cross, None, [[(1, [1])]], 2, (2, 2), config, image=image)
    assert pseudo.label.shape == (1, 2, 2)


# ---------------------------------------------------------------- config
def test_mask_config_json_is_stable_and_resolves_defaults() -> None:
    base = MaskConfig()
    assert base.to_json() == MaskConfig(params={"beta": 0.2}).to_json()
    assert base.to_json() != MaskConfig(params={"beta": 0.3}).to_json()
    assert json.loads(base.to_json())["params"] == {"beta": 0.2, "ignore_margin": None}
    a = MaskConfig(method="threshold", params={"threshold": {2: 0.3, 1: 0.5}}, resolutions=[16, 32])
    b = MaskConfig(method="threshold", params={"threshold": {1: 0.5, 2: 0.3}}, resolutions=(16, 32))
    assert a.to_json() == b.to_json()
    assert MaskConfig.from_json(a.to_json()).to_json() == a.to_json()
    # CRF parameters only count when the CRF is on
    assert MaskConfig(crf_params={"iterations": 9}).to_json() == base.to_json()
    assert (
        MaskConfig(crf=True).to_json()
        != MaskConfig(crf=True, crf_params={"iterations": 9}).to_json()
    )


def test_registry_errors_list_valid_names() -> None:
    assert set(MASK_METHODS) == {"attn2mask", "threshold", "self_refine"}
    with pytest.raises(KeyError, match="attn2mask") as err:
        build_mask_method("attn2msk")
    assert "Did you mean" in str(err.value)
    with pytest.raises(ValueError, match="valid parameters"):
        MaskConfig(params={"gamma": 1})
    with pytest.raises(ValueError, match="token_reduce"):
        MaskConfig(token_reduce="median")
