"""DeepLabV3+ (Chen et al., ECCV 2018) on any timm encoder that supports ``features_only``."""

from __future__ import annotations

import difflib
from collections.abc import Sequence

import timm
import torch
import torch.nn.functional as F
from torch import nn

# ASPP rates of the DeepLabV3+ paper: (6, 12, 18) at output stride 16, doubled at output stride 8.
DEFAULT_ASPP_DILATIONS: dict[int, tuple[int, ...]] = {16: (6, 12, 18), 8: (12, 24, 36)}


def check_encoder_name(name: str) -> None:
    """Raise KeyError naming close matches when ``name`` is not a timm architecture."""
    if timm.is_model(name):
        return
    close = difflib.get_close_matches(name, timm.list_models(), n=8, cutoff=0.6)
    hint = f"close matches: {', '.join(close)}" if close else "see timm.list_models() for names"
    raise KeyError(f"unknown timm encoder {name!r}; {hint}. Set model.init_args.net.encoder_name.")


def _conv_bn_relu(in_ch: int, out_ch: int, kernel: int = 1, dilation: int = 1) -> nn.Sequential:
    padding = 0 if kernel == 1 else dilation * (kernel // 2)
    return nn.Sequential(
        nn.Conv2d(in_ch, out_ch, kernel, padding=padding, dilation=dilation, bias=False),
        nn.BatchNorm2d(out_ch),
        nn.ReLU(inplace=True),
    )


class ASPP(nn.Module):
    """Atrous spatial pyramid pooling: 1x1 conv, one 3x3 conv per dilation, image pooling.

    Shape:
        input (B, in_channels, h, w) -> output (B, out_channels, h, w)
    """

    def __init__(
        self, in_channels: int, out_channels: int, dilations: Sequence[int], dropout: float = 0.1
    ) -> None:
        super().__init__()
        branches = [_conv_bn_relu(in_channels, out_channels, 1)]
        branches += [_conv_bn_relu(in_channels, out_channels, 3, d) for d in dilations]
        self.branches = nn.ModuleList(branches)
        # No BatchNorm after global pooling (unlike torchvision): a pooled 1x1 map with batch 1 per
        # device has a single value per channel and BatchNorm raises in training mode.
        self.image_pool = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Conv2d(in_channels, out_channels, 1, bias=False),
            nn.ReLU(inplace=True),
        )
        self.project = nn.Sequential(
            _conv_bn_relu(out_channels * (len(branches) + 1), out_channels, 1),
            nn.Dropout(dropout),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outs = [branch(x) for branch in self.branches]
        pooled = self.image_pool(x).expand(-1, -1, x.shape[-2], x.shape[-1])
        return self.project(torch.cat([*outs, pooled], dim=1))


class DeepLabV3Plus(nn.Module):
    """DeepLabV3+ segmenter: timm encoder, ASPP on the deepest features, decoder with stride-4 skip.

    Args:
        num_classes: output channels (classes incl. background).
        encoder_name: any timm architecture that supports ``features_only`` and ``output_stride``
            (``resnet101`` for paper runs; ``test_resnet``/``resnet18`` in tests).
        pretrained: load timm's ImageNet weights (needs the weights cached or network access).
        output_stride: 8 or 16, the stride of the deepest features (dilated later stages).
        aspp_dilations: ASPP rates; default (6, 12, 18) at OS 16 and (12, 24, 36) at OS 8.
        aspp_channels: width of ASPP branches and of its projection.
        decoder_channels: width of the decoder's 3x3 convolutions.
        low_level_channels: width the stride-4 skip features are reduced to (48 in the paper).

    Shape:
        input (B, 3, H, W) float -> logits (B, num_classes, H, W), bilinear-upsampled to input size.
    """

    def __init__(
        self,
        num_classes: int,
        encoder_name: str = "resnet101",
        pretrained: bool = False,
        output_stride: int = 16,
        aspp_dilations: Sequence[int] | None = None,
        aspp_channels: int = 256,
        decoder_channels: int = 256,
        low_level_channels: int = 48,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        if output_stride not in DEFAULT_ASPP_DILATIONS:
            raise ValueError(f"output_stride must be 8 or 16, got {output_stride}")
        check_encoder_name(encoder_name)
        self.num_classes = num_classes
        self.output_stride = output_stride
        self.encoder = timm.create_model(
            encoder_name, features_only=True, pretrained=pretrained, output_stride=output_stride
        )
        channels = self.encoder.feature_info.channels()
        reductions = self.encoder.feature_info.reduction()
        self.high_index = len(channels) - 1
        self.low_index = _low_level_index(reductions, encoder_name)
        dilations = tuple(aspp_dilations or DEFAULT_ASPP_DILATIONS[output_stride])
        self.aspp = ASPP(channels[self.high_index], aspp_channels, dilations, dropout)
        self.low_level_project = _conv_bn_relu(channels[self.low_index], low_level_channels, 1)
        self.decoder = nn.Sequential(
            _conv_bn_relu(aspp_channels + low_level_channels, decoder_channels, 3),
            _conv_bn_relu(decoder_channels, decoder_channels, 3),
        )
        self.classifier = nn.Conv2d(decoder_channels, num_classes, 1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        features = self.encoder(images)
        high = self.aspp(features[self.high_index])
        low = self.low_level_project(features[self.low_index])
        high = F.interpolate(high, size=low.shape[-2:], mode="bilinear", align_corners=False)
        logits = self.classifier(self.decoder(torch.cat([high, low], dim=1)))
        return F.interpolate(logits, size=images.shape[-2:], mode="bilinear", align_corners=False)


def _low_level_index(reductions: Sequence[int], encoder_name: str) -> int:
    """Index of the stride-4 feature map (or the finest one above stride 2 if none is exactly 4)."""
    candidates = [i for i, r in enumerate(reductions) if r >= 4]
    if not candidates or candidates[0] == len(reductions) - 1:
        raise ValueError(
            f"encoder {encoder_name!r} has feature strides {list(reductions)}; DeepLabV3+ needs a "
            "stride-4 feature map below the deepest one. Pick a CNN encoder (e.g. resnet50)."
        )
    return candidates[0]
