"""SegmentationModule: loss wiring, hand-computed mIoU, class-count checks, poly schedule."""

from __future__ import annotations

import warnings

import pytest
import torch
from fixtures_segmentation import ConstantLogitsNet, TinySegDataModule
from lightning.pytorch import LightningDataModule, Trainer
from torch.utils.data import DataLoader

from synthmask.lightning_modules import segmentation as segmentation_module
from synthmask.lightning_modules.segmentation import SegmentationModule
from synthmask.models import DeepLabV3Plus, PolyLR
from synthmask.training.augment import IMAGENET_MEAN, IMAGENET_STD, StrongAugmentConfig


def _trainer(**kwargs) -> Trainer:
    defaults = dict(
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    return Trainer(**(defaults | kwargs))


class HandMadeData(LightningDataModule):
    """Two 2x4 validation masks (3 classes + ignore)."""

    num_classes = 3
    class_names = ["background", "cat", "dog"]

    def __init__(self, masks: torch.Tensor) -> None:
        super().__init__()
        self.items = [{"image": torch.zeros(3, 2, 4), "mask": m} for m in masks]

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.items, batch_size=1, shuffle=False)


def test_validation_miou_equals_hand_computed_value() -> None:
    masks = torch.tensor(
        [
            [[0, 0, 1, 1], [0, 2, 2, 255]],
            [[0, 0, 0, 0], [1, 1, 255, 255]],
        ]
    )
    pred = torch.tensor([[0, 1, 1, 1], [0, 2, 0, 2]])  # the net predicts this for every image
    net = ConstantLogitsNet(num_classes=3, height=2, width=4)
    with torch.no_grad():
        net.logits.copy_(torch.nn.functional.one_hot(pred, 3).permute(2, 0, 1)[None].float())
    module = SegmentationModule(net=net, num_classes=3, class_names=HandMadeData.class_names)
    _trainer().validate(module, datamodule=HandMadeData(masks), verbose=False)
    # (target, pred) pairs, 255 skipped:
    #   image 1: (0,0) (0,1) (1,1) (1,1) / (0,0) (2,2) (2,0)
    #   image 2: (0,0) (0,1) (0,1) (0,1) / (1,0) (1,2)
    # class 0: tp 3, fn 4, fp 2 -> 3/9 ; class 1: tp 2, fn 2, fp 4 -> 2/8
    # class 2: tp 1, fn 1, fp 1 -> 1/3
    expected = {"background": 3 / 9, "cat": 2 / 8, "dog": 1 / 3}
    metrics = module.trainer.callback_metrics
    for name, value in expected.items():
        assert metrics[f"val/IoU/{name}"].item() == pytest.approx(value, rel=1e-6)
    assert metrics["val/mIoU"].item() == pytest.approx(sum(expected.values()) / 3, rel=1e-6)
    assert module.last_val_iou.tolist() == pytest.approx(list(expected.values()))
    stored = module.first_val_batch
    assert torch.equal(stored["pred"][0], pred) and torch.equal(stored["mask"][0], masks[0])


