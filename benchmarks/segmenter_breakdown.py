"""What a shapes-world segmenter's val mIoU is made of: localization vs. naming the shape.

Loads a checkpoint of `synthmask fit` (shapes_synth.yaml / shapes_real.yaml), runs it on the
real val scenes of shapes_real.yaml (300 rendered scenes, exact masks) and prints:
- mIoU (background + 6 shapes, as val/mIoU) and per-class IoU;
- fg_iou: object-vs-background IoU, class ignored (does it find the objects?);
- fg_class_acc: of the object pixels it marks as an object, the share with the right shape
  (does it name them? chance 1/6).

    python benchmarks/segmenter_breakdown.py runs/<experiment>-<run id>/checkpoints/*.ckpt [more.ckpt]

``--through-vae DIR`` first passes the real val images through the VAE of the pipeline in DIR
(encode + decode): how much of a synthetic-trained segmenter's gap is the generator's soft
rendering rather than its masks or shapes.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from synthmask.models.metrics import SegmentationIoU, per_class_iou


def breakdown(cm: np.ndarray) -> dict[str, float]:
    """Figures from a confusion matrix (rows = target, columns = prediction, class 0 = bg).

    Shape:
        cm (C, C) -> dict
    """
    iou = per_class_iou(torch.as_tensor(cm)).numpy()
    cm = cm.astype(np.float64)
    object_pairs = cm[1:, 1:].sum()  # target object, predicted some object
    return {
        "miou": float(np.nanmean(iou)),
        "fg_iou": float(object_pairs / max(cm.sum() - cm[0, 0], 1)),
        "fg_class_acc": float(np.trace(cm[1:, 1:]) / max(object_pairs, 1)),
        "per_class": [round(float(v), 3) for v in iou],
    }


def vae_roundtrip_fn(pipeline_dir: Path):
    """A function mapping normalized images through the pipeline's VAE and back.

    Shape:
        (B, 3, H, W) ImageNet-normalized -> (B, 3, H, W) ImageNet-normalized
    """
    from synthmask.diffusion.pipeline import PipelineConfig, load_pipeline
    from synthmask.diffusion.vae_roundtrip import vae_roundtrip
    from synthmask.training.augment import IMAGENET_MEAN, IMAGENET_STD

    vae = load_pipeline(PipelineConfig(model=str(pipeline_dir))).vae.float()
    mean = torch.tensor(IMAGENET_MEAN)[:, None, None]
    std = torch.tensor(IMAGENET_STD)[:, None, None]

    def roundtrip(images: torch.Tensor) -> torch.Tensor:
        x = vae_roundtrip(vae, (images * std + mean) * 2 - 1).float() / 255.0
        return (x - mean) / std

    return roundtrip


@torch.no_grad()
def evaluate(
    ckpt_path: Path, n_val: int = 300, domain: str = "source", through_vae: Path | None = None
) -> dict:
    """A segmenter checkpoint on the real val scenes of ``domain`` (source: plain backgrounds, the
    val data of shapes_real.yaml / shapes_synth.yaml; target: the shifted domain of
    shapes_target_synth.yaml), split by :func:`breakdown`."""
    from synthmask.datamodules.shapes_world import ShapesWorldDataModule
    from synthmask.models import DeepLabV3Plus
    from synthmask.world import SceneConfig

    ckpt = torch.load(str(ckpt_path), map_location="cpu", weights_only=True)
    hparams = ckpt["hyper_parameters"]
    num_classes = int(hparams["num_classes"])
    net = DeepLabV3Plus(num_classes=num_classes, **hparams["net"]["init_args"])
    net.load_state_dict({k[4:]: v for k, v in ckpt["state_dict"].items() if k.startswith("net.")})
    net.eval()
    scene = SceneConfig(backgrounds=["plain"] if domain == "source" else None)
    data = ShapesWorldDataModule(
        domain=domain, image_size=32, min_objects=1, max_objects=2, scene=scene,
        n_train=16, n_val=n_val, base_seed=0, val_batch_size=50,
    )  # fmt: skip
    data.setup("fit")
    transform = vae_roundtrip_fn(through_vae) if through_vae else (lambda x: x)
    metric = SegmentationIoU(num_classes)  # its confusion matrix leaves ignored targets out
    for batch in data.val_dataloader():
        out = net(transform(batch["image"]))
        metric.update((out["out"] if isinstance(out, dict) else out).argmax(1), batch["mask"])
    cm = metric.confmat.numpy()
    step = int(ckpt["global_step"])
    extra = {"through_vae": str(through_vae)} if through_vae else {}
    return {"checkpoint": str(ckpt_path), "step": step, "domain": domain, **extra, **breakdown(cm)}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("checkpoints", type=Path, nargs="+")
    parser.add_argument("--n-val", type=int, default=300)
    parser.add_argument("--domain", default="source", choices=("source", "target"))
    parser.add_argument("--through-vae", type=Path, help="a pipeline dir: val images via its VAE")
    args = parser.parse_args()
    torch.set_num_threads(1)
    for path in args.checkpoints:
        print(json.dumps(evaluate(path, args.n_val, args.domain, args.through_vae)), flush=True)


if __name__ == "__main__":
    main()
