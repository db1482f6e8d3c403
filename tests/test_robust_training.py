"""Robust training (METHOD.md Technique 1): reliability modes, BECO pieces, augmentation, CoTrainingModule.

Per-sample statistics, pruning and the reliability media callback: test_reliability_pruning.py.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from fixtures_robust import FixedLogitsNet
from fixtures_segmentation import TINY_NET_ARGS

from synthmask.cli import main
from synthmask.lightning_modules.co_training import CoTrainingModule, build_peer_nets
from synthmask.lightning_modules.segmentation import SegmentationModule
from synthmask.models import DeepLabV3Plus
from synthmask.models.losses import ReliabilityOptions, reliability_weighted_cross_entropy
from synthmask.training import (
    StrongAugmentConfig,
    boundary_band,
    co_training_loss,
    copy_paste_halves,
    online_labels,
    paste_region,
    peer_disagreement,
    reliable_from_map,
    strong_photometric_augment,
)

REPO = Path(__file__).resolve().parents[1]


def ce(logits: list[float], label: int) -> float:
    """Cross-entropy of one pixel written out: log(sum exp) - logit of the label."""
    return math.log(sum(math.exp(v) for v in logits)) - logits[label]


def as_logits(pixels: list[list[float]], height: int, width: int) -> torch.Tensor:
    """Pixel-major logit lists -> (1, C, H, W)."""
    return torch.tensor(pixels).T.reshape(1, -1, height, width)


# ---- reliability modes of the single-network loss ----------------------------------------------

PIXELS = [[2.0, 0.0], [0.5, 1.5], [-1.0, 1.0], [0.0, 3.0]]  # row-major (0,0) (0,1) (1,0) (1,1)
TARGET = torch.tensor([[[0, 1], [0, 255]]])
RELIABILITY = torch.tensor([[[1.0, 0.0], [0.5, 1.0]]])
MARGIN = torch.tensor([[[0.2, 2.0], [float("nan"), 0.1]]])
CE0, CE1, CE2 = ce(PIXELS[0], 0), ce(PIXELS[1], 1), ce(PIXELS[2], 0)


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        ("none", (CE0 + CE1 + CE2) / 3),
        ("ignore", (CE0 + CE2) / 2),  # 0.5 >= threshold 0.5: reliable; 0.0 left out of sum + count
        ("weight", (CE0 + 0.3 * CE1 + (0.3 + 0.7 * 0.5) * CE2) / 3),
        ("margin", (0.2 * CE0 + 1.0 * CE1 + 0.0 * CE2) / 3),  # 2.0 clamps to 1, NaN counts 0
    ],
)
def test_reliability_modes_match_hand_computation(mode: str, expected: float) -> None:
    logits = as_logits(PIXELS, 2, 2)
    options = ReliabilityOptions(unreliable_weight=0.3)
    got = reliability_weighted_cross_entropy(
        logits, TARGET, RELIABILITY, mode=mode, margin=MARGIN, options=options
    )
    assert got.item() == pytest.approx(expected, rel=1e-6)


def test_modes_without_maps_are_plain_ce_and_weight_zero_is_legacy() -> None:
    logits = as_logits(PIXELS, 2, 2)
    plain = (CE0 + CE1 + CE2) / 3
    for mode in ("ignore", "weight", "margin"):
        assert reliability_weighted_cross_entropy(logits, TARGET, None, mode=mode).item() == (
            pytest.approx(plain, rel=1e-6)
        )
    legacy = reliability_weighted_cross_entropy(logits, TARGET, RELIABILITY, mode="weight")
    assert legacy.item() == pytest.approx((CE0 + 0.0 * CE1 + 0.5 * CE2) / 3, rel=1e-6)
    with pytest.raises(ValueError, match="unreliable_weight"):
        ReliabilityOptions(unreliable_weight=1.5)
    with pytest.raises(KeyError, match="did you mean margin"):
        reliability_weighted_cross_entropy(logits, TARGET, mode="margn")


def test_segmentation_module_takes_modes_and_margin_from_config() -> None:
    net = FixedLogitsNet(as_logits(PIXELS, 2, 2)[0])
    module = SegmentationModule(
        net=net, num_classes=2, reliability_mode="margin", margin_scale=0.5, log_per_class_iou=False
    )
    module.log = lambda *a, **k: None
    batch = {"image": torch.zeros(1, 3, 2, 2), "mask": TARGET, "margin": MARGIN}
    loss = module.training_step(batch, 0)
    assert loss.item() == pytest.approx((0.4 * CE0 + CE1 + 0.0 * CE2) / 3, rel=1e-6)


# ---- BECO loss ----------------------------------------------------------------------------------

# 1 x 3 pixels, 2 classes. net1 is confident everywhere (> 0.95), net2 nowhere (< 0.9).
NET1 = [[3.0, 0.0], [0.0, 4.0], [5.0, 0.0]]
NET2 = [[1.0, 0.0], [2.0, 0.0], [0.0, 1.0]]
Y = torch.tensor([[[0, 1, 255]]])
M = torch.tensor([[[1.0, 0.0, 0.0]]])
BAND = torch.tensor([[[1.0, 1.0, 0.0]]])


def test_beco_loss_matches_hand_computation() -> None:
    logits = (as_logits(NET1, 1, 3), as_logits(NET2, 1, 3))
    got = co_training_loss(logits, Y, M, BAND, w_hb=0.2, w_lb=0.5, confidence_threshold=0.95)
    supervised = (ce(NET1[0], 0) * 1.2 + ce(NET2[0], 0) * 1.2) / 3  # only pixel 0 is reliable
    # net1 gets nothing from the unconfident net2; net2 learns net1's labels on pixels 1 and 2.
    peer = (ce(NET2[1], 1) * (1 + 0.5 * 1.0) + ce(NET2[2], 0) * (1 + 0.5 * 0.0)) / 3
    assert got.supervised.item() == pytest.approx(supervised, rel=1e-6)
    assert got.peer.item() == pytest.approx(peer, rel=1e-6)
    assert got.total.item() == pytest.approx(supervised + peer, rel=1e-6)
    assert got.peer_coverage.item() == pytest.approx((0.0 + 1.0) / 2)


def test_confidence_threshold_is_respected() -> None:
    logits = (as_logits(NET1, 1, 3), as_logits(NET2, 1, 3))
    keep_all = co_training_loss(logits, Y, M, None, confidence_threshold=0.0)
    peer_all = (
        ce(NET1[1], 0) + ce(NET1[2], 1) + ce(NET2[1], 1) + ce(NET2[2], 0)
    ) / 3  # peer labels: net2 argmax (0, 1) for net1, net1 argmax (1, 0) for net2
    assert keep_all.peer.item() == pytest.approx(peer_all, rel=1e-6)
    # Between net1's confidences 0.982 (pixel 1) and 0.9933 (pixel 2): only pixel 2 stays.
    strict = co_training_loss(logits, Y, M, None, confidence_threshold=0.99)
    assert strict.peer.item() == pytest.approx(ce(NET2[2], 0) / 3, rel=1e-6)
    with pytest.raises(ValueError, match="confidence_threshold"):
        co_training_loss(logits, Y, M, None, confidence_threshold=1.0)


def test_unreliable_pixels_get_only_peer_supervision() -> None:
    logits1 = as_logits(NET1, 1, 3).requires_grad_(True)
    logits2 = as_logits(NET2, 1, 3).requires_grad_(True)
    target = torch.tensor([[[0, 0, 1]]])  # pixel 1/2 labels disagree with net1's argmax
    loss = co_training_loss((logits1, logits2), target, M, None, confidence_threshold=0.0)
    grad1, grad2 = torch.autograd.grad(loss.total, (logits1, logits2))
    # d CE(l, k) / d l = softmax(l) - onehot(k); means over 3 pixels.
    for pixel, peer_label in ((1, 0), (2, 1)):  # net2's argmax on pixels 1, 2
        expected = torch.tensor(NET1[pixel]).softmax(0) - torch.eye(2)[peer_label]
        assert torch.allclose(grad1[0, :, 0, pixel], expected / 3, atol=1e-6)
    # Changing Y on unreliable pixels changes nothing.
    other = co_training_loss(
        (logits1, logits2), torch.tensor([[[0, 1, 0]]]), M, None, confidence_threshold=0.0
    )
    assert other.total.item() == pytest.approx(loss.total.item(), rel=1e-7)
    # net2's own pseudo-label is detached: its gradient on pixel 1 comes from net1's label only.
    expected2 = torch.tensor(NET2[1]).softmax(0) - torch.eye(2)[1]
    assert torch.allclose(grad2[0, :, 0, 1], expected2 / 3, atol=1e-6)
    # Not confident peer -> no gradient at all on unreliable pixels.
    none = co_training_loss((logits1, logits2), target, M, None, confidence_threshold=0.95)
    grad1 = torch.autograd.grad(none.total, logits1)[0]
    assert grad1[0, :, 0, 1:].abs().max().item() == 0.0


def test_reliable_from_map_excludes_ignore_pixels() -> None:
    got = reliable_from_map(torch.tensor([[0.2, 0.5, 1.0]]), torch.tensor([[1, 2, 255]]))
    assert got.tolist() == [[False, True, False]]
    assert reliable_from_map(None, torch.tensor([[1, 255]])).tolist() == [[True, False]]


def test_online_labels_average_logits_in_eval_mode_and_restore_mode() -> None:
    a = FixedLogitsNet(torch.tensor([[[4.0, 0.0]], [[0.0, 0.0]]]))
    b = FixedLogitsNet(torch.tensor([[[2.0, 0.0]], [[0.0, 1.0]]]))
    a.train(), b.eval()
    label, reliable = online_labels((a, b), torch.zeros(1, 3, 1, 2), highres_t=0.95)
    # mean logits: pixel 0 (3, 0) -> p 0.9526 > 0.95; pixel 1 (0, 0.5) -> class 1, p 0.62.
    assert label.tolist() == [[[0, 1]]] and reliable.tolist() == [[[True, False]]]
    assert a.modes_seen == [False] and b.modes_seen == [False]
    assert a.training and not b.training


def test_peer_disagreement_rate_over_valid_pixels() -> None:
    la, lb = as_logits(NET1, 1, 3), as_logits(NET2, 1, 3)  # argmax (0,1,0) vs (0,0,1)
    differ, rate = peer_disagreement(la, lb, torch.tensor([[[True, True, False]]]))
    assert differ.tolist() == [[[False, True, True]]] and rate.item() == pytest.approx(0.5)


# ---- boundary band, copy-paste, augmentation ------------------------------------------------------


def test_boundary_band_on_hand_made_masks() -> None:
    square = torch.zeros(1, 5, 5, dtype=torch.bool)
    square[0, 1:4, 1:4] = True
    band = boundary_band(square)
    expected = torch.ones(5, 5)
    expected[2, 2] = 0.0  # erosion keeps the centre; dilation fills the 5x5 image
    assert torch.equal(band[0], expected)
    # Corner region: the image border counts as foreground for erosion (OpenCV's default).
    corner = torch.zeros(1, 6, 6, dtype=torch.bool)
    corner[0, :2, :2] = True
    band = boundary_band(corner)[0]
    assert band[:3, :3].sum().item() == 8 and band[0, 0].item() == 0.0
    assert band.sum().item() == 8


def _paste_batch() -> dict[str, torch.Tensor]:
    mask = torch.zeros(4, 6, 6, dtype=torch.int64)
    mask[0, :3, :3], mask[0, 3:, 3:] = 1, 2
    mask[1, 1:4, 1:4] = 3
    mask[2, :2, :] = 4
    mask[3, 4:, :2], mask[3, 0, 5] = 5, 255
    index = torch.arange(4 * 3 * 36, dtype=torch.float32).view(4, 3, 6, 6)
    return {
        "image": index,  # every value unique: any misaligned pixel shows
        "mask": mask,
        "reliability": torch.rand(4, 6, 6, generator=torch.Generator().manual_seed(0)),
        "margin": index[:, 0] * 0.01,
        "prompt": ["a", "b", "c", "d"],
    }


def test_copy_paste_keeps_image_mask_and_maps_aligned() -> None:
    batch = _paste_batch()
    out, pasted = copy_paste_halves(batch, p=1.0, generator=torch.Generator().manual_seed(3))
    assert out["prompt"] == batch["prompt"]
    for target, source in ((0, 2), (1, 3), (2, 0), (3, 1)):
        region = pasted[target]
        src_classes = set(torch.unique(batch["mask"][source]).tolist()) - {0, 255}
        pasted_classes = set(torch.unique(batch["mask"][source][region]).tolist())
        assert len(pasted_classes) == math.ceil(len(src_classes) / 2)
        assert pasted_classes <= src_classes
        assert torch.equal(
            region, torch.isin(batch["mask"][source], torch.tensor(list(pasted_classes)))
        )
        for key in ("mask", "reliability", "margin"):
            assert torch.equal(out[key][target][region], batch[key][source][region]), key
            assert torch.equal(out[key][target][~region], batch[key][target][~region]), key
        assert torch.equal(out["image"][target][:, region], batch["image"][source][:, region])
        assert torch.equal(out["image"][target][:, ~region], batch["image"][target][:, ~region])
    unchanged, none = copy_paste_halves(batch, p=0.0)
    assert not none.any() and torch.equal(unchanged["image"], batch["image"])


def test_paste_region_of_background_only_label_is_empty() -> None:
    label = torch.tensor([[0, 255], [0, 0]])
    assert not paste_region(label).any()


def test_strong_augmentation_changes_only_the_image_deterministically() -> None:
    images = torch.randn(3, 3, 8, 8, generator=torch.Generator().manual_seed(0)) * 0.5
    a = strong_photometric_augment(images, generator=torch.Generator().manual_seed(1))
    b = strong_photometric_augment(images, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, b) and a.shape == images.shape and not torch.allclose(a, images)
    off = StrongAugmentConfig(jitter_p=0.0, grey_p=0.0, blur_p=0.0)
    inside = images.clamp(-1.5, 1.5)  # de-normalised pixels stay inside [0, 1]
    assert torch.allclose(strong_photometric_augment(inside, config=off), inside, atol=1e-5)
    grey = StrongAugmentConfig(jitter_p=0.0, grey_p=1.0, blur_p=0.0)
    out = strong_photometric_augment(images, mean=(0, 0, 0), std=(1, 1, 1), config=grey)
    assert torch.allclose(out[:, 0], out[:, 1]) and torch.allclose(out[:, 1], out[:, 2])


# ---- CoTrainingModule -----------------------------------------------------------------------------


def tiny_net_factory(num_classes: int) -> DeepLabV3Plus:
    return DeepLabV3Plus(
        num_classes, "test_resnet", aspp_channels=8, decoder_channels=8, low_level_channels=4
    )


def test_peer_nets_share_architecture_but_not_initialisation() -> None:
    net1, net2 = build_peer_nets(tiny_net_factory, 3, (0, 1))
    again, _ = build_peer_nets(tiny_net_factory, 3, (0, 5))
    assert [n for n, _ in net1.named_parameters()] == [n for n, _ in net2.named_parameters()]
    assert not torch.equal(net1.classifier.weight, net2.classifier.weight)
    assert torch.equal(net1.classifier.weight, again.classifier.weight)  # seeded
    # A built module: the copy keeps the (pretrained) encoder, re-initialises the head.
    built = tiny_net_factory(3)
    same, peer = build_peer_nets(built, 3, (0, 1))
    assert same is built
    assert all(
        torch.equal(a, b)
        for a, b in zip(built.encoder.parameters(), peer.encoder.parameters(), strict=True)
    )
    assert not torch.equal(built.classifier.weight, peer.classifier.weight)


def test_eval_with_average_is_mean_of_both_nets() -> None:
    module = CoTrainingModule(net=tiny_net_factory, num_classes=3, eval_with="average").eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        expected = (module.net(x) + module.net2(x)) / 2
        assert torch.allclose(module(x), expected, atol=1e-6)
        module.eval_with = "net2"
        assert torch.allclose(module(x), module.net2(x))
    with pytest.raises(ValueError, match="eval_with"):
        CoTrainingModule(net=tiny_net_factory, num_classes=3, eval_with="both")


CO_TRAINING_ARGS = [
    "--model=synthmask.lightning_modules.co_training.CoTrainingModule",
    "--data=fixtures_segmentation.TinySegDataModule",
    "--data.init_args.reliability=true",
    *TINY_NET_ARGS,
    "--trainer.accelerator=cpu",
    "--trainer.enable_progress_bar=false",
    "--trainer.enable_model_summary=false",
]


@pytest.mark.parametrize("warmup_epochs", [0, 1])
def test_co_training_fast_dev_run_through_cli(
    warmup_epochs: int, tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.chdir(tmp_path)
    cli = main(
        [
            "fit",
            *CO_TRAINING_ARGS,
            f"--model.init_args.warmup_epochs={warmup_epochs}",
            # random nets are never 95% sure: lower thresholds so online labels / peers count
            "--model.init_args.highres_t=0.3",
            "--model.init_args.confidence_threshold=0.0",
            "--trainer.fast_dev_run=true",
        ]
    )
    model = cli.model
    assert isinstance(model, CoTrainingModule) and model.num_classes == 3
    metrics = cli.trainer.callback_metrics
    assert 0.0 <= float(metrics["val/mIoU"]) <= 1.0
    assert 0.0 <= float(metrics["val/peer_disagreement"]) <= 1.0
    assert float(metrics["train/online_labels"]) == float(warmup_epochs == 0)
    total = float(metrics["train/loss"])
    parts = float(metrics["train/loss_supervised"]) + float(metrics["train/loss_peer"])
    assert total == pytest.approx(parts, rel=1e-5) and total > 0
    stored = model.first_val_batch
    assert stored["disagreement"].shape == stored["confidence"].shape == (2, 32, 32)
    assert stored["reliability"].shape == (2, 32, 32)


@pytest.mark.slow
def test_co_training_ddp_on_two_cpu_processes(tmp_path: Path) -> None:
    out = tmp_path / "checksums"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO / "tests"), os.environ.get("PYTHONPATH", "")]),
        "OMP_NUM_THREADS": "1",
        "WANDB_MODE": "offline",
    }
    args = [
        sys.executable,
        "-m",
        "synthmask",
        "fit",
        *CO_TRAINING_ARGS,
        "--model.init_args.warmup_epochs=1",
        "--data.init_args.train_length=8",
        "--trainer.strategy=ddp",
        "--trainer.devices=2",
        "--trainer.max_epochs=2",
        "--trainer.logger=false",
        "--trainer.enable_checkpointing=false",
        "--trainer.callbacks+=fixtures_robust.ParamChecksumWriter",
        f"--trainer.callbacks.init_args.out_dir={out}",
    ]
    result = subprocess.run(
        args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "final val/mIoU" in result.stdout
    ranks = [json.loads((out / f"rank{k}.json").read_text()) for k in (0, 1)]
    assert ranks[0]["world_size"] == 2
    # DDP keeps both replicas of both nets identical although each rank drew its own pastes.
    for name in ("net", "net2"):
        assert ranks[0][name] == pytest.approx(ranks[1][name], rel=1e-9, abs=1e-9)


def test_foreground_shares_measure_label_collapse() -> None:
    from synthmask.lightning_modules.co_training import foreground_shares

    mask = torch.tensor([[[0, 1, 2, 255], [0, 0, 0, 255]]])  # 6 labelled, 2 foreground
    reliability = torch.tensor([[[1.0, 1.0, 0.0, 1.0], [0.0, 0.0, 1.0, 1.0]]])
    shares = foreground_shares(mask, reliability)
    assert shares["train/label_foreground"].item() == pytest.approx(2 / 6)
    # reliable labelled pixels: (0,0) bg, (0,1) fg, (1,2) bg -> 1 of 3 is foreground
    assert shares["train/reliable_foreground"].item() == pytest.approx(1 / 3)
    collapsed = foreground_shares(torch.zeros(1, 2, 2, dtype=torch.long), torch.ones(1, 2, 2))
    assert collapsed["train/label_foreground"].item() == 0.0
