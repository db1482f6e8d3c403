"""Fidelity of the shapes-world LDM per prompt wording (does the caption grammar matter?).

The LDM was trained on the world's captions: no lead-in, every object's colour named, the
background named half the time. This draws the same 96 single-object scenes (16 per shape,
seeds 0-95) under five wordings and reports the share the real-trained classifier of
``shape_classifier.py`` names as the prompted shape. (The colour's article is always "a", as in
the recorded run.)

    python benchmarks/prompt_wording.py --guidance 5

The recorded figures (benchmarks/RESULTS.md) were drawn by the step-22109 export of the LDM,
which is not kept: ``--pipeline DIR`` takes any export, the default is the shipped model.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from diffusers import StableDiffusionPipeline

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ldm_quality import COLORS, classify, generate  # noqa: E402
from shape_classifier import DEFAULT_DIR, load_classifier  # noqa: E402

from synthmask.prompt_types import Prompt  # noqa: E402
from synthmask.world.shapes import DEFAULT_SHAPES  # noqa: E402

WORDINGS = {
    "plain-bg": "a {colour} {shape} on a plain background",
    "colour": "a {colour} {shape}",
    "prefix+colour": "a picture of a {colour} {shape}",
    "prefix-only": "a picture of a {shape}",
    "bare": "a {shape}",
}


def wording_prompts(form: str, n: int) -> tuple[list[Prompt], np.ndarray]:
    """Prompt i names shape i % 6 in colour (i // 6) % 8; class ids 1..6."""
    prompts, labels = [], []
    for i in range(n):
        shape, colour = DEFAULT_SHAPES[i % 6], COLORS[(i // 6) % len(COLORS)]
        text = form.format(colour=colour, shape=shape)
        prompts.append(Prompt.from_text_and_words(text, [(shape, i % 6 + 1)]))
        labels.append(i % 6 + 1)
    return prompts, np.array(labels)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--pipeline", type=Path, default=Path("synthmask/assets/shapes_ldm"))
    parser.add_argument("--classifier", type=Path, default=DEFAULT_DIR)
    parser.add_argument("--n", type=int, default=96)
    parser.add_argument("--steps", type=int, default=15)
    parser.add_argument("--guidance", type=float, default=5.0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    pipe = StableDiffusionPipeline.from_pretrained(str(args.pipeline), torch_dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    classifier = load_classifier(args.classifier)
    for name, form in WORDINGS.items():
        prompts, labels = wording_prompts(form, args.n)
        images, _ = generate(pipe, prompts, list(range(args.n)), args.steps, args.guidance)
        fidelity = float((classify(classifier, images) == labels).mean())
        print(f"guidance {args.guidance} {name:14s} fidelity {fidelity:.3f}", flush=True)


if __name__ == "__main__":
    main()
