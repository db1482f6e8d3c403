"""Shared pytest setup: offline W&B, no hub access, small thread counts."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_REALDATA = REPO_ROOT.parent / "shared" / "realdata"


@pytest.fixture(scope="session")
def realdata_dir() -> Path:
    """The shared real reference files (../shared/realdata); skipped in a user's fresh clone."""
    if not SHARED_REALDATA.is_dir():
        pytest.skip(f"{SHARED_REALDATA} not present (only beside the development checkout)")
    return SHARED_REALDATA


@pytest.fixture(autouse=True)
def _wandb_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Keep offline W&B runs of a test inside its tmp dir; afterwards end W&B's process-wide state
    (an active run, the settings read at the first `wandb.init`), else a later test's run lands
    in an earlier test's dir."""
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    yield
    wandb = sys.modules.get("wandb")
    if wandb is not None:
        wandb.teardown()  # also forgets the settings (WANDB_DIR) read by the first run
