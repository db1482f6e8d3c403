"""The shipped model card's code block runs verbatim in plain diffusers (no dtype argument)."""

from __future__ import annotations

import re
from pathlib import Path

import torch

CARD = Path(__file__).resolve().parents[1] / "synthmask" / "assets" / "shapes_ldm" / "MODEL_CARD.md"


def card_python_blocks() -> list[str]:
    """Every fenced ```python block of the model card, in order."""
    return re.findall(r"```python\n(.*?)```", CARD.read_text(encoding="utf-8"), flags=re.S)


def test_model_card_snippet_runs_verbatim() -> None:
    blocks = card_python_blocks()
    assert blocks, f"{CARD} has no ```python block"
    torch.set_num_threads(1)
    namespace: dict = {}
    exec(compile(blocks[0], str(CARD), "exec"), namespace)  # noqa: S102 - the card's own code
    pipe, image = namespace["pipe"], namespace["image"]
    assert "torch_dtype" not in blocks[0] and "dtype=" not in blocks[0]
    assert pipe.text_encoder.dtype == pipe.unet.dtype == pipe.vae.dtype == torch.float32
    assert image.size[0] > 0 and image.mode == "RGB"
    pixels = torch.tensor(list(image.getdata()), dtype=torch.float32)
    assert pixels.std() > 1.0  # a drawn image, not a constant one
