"""Content-addressed cache keys: sha256 of the canonical JSON of everything that shapes a sample.

Same key -> same sample. The key covers the generator (model id/revision or weights hash, LoRA
and its scale), the sampler settings (scheduler, steps, guidance, size), the attention-capture
settings, the mask settings, the prompt (text and class-word spans) and the seed. Callers put
the configuration part into one `config_fingerprint` dict (plain JSON values).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from typing import Any

KEY_VERSION = 1


def _to_json_value(value: Any, where: str) -> Any:
    """Convert tuples/dataclasses/paths to plain JSON values, rejecting anything ambiguous."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(
                f"cache key field {where} is {value!r}; use a finite number (NaN/inf cannot be "
                "hashed reproducibly)."
            )
        return float(value)
    if hasattr(value, "to_json") and callable(value.to_json):
        return _to_json_value(value.to_json(), where)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _to_json_value(dataclasses.asdict(value), where)
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise TypeError(
                    f"cache key field {where} has non-string key {k!r}; use string keys."
                )
            out[k] = _to_json_value(v, f"{where}.{k}")
        return out
    if isinstance(value, (list, tuple)):
        return [_to_json_value(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if hasattr(value, "__fspath__"):
        return str(value)
    if hasattr(value, "item") and callable(value.item):  # numpy / torch scalars
        return _to_json_value(value.item(), where)
    raise TypeError(
        f"cache key field {where} has type {type(value).__name__}, which has no canonical JSON "
        "form; pass plain str/int/float/bool/list/dict values (or objects with to_json())."
    )


def canonical_json(value: Any) -> str:
    """Canonical JSON text: sorted keys, no whitespace, tuples as lists, finite floats only."""
    plain = _to_json_value(value, "$")
    return json.dumps(plain, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def sample_key(config_fingerprint: dict[str, Any], prompt: Any, seed: int) -> str:
    """The cache key (64 hex chars) of one sample.

    Args:
        config_fingerprint: model fingerprint/revision, LoRA + scale, sampler, steps, guidance,
            size, capture settings and mask settings as a plain dict (nested values allowed).
        prompt: a `Prompt` (anything with `to_json()`) or its JSON dict.
        seed: the sample's own seed.
    """
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int, got {type(seed).__name__} {seed!r}.")
    payload = {"v": KEY_VERSION, "config": config_fingerprint, "prompt": prompt, "seed": seed}
    return hashlib.sha256(canonical_json(payload).encode("utf-8")).hexdigest()
