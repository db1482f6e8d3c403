"""One cached sample and its encoding into byte fields (PNG / raw float16 / JSON).

Fields of a sample as stored in a shard (one uint8 or float16 tensor each):
- `image`: PNG (RGB) of the uint8 (H, W, 3) image
- `mask`: PNG (L, or 16-bit I;16 for label spaces over 255 ids) of the uint8/uint16 (H, W)
  label map, class ids 0..C-1, 255 = ignore
- `reliability`: PNG (L) of the uint8 (H, W) reliability, 255 = reliable, 0 = unreliable
- `margin`: float16 (H, W) raw (top1 - top2 score margin)
- `meta`: UTF-8 JSON of the meta dict
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image

FIELD_NAMES = ("image", "mask", "reliability", "margin", "meta")
PNG_COMPRESS_LEVEL = 1  # decode speed is the same at every level; level 1 writes ~5x faster


@dataclass
class SampleRecord:
    """A synthetic sample.

    Shape:
        image: uint8 (H, W, 3); mask: uint8 or uint16 (H, W), 255 = ignore; reliability: uint8 (H, W),
        255 = reliable (a bool array is converted to 0/255); margin: float16 (H, W).
    """

    image: np.ndarray
    mask: np.ndarray
    reliability: np.ndarray
    margin: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.image = np.ascontiguousarray(self.image)
        self.mask = np.ascontiguousarray(self.mask)
        rel = np.asarray(self.reliability)
        if rel.dtype == np.bool_:
            rel = rel.astype(np.uint8) * 255
        self.reliability = np.ascontiguousarray(rel)
        self.margin = np.ascontiguousarray(self.margin, dtype=np.float16)
        self._validate()

    def _validate(self) -> None:
        img = self.image
        if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
            raise ValueError(
                f"SampleRecord.image must be uint8 (H, W, 3), got {img.dtype} {img.shape}; "
                "convert with (x * 255).round().clip(0, 255).astype(np.uint8) in HWC order."
            )
        hw = img.shape[:2]
        for name, dtypes in (("mask", (np.uint8, np.uint16)), ("reliability", (np.uint8,))):
            arr = getattr(self, name)
            if arr.dtype not in dtypes or arr.shape != hw:
                raise ValueError(
                    f"SampleRecord.{name} must be {'/'.join(d.__name__ for d in dtypes)} {hw} "
                    f"like the image, got {arr.dtype} {arr.shape}."
                )
        if self.margin.shape != hw:
            raise ValueError(
                f"SampleRecord.margin must have shape {hw} like the image, got {self.margin.shape}."
            )
        if not isinstance(self.meta, dict):
            raise ValueError(f"SampleRecord.meta must be a dict, got {type(self.meta).__name__}.")


def _png_bytes(array: np.ndarray) -> bytes:
    """PNG of uint8 (H, W, 3) -> RGB, uint8 (H, W) -> L, uint16 (H, W) -> I;16."""
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG", compress_level=PNG_COMPRESS_LEVEL)
    return buf.getvalue()


def _png_array(data: bytes, modes: tuple[str, ...]) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as img:
        if img.mode not in modes:
            raise ValueError(f"PNG field has mode {img.mode}, expected one of {modes}")
        return np.asarray(img)


def encode_record(record: SampleRecord) -> dict[str, np.ndarray]:
    """Field name -> 1-D uint8 array (PNG/JSON bytes) or float16 (H, W) array."""
    meta_bytes = json.dumps(record.meta, sort_keys=True, ensure_ascii=False).encode("utf-8")
    return {
        "image": np.frombuffer(_png_bytes(record.image), dtype=np.uint8),
        "mask": np.frombuffer(_png_bytes(record.mask), dtype=np.uint8),
        "reliability": np.frombuffer(_png_bytes(record.reliability), dtype=np.uint8),
        "margin": record.margin,
        "meta": np.frombuffer(meta_bytes, dtype=np.uint8),
    }


def decode_record(fields: dict[str, bytes]) -> SampleRecord:
    """Inverse of `encode_record` from the raw bytes of each field (margin takes the image's H, W)."""
    image = _png_array(fields["image"], ("RGB",))
    margin = np.frombuffer(fields["margin"], dtype="<f2").reshape(image.shape[:2])
    return SampleRecord(
        image=image,
        mask=_png_array(fields["mask"], ("L", "I;16")),
        reliability=_png_array(fields["reliability"], ("L",)),
        margin=margin.astype(np.float16),
        meta=json.loads(fields["meta"].decode("utf-8")),
    )
