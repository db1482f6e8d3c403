"""DeepLabV3+, the reliability-weighted loss, the IoU metric and the poly schedule (pure torch)."""

from __future__ import annotations

import math

import pytest
import torch
from torchmetrics.classification import MulticlassJaccardIndex

from synthmask.models import (
    DeepLabSGD,
    DeepLabV3Plus,
    PolyLR,
    SegmentationIoU,
    mean_iou,
    reliability_weighted_cross_entropy,
)

TINY = dict(encoder_name="test_resnet", aspp_channels=8, decoder_channels=8, low_level_channels=4)


@pytest.mark.parametrize("output_stride", [8, 16])
def test_deeplab_output_matches_input_size_and_classes(output_stride: int) -> None:
    torch.manual_seed(0)
    net = DeepLabV3Plus(num_classes=5, output_stride=output_stride, **TINY).eval()
    assert net.encoder.feature_info.reduction()[-1] == output_stride
    assert net.encoder.feature_info.reduction()[net.low_index] == 4
    with torch.no_grad():
        logits = net(torch.randn(2, 3, 37, 50))
    assert logits.shape == (2, 5, 37, 50)
    assert torch.isfinite(logits).all()


def test_deeplab_default_dilations_follow_output_stride() -> None:
    net8 = DeepLabV3Plus(num_classes=2, output_stride=8, **TINY)
    net16 = DeepLabV3Plus(num_classes=2, output_stride=16, aspp_dilations=[2, 3], **TINY)
    dil8 = [b[0].dilation[0] for b in net8.aspp.branches[1:]]
    dil16 = [b[0].dilation[0] for b in net16.aspp.branches[1:]]
    assert dil8 == [12, 24, 36]
    assert dil16 == [2, 3]


def test_deeplab_trains_with_batch_of_one() -> None:
    net = DeepLabV3Plus(num_classes=3, **TINY).train()
    loss = net(torch.randn(1, 3, 32, 32)).mean()
    loss.backward()
    assert net.classifier.weight.grad is not None


def test_unknown_encoder_lists_close_matches() -> None:
    with pytest.raises(KeyError, match="resnet101") as info:
        DeepLabV3Plus(num_classes=3, encoder_name="resnet1O1")
    assert "close matches" in str(info.value)


def test_bad_output_stride_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="output_stride must be 8 or 16"):
        DeepLabV3Plus(num_classes=3, output_stride=32, **TINY)


def _ce(logit_row: list[float], target: int) -> float:
    return -math.log(math.exp(logit_row[target]) / sum(math.exp(v) for v in logit_row))


def test_weighted_ce_matches_hand_computation() -> None:
    # 1x2x2 image, 2 classes; pixel (1,1) is ignored.
    logits = torch.tensor([[[[2.0, 0.0], [1.0, 0.5]], [[0.0, 1.0], [1.0, -0.5]]]])
    target = torch.tensor([[[0, 1], [1, 255]]])
    weight = torch.tensor([[[1.0, 0.5], [0.0, 1.0]]])
    ce = [_ce([2.0, 0.0], 0), _ce([0.0, 1.0], 1), _ce([1.0, 1.0], 1)]
    expected_weighted = (1.0 * ce[0] + 0.5 * ce[1] + 0.0 * ce[2]) / 3  # 3 non-ignored pixels
    got = reliability_weighted_cross_entropy(logits, target, weight, mode="weight")
    assert got.item() == pytest.approx(expected_weighted, rel=1e-6)
    got_none = reliability_weighted_cross_entropy(logits, target, weight, mode="none")
    assert got_none.item() == pytest.approx(sum(ce) / 3, rel=1e-6)
    # No map = every pixel weighs 1, whatever the mode.
    got_no_map = reliability_weighted_cross_entropy(logits, target, None, mode="weight")
    assert got_no_map.item() == pytest.approx(sum(ce) / 3, rel=1e-6)