def test_zero_reliability_pixels_get_zero_gradient_through_training_step() -> None:
    torch.manual_seed(0)
    net = ConstantLogitsNet(num_classes=3, height=4, width=4)
    with torch.no_grad():
        net.logits.normal_()
    module = SegmentationModule(net=net, num_classes=3, reliability_mode="weight")
    reliability = torch.ones(2, 4, 4)
    reliability[:, 1:3, 1:3] = 0.0
    batch = {
        "image": torch.zeros(2, 3, 4, 4),
        "mask": torch.randint(0, 3, (2, 4, 4)),
        "reliability": reliability,
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # self.log without a trainer
        module.training_step(batch, 0).backward()
    grad = net.logits.grad[0].abs().sum(0)  # (H, W), summed over the batch by expand
    assert (grad[1:3, 1:3] == 0).all()
    assert (grad[0, :] > 0).all()
    # mode "none" ignores the map: the same pixels now receive gradient.
    net.logits.grad = None
    module_none = SegmentationModule(net=net, num_classes=3, reliability_mode="none")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        module_none.training_step(batch, 0).backward()
    assert (net.logits.grad[0].abs().sum(0)[1:3, 1:3] > 0).all()


def test_net_and_module_class_counts_must_match() -> None:
    net = DeepLabV3Plus(num_classes=3, encoder_name="test_resnet", aspp_channels=8)
    with pytest.raises(ValueError, match="outputs 3 classes.*num_classes is 5"):
        SegmentationModule(net=net, num_classes=5)


def test_data_and_model_class_counts_must_match() -> None:
    module = SegmentationModule(net=ConstantLogitsNet(4, 32, 32), num_classes=4)
    with pytest.raises(ValueError, match="data module has 3 classes.*num_classes=4"):
        _trainer().validate(module, datamodule=TinySegDataModule(num_classes=3), verbose=False)


def test_net_without_num_classes_attribute_is_checked_at_forward() -> None:
    net = torch.nn.Conv2d(3, 2, 1)
    module = SegmentationModule(net=net, num_classes=3)
    with pytest.raises(ValueError, match="produced 2 output channels but num_classes is 3"):
        module(torch.zeros(1, 3, 4, 4))


def test_class_names_length_must_match() -> None:
    with pytest.raises(ValueError, match="class_names has 2 entries but num_classes is 3"):
        SegmentationModule(net=ConstantLogitsNet(3, 2, 2), num_classes=3, class_names=["a", "b"])


def test_fit_runs_poly_schedule_over_all_steps() -> None:
    torch.manual_seed(0)
    net = DeepLabV3Plus(
        num_classes=3, encoder_name="test_resnet", aspp_channels=8, decoder_channels=8
    )
    module = SegmentationModule(net=net, num_classes=3)
    data = TinySegDataModule(num_classes=3, size=32, train_length=4, batch_size=2, reliability=True)
    trainer = _trainer(max_epochs=2, limit_val_batches=1, num_sanity_val_steps=0)
    trainer.fit(module, datamodule=data)
    scheduler = trainer.lr_scheduler_configs[0].scheduler
    assert isinstance(scheduler, PolyLR) and scheduler.total_steps == 4
    optimizer = trainer.optimizers[0]
    assert optimizer.defaults["lr"] == 0.01 and optimizer.defaults["momentum"] == 0.9
    assert optimizer.param_groups[0]["lr"] == pytest.approx(1e-5)  # 4 of 4 steps done
    assert 0.0 <= trainer.callback_metrics["val/mIoU"].item() <= 1.0
    assert module.first_val_batch["reliability"].shape == (2, 32, 32)


class InputRecordingNet(torch.nn.Module):
    """Constant logits; keeps the images it was called with."""

    num_classes = 3

    def __init__(self) -> None:
        super().__init__()
        self.logits = torch.nn.Parameter(torch.zeros(1, 3, 4, 4))
        self.inputs: list[torch.Tensor] = []

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        self.inputs.append(images.detach().clone())
        return self.logits.expand(images.shape[0], -1, -1, -1)


def test_strong_augment_changes_training_images_only() -> None:
    torch.manual_seed(0)
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    images = (torch.rand(8, 3, 32, 32) - mean) / std  # normalised pixels; blur kernels reach 13 px
    batch = {"image": images.clone(), "mask": torch.randint(0, 3, (8, 4, 4))}
    plain, strong = InputRecordingNet(), InputRecordingNet()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # self.log without a trainer
        SegmentationModule(net=plain, num_classes=3).training_step(batch, 0)
        module = SegmentationModule(net=strong, num_classes=3, strong_augment=True)
        module.training_step(batch, 0)
        module.validation_step(batch, 0)
    assert torch.equal(plain.inputs[0], images)
    augmented, validated = strong.inputs
    assert augmented.shape == images.shape and not torch.allclose(augmented, images, atol=1e-3)
    # per sample: colour jitter (p 0.8) or blur (p 0.5) leave few samples untouched
    changed = (augmented - images).flatten(1).abs().amax(1) > 1e-3
    assert changed.sum() >= 6
    assert torch.equal(validated, images) and torch.equal(batch["image"], images)
    # a config with every transform off leaves the images as they are
    off = InputRecordingNet()
    config = StrongAugmentConfig(jitter_p=0.0, grey_p=0.0, blur_p=0.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        SegmentationModule(
            net=off, num_classes=3, strong_augment=True, strong_augment_config=config
        ).training_step(batch, 0)
    torch.testing.assert_close(off.inputs[0], images, atol=1e-5, rtol=0)


def test_copy_paste_puts_each_partner_object_with_its_label_into_training() -> None:
    """Two single-object samples (class 1 left, class 2 right): with p = 1 each receives the
    other's object, image and mask alike, and the loss sees the pasted labels."""
    images = torch.zeros(2, 3, 4, 4)
    masks = torch.zeros(2, 4, 4, dtype=torch.long)
    images[0, :, :, :2], masks[0, :, :2] = 1.0, 1
    images[1, :, :, 2:], masks[1, :, 2:] = 2.0, 2
    batch = {"image": images, "mask": masks, "reliability": torch.ones(2, 4, 4)}
    seen_masks: list[torch.Tensor] = []
    net = InputRecordingNet()
    module = SegmentationModule(net=net, num_classes=3, reliability_mode="ignore", copy_paste_p=1.0)
    loss_fn = segmentation_module.reliability_weighted_cross_entropy

    def recording_loss(logits, mask, *args, **kwargs):
        seen_masks.append(mask.clone())
        return loss_fn(logits, mask, *args, **kwargs)

    with pytest.MonkeyPatch.context() as patch, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # self.log without a trainer
        patch.setattr(segmentation_module, "reliability_weighted_cross_entropy", recording_loss)
        module.training_step(batch, 0)
    both = torch.tensor([[1, 1, 2, 2]] * 4)
    assert torch.equal(seen_masks[0], torch.stack([both, both]))
    assert torch.equal(net.inputs[0][:, 0], torch.stack([both, both]).float())
    assert torch.equal(batch["mask"], masks)  # the loader's batch is left as it was
    plain = InputRecordingNet()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        SegmentationModule(net=plain, num_classes=3).training_step(batch, 0)
    assert torch.equal(plain.inputs[0], images)  # off by default
    with pytest.raises(ValueError, match="copy_paste_p=1.5"):
        SegmentationModule(net=plain, num_classes=3, copy_paste_p=1.5)
