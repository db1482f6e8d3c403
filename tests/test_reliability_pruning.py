"""Robust training, data side: per-sample reliability statistics and pruning (also
wired into SyntheticSegDataModule), and the W&B reliability media callback."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from lightning.pytorch.loggers import WandbLogger

from synthmask.callbacks.reliability_media import (
    ReliabilityMediaLogger,
    heat_colors,
    heatmap_panels,
)
from synthmask.training import (
    SampleReliabilityStats,
    sample_reliability_stats,
    select_reliable_samples,
)

# ---- pruning --------------------------------------------------------------------------------------


def test_sample_stats_and_per_class_selection() -> None:
    masks = torch.tensor([[[1, 1], [0, 255]], [[2, 2], [2, 0]], [[1, 0], [0, 0]], [[2, 0], [0, 0]]])
    margins = torch.tensor(
        [
            [[0.2, 0.4], [0.9, 0.0]],
            [[0.8, 0.8], [0.5, 0.1]],
            [[0.9, 0.1], [0.1, 0.1]],
            [[0.1, 0], [0, 0]],
        ]
    )
    reliability = torch.tensor(
        [[[1, 0], [1, 1]], [[1, 1], [0, 0]], [[1, 0], [0, 0]], [[0, 0], [0, 0]]]
    )
    stats = sample_reliability_stats(masks, margins, reliability.float(), num_classes=3)
    assert stats.pixel_count.tolist() == [[1, 2, 0], [1, 0, 3], [3, 1, 0], [3, 0, 1]]
    assert stats.mean_margin[0, 1].item() == pytest.approx(0.3)
    assert math.isnan(stats.mean_margin[0, 2].item())
    assert stats.reliable_fraction[1, 2].item() == pytest.approx(2 / 3)
    # scores (foreground only): 0.3, 0.7, 0.9, 0.1. Groups by dominant class: {0, 2} (circle-ish 1),
    # {1, 3} (class 2). share 0.5 drops the worst of each group.
    assert select_reliable_samples(stats, 0.5).tolist() == [1, 2]
    # Globally the two worst are 3 (0.1) and 0 (0.3).
    assert select_reliable_samples(stats, 0.5, per_class=False).tolist() == [1, 2]
    assert select_reliable_samples(stats, 0.25, per_class=False).tolist() == [0, 1, 2]
    # reliable-fraction score: 0.5, 2/3, 1.0, 0.0 -> per class drops 0 and 3 as well.
    assert select_reliable_samples(stats, 0.5, score="reliable_fraction").tolist() == [1, 2]
    assert select_reliable_samples(stats, 0.0).tolist() == [0, 1, 2, 3]
    with pytest.raises(ValueError, match="share"):
        select_reliable_samples(stats, 1.0)
    with pytest.raises(KeyError, match="valid scores"):
        select_reliable_samples(stats, 0.1, score="margins")
    assert len(SampleReliabilityStats.concat([stats, stats])) == 8


# ---- reliability media callback -------------------------------------------------------------------


class RecordingWandbLogger(WandbLogger):
    """A WandbLogger that records log_image calls instead of starting a run."""

    def __init__(self) -> None:  # no super().__init__: nothing is started
        self.calls: list[tuple[str, list, dict]] = []

    @property
    def experiment(self):
        return SimpleNamespace(define_metric=lambda *args, **kwargs: None)

    def log_image(self, key: str, images: list, step=None, **kwargs) -> None:
        self.calls.append((key, images, kwargs))


def _fake_trainer(loggers: list) -> SimpleNamespace:
    return SimpleNamespace(
        is_global_zero=True,
        loggers=loggers,
        sanity_checking=False,
        fast_dev_run=False,
        current_epoch=0,
        global_step=7,
        datamodule=None,
    )


def test_heat_colors_and_panels() -> None:
    got = heat_colors(np.array([[0.0, 1 / 3, 1.0, 2.0, np.nan]]))
    assert got[0].tolist() == [
        [0, 0, 4],
        [120, 28, 109],
        [252, 255, 164],
        [252, 255, 164],
        [0, 0, 4],
    ]
    stored = {"image": torch.zeros(1, 3, 4, 5), "reliability": torch.ones(1, 4, 5)}
    stored["margin"] = torch.full((1, 4, 5), 0.5)
    strip, names = heatmap_panels(stored, 0, (0, 0, 0), (1, 1, 1))
    assert strip.shape == (4, 15, 3) and names == ["image", "reliability", "margin"]
    assert strip[0, 5].tolist() == [252, 255, 164] and strip[0, 10].tolist() == [252, 255, 164]


def test_reliability_media_logger_logs_heatmaps_and_disagreement_and_warns_once() -> None:
    module = SimpleNamespace(
        class_names=["background", "a", "b"],
        first_val_batch={
            "image": torch.zeros(3, 3, 4, 4),
            "mask": torch.zeros(3, 4, 4, dtype=torch.int64),
            "pred": torch.ones(3, 4, 4, dtype=torch.int64),
            "confidence": torch.rand(3, 4, 4),
            "disagreement": torch.zeros(3, 4, 4),
        },
    )
    logger = RecordingWandbLogger()
    callback = ReliabilityMediaLogger(max_images=2)
    callback.on_validation_end(_fake_trainer([logger]), module)
    (key1, strips, kw1), (key2, images, kw2) = logger.calls
    assert key1 == "val/reliability/heatmaps" and len(strips) == 2
    assert strips[0].shape == (4, 12, 3) and "confidence | disagreement" in kw1["caption"][0]
    assert key2 == "val/reliability/disagreement" and len(images) == 2
    assert set(kw2["masks"][0]) == {"ground_truth", "prediction", "disagreement"}
    quiet = ReliabilityMediaLogger()
    with pytest.warns(UserWarning, match="no WandbLogger") as record:
        quiet.on_validation_end(_fake_trainer([]), module)
        quiet.on_validation_end(_fake_trainer([]), module)
    assert len(record) == 1


# ---- pruning wired into the synthetic data module -------------------------------------------------


# slow: synthesis with the tiny pipeline; the CLI test of voc_synth_beco prunes by default.
@pytest.mark.slow
def test_synthetic_data_module_prunes_least_reliable_samples(tmp_path) -> None:
    from synthmask.datamodules.settings import (
        AugmentConfig,
        LoaderConfig,
        PruningConfig,
        SynthesisConfig,
    )
    from synthmask.datamodules.synthetic import SyntheticSegDataModule
    from synthmask.diffusion.pipeline import PipelineConfig
    from synthmask.diffusion.tiny import build_tiny_pipeline
    from synthmask.synthesis_plan import PromptConfig

    tiny_pipeline_dir = tmp_path / "pipe"  # latent 16, image 32
    build_tiny_pipeline(tiny_pipeline_dir, sample_size=16, text_layers=1)
    dm = SyntheticSegDataModule(
        pipeline=PipelineConfig(model=str(tiny_pipeline_dir), num_inference_steps=2),
        prompts=PromptConfig(classes=["cat", "dog"]),
        synthesis=SynthesisConfig(
            num_images=4, batch_size=4, cache_dir=str(tmp_path / "cache"), progress=False
        ),
        loader=LoaderConfig(batch_size=2),
        augment=AugmentConfig(crop_size=32, scale_range=(1.0, 1.0), hflip_prob=0.0),
        pruning=PruningConfig(share=0.5, per_class=False),
    )
    dataset = dm.train_dataloader().dataset
    assert len(dataset) == 2
    # Independent check: mean margin over each record's foreground (background if it has none).
    scores = []
    for record in dm._train.records(range(4)):
        margin = np.nan_to_num(record.margin.astype(np.float64), posinf=1.0)
        foreground = (record.mask != 0) & (record.mask != 255)
        region = foreground if foreground.any() else record.mask == 0
        scores.append(margin[region].mean())
    assert sorted(dataset.indices) == sorted(np.argsort(scores, kind="stable")[2:].tolist())
    with pytest.raises(ValueError, match=r"pruning\.share=1\.0; use a fraction in \[0, 1\)"):
        SyntheticSegDataModule(
            pipeline=PipelineConfig(model=str(tiny_pipeline_dir)),
            synthesis=SynthesisConfig(cache_dir=str(tmp_path / "c2")),
            pruning=PruningConfig(share=1.0),
        )