def test_zero_weight_pixels_get_zero_gradient() -> None:
    torch.manual_seed(0)
    logits = torch.randn(2, 4, 5, 6, requires_grad=True)
    target = torch.randint(0, 4, (2, 5, 6))
    target[0, 0, :] = 255
    weight = torch.rand(2, 5, 6) + 0.1
    weight[1, 2:4, 1:3] = 0.0
    reliability_weighted_cross_entropy(logits, target, weight).backward()
    grad_norm = logits.grad.abs().sum(dim=1)  # (B, H, W)
    assert (grad_norm[1, 2:4, 1:3] == 0).all()
    assert (grad_norm[0, 0, :] == 0).all()  # ignored pixels too
    assert (grad_norm[weight > 0] > 0)[target[weight > 0] != 255].all()


def test_all_ignored_batch_gives_zero_loss_with_grad() -> None:
    logits = torch.randn(1, 3, 2, 2, requires_grad=True)
    loss = reliability_weighted_cross_entropy(logits, torch.full((1, 2, 2), 255))
    loss.backward()
    assert loss.item() == 0.0 and logits.grad is not None


def test_unknown_reliability_mode_lists_valid_modes() -> None:
    with pytest.raises(KeyError, match="valid modes"):
        reliability_weighted_cross_entropy(
            torch.zeros(1, 2, 1, 1), torch.zeros(1, 1, 1, dtype=torch.long), mode="wieght"
        )


def test_reliability_shape_mismatch_is_reported() -> None:
    with pytest.raises(ValueError, match="reliability map shape"):
        reliability_weighted_cross_entropy(
            torch.zeros(1, 2, 2, 2), torch.zeros(1, 2, 2, dtype=torch.long), torch.ones(1, 3, 3)
        )


def test_iou_on_hand_made_prediction() -> None:
    # 4 classes; class 3 never occurs (NaN, skipped by the mean); 255 pixels do not count.
    target = torch.tensor([[[0, 0, 0, 1], [1, 1, 2, 255]]])
    preds = torch.tensor([[[0, 0, 1, 1], [1, 2, 2, 3]]])
    # class 0: tp 2, fp 0, fn 1 -> 2/3 ; class 1: tp 2, fp 1, fn 1 -> 2/4
    # class 2: tp 1, fp 1, fn 0 -> 1/2 ; class 3: no target, predicted only on an ignored pixel
    metric = SegmentationIoU(num_classes=4)
    metric.update(preds[:, :1], target[:, :1])  # two updates accumulate like one
    metric.update(preds[:, 1:], target[:, 1:])
    per_class = metric.compute()
    assert per_class[:3].tolist() == pytest.approx([2 / 3, 1 / 2, 1 / 2])
    assert math.isnan(per_class[3])
    assert mean_iou(per_class).item() == pytest.approx((2 / 3 + 1 / 2 + 1 / 2) / 3)
    macro = MulticlassJaccardIndex(4, ignore_index=255, average="macro")(preds, target)
    assert mean_iou(per_class).item() == pytest.approx(macro.item())


def test_poly_lr_decays_to_floor() -> None:
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = DeepLabSGD([param])
    assert optimizer.defaults["lr"] == 0.01 and optimizer.defaults["momentum"] == 0.9
    assert optimizer.defaults["weight_decay"] == 1e-4
    scheduler = PolyLR(optimizer, total_steps=10, power=0.9, min_lr=1e-5)
    lrs = [optimizer.param_groups[0]["lr"]]
    for _ in range(12):
        optimizer.step()
        scheduler.step()
        lrs.append(optimizer.param_groups[0]["lr"])
    assert lrs[0] == pytest.approx(0.01)
    assert lrs[5] == pytest.approx((0.01 - 1e-5) * 0.5**0.9 + 1e-5)
    assert lrs[10] == pytest.approx(1e-5) and lrs[12] == pytest.approx(1e-5)


def test_poly_lr_without_horizon_raises_after_first_step() -> None:
    optimizer = DeepLabSGD([torch.nn.Parameter(torch.zeros(1))])
    scheduler = PolyLR(optimizer)
    optimizer.step()
    with pytest.raises(ValueError, match="total_steps is unset"):
        scheduler.step()
