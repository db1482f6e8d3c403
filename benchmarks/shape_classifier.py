"""A small CNN that names the shape of a single-object 32 px shapes-world scene.

Trained on *real* rendered scenes (plain backgrounds, one object); ``benchmarks/ldm_quality.py``,
``prompt_wording.py`` and ``ablation_robust_ldm.py`` use it to check that generated images show
the prompted class. The weights (~0.4 MB of safetensors) ship in ``benchmarks/assets/
shape_classifier/`` with ``classifier.json`` (recipe, accuracies); this command regenerates them:

    python benchmarks/shape_classifier.py --vae synthmask/assets/shapes_ldm

The default recipe, ``--augment degrade --steps 2000``, trains on real scenes seen through
random blur, down/up-sampling, colour jitter and noise, so that a softly rendered but clearly
shaped object is still named (the ``--augment mild`` recipe of the first fidelity figures, 800
steps, names only ~83% of the first VAE's own round-trips of real scenes). ``--vae`` records the
accuracy on such round-trips in classifier.json: the instrument's ceiling for generated images.
A missing classifier is trained with the default recipe on first use (~8 CPU minutes).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from synthmask.world import SceneConfig, render_scene
from synthmask.world.shapes import DEFAULT_SHAPES

WEIGHTS = "shape_classifier.safetensors"
# The shipped classifier (in the repository, so every clone measures with the same instrument).
DEFAULT_DIR = Path(__file__).resolve().parent / "assets" / "shape_classifier"
DEFAULT_STEPS = 2000
DEFAULT_AUGMENT = "degrade"


def single_object_config(image_size: int = 32) -> SceneConfig:
    """Scenes the classifier learns: one object on a plain background (the LDM's world)."""
    return SceneConfig(image_size=image_size, min_objects=1, max_objects=1, backgrounds=("plain",))


class ShapeClassifier(nn.Module):
    """conv-relu-pool x3 + linear; logits over the K shapes (no background class).

    Shape:
        (B, 3, 32, 32) float in [-1, 1] -> (B, K)
    """

    def __init__(self, num_shapes: int = len(DEFAULT_SHAPES), width: int = 32) -> None:
        super().__init__()
        w = width
        self.features = nn.Sequential(
            nn.Conv2d(3, w, 3, padding=1), nn.ReLU(), nn.Conv2d(w, w, 3, padding=1), nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(w, 2 * w, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(2 * w, 4 * w, 3, padding=1), nn.ReLU(), nn.AdaptiveMaxPool2d(1),
        )  # fmt: skip
        self.head = nn.Linear(4 * w, num_shapes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).flatten(1))


def render_batch(seeds: range, config: SceneConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """Images in [-1, 1] and shape indices (class_id - 1) of single-object scenes.

    Shape:
        -> (N, 3, H, W) float32, (N,) int64
    """
    scenes = [render_scene(s, config, "source") for s in seeds]
    images = np.stack([s.image for s in scenes])
    labels = [s.prompt.class_words[0].class_id - 1 for s in scenes]
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1.0
    return x, torch.tensor(labels)


def augment(x: torch.Tensor) -> torch.Tensor:
    """Mild blur/noise so generated (softer) images are not out of distribution."""
    if torch.rand(()) < 0.5:
        x = F.avg_pool2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), 3, stride=1) * 0.5 + x * 0.5
    return (x + 0.05 * torch.randn_like(x)).clamp(-1, 1)


def degrade(x: torch.Tensor) -> torch.Tensor:
    """Per image, a random mix of what a small VAE/denoiser does to a scene: Gaussian blur
    (sigma 0-1.2 px), a 2x down/up-sampling, a contrast/brightness change and pixel noise.

    Shape:
        (B, 3, H, W) in [-1, 1] -> (B, 3, H, W) in [-1, 1]
    """
    b, _, h, w = x.shape
    sigma = torch.rand(b) * 1.2
    radius = torch.arange(-3, 4, dtype=x.dtype)
    kernel = torch.exp(-(radius[None] ** 2) / (2 * sigma[:, None].clamp_min(1e-3) ** 2))
    kernel = (kernel / kernel.sum(1, keepdim=True)).repeat_interleave(3, 0)  # (3B, 7)
    flat = F.pad(x.reshape(1, 3 * b, h, w), (3, 3, 3, 3), mode="replicate")
    flat = F.conv2d(flat, kernel[:, None, None, :], groups=3 * b)
    x = F.conv2d(flat, kernel[:, None, :, None], groups=3 * b).reshape(b, 3, h, w)
    down = torch.rand(b) < 0.3
    if down.any():
        small = F.interpolate(x[down], scale_factor=0.5, mode="bilinear", antialias=True)
        x[down] = F.interpolate(small, size=(h, w), mode="bilinear", align_corners=False)
    contrast = 0.8 + 0.4 * torch.rand(b, 1, 1, 1)
    shift = 0.1 * (torch.rand(b, 3, 1, 1) - 0.5)
    return (x * contrast + shift + 0.06 * torch.rand(b, 1, 1, 1) * torch.randn_like(x)).clamp(-1, 1)


