"""tests/test_cli_experiments.py hooks for the shapes-world main job configs: the tiny random
pipeline stands in for the shipped LDM, a handful of images and validation scenes."""

from __future__ import annotations

from fixtures_robust import _shapes_synth

EXPERIMENT_OVERRIDES = {
    "shapes_synth": _shapes_synth,
    "shapes_synth_promptaug": _shapes_synth,
}