AUGMENTATIONS = {"mild": augment, "degrade": degrade}


def train_classifier(
    out_dir: Path,
    steps: int = DEFAULT_STEPS,
    batch: int = 64,
    seed: int = 0,
    augmentation: str = DEFAULT_AUGMENT,
) -> dict:
    """Train on fresh real scenes each step; save weights + a JSON with the held-out accuracy."""
    if augmentation not in AUGMENTATIONS:
        raise KeyError(f"unknown augmentation {augmentation!r}; choose from {list(AUGMENTATIONS)}")
    augment_fn = AUGMENTATIONS[augmentation]
    torch.manual_seed(seed)
    config = single_object_config()
    model = ShapeClassifier()
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    start = time.process_time()
    for step in range(steps):
        x, y = render_batch(range(step * batch, (step + 1) * batch), config)
        loss = F.cross_entropy(model(augment_fn(x)), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    accuracy = evaluate_classifier(model, config)
    out_dir.mkdir(parents=True, exist_ok=True)
    save_file(model.state_dict(), str(out_dir / WEIGHTS))
    info = {"steps": steps, "batch": batch, "augmentation": augmentation,
            "real_val_accuracy": accuracy, "cpu_seconds": time.process_time() - start,
            "shapes": list(DEFAULT_SHAPES)}  # fmt: skip
    (out_dir / "classifier.json").write_text(json.dumps(info, indent=2))
    return info


@torch.no_grad()
def evaluate_classifier(model: ShapeClassifier, config: SceneConfig, n: int = 600) -> float:
    """Accuracy on held-out real scenes (seeds far from the training ones)."""
    model.eval()
    x, y = render_batch(range(10**8, 10**8 + n), config)
    return float((model(x).argmax(1) == y).float().mean())


@torch.no_grad()
def vae_roundtrip_accuracy(model: ShapeClassifier, pipeline_dir: Path, n: int = 600) -> float:
    """Accuracy on the pipeline VAE's reconstructions of held-out real scenes (the instrument's
    ceiling for images that pass through that VAE)."""
    from synthmask.diffusion.pipeline import PipelineConfig, load_pipeline
    from synthmask.diffusion.vae_roundtrip import vae_roundtrip

    model.eval()
    vae = load_pipeline(PipelineConfig(model=str(pipeline_dir))).vae.float()
    x, y = render_batch(range(10**8, 10**8 + n), single_object_config())
    recon = vae_roundtrip(vae, x).float() / 127.5 - 1.0
    return float((model(recon).argmax(1) == y).float().mean())


def load_classifier(out_dir: Path = DEFAULT_DIR, train_if_missing: bool = True) -> ShapeClassifier:
    """The classifier saved in ``out_dir`` (default: the shipped one); trained with the default
    recipe (a few CPU minutes) when its weights are missing."""
    path = out_dir / WEIGHTS
    if not path.is_file():
        if not train_if_missing:
            raise FileNotFoundError(
                f"{path} is missing; run `python benchmarks/shape_classifier.py --out {out_dir}`."
            )
        train_classifier(out_dir)
    model = ShapeClassifier()
    model.load_state_dict(load_file(str(path)))
    return model.eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=DEFAULT_DIR)
    parser.add_argument("--steps", type=int, default=DEFAULT_STEPS)
    parser.add_argument("--augment", choices=list(AUGMENTATIONS), default=DEFAULT_AUGMENT)
    parser.add_argument("--vae", type=Path, help="a pipeline dir: also score its VAE round-trips")
    args = parser.parse_args()
    torch.set_num_threads(1)
    info = train_classifier(args.out, args.steps, augmentation=args.augment)
    if args.vae:
        info["vae_roundtrip_accuracy"] = vae_roundtrip_accuracy(load_classifier(args.out), args.vae)
        info["vae"] = str(args.vae)
        (args.out / "classifier.json").write_text(json.dumps(info, indent=2))
    print(json.dumps(info, indent=2))


if __name__ == "__main__":
    main()
