"""Shared pytest setup: offline W&B, no hub access, small thread counts."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# Model fingerprints remember file digests in a per-user index; tests keep theirs out of $HOME
# (one index per test session, so the memo is exercised across tests as across restarts).
if "SYNTHMASK_HASH_INDEX" not in os.environ:
    import tempfile

    os.environ["SYNTHMASK_HASH_INDEX"] = str(
        Path(tempfile.mkdtemp(prefix="synthmask-hash-index-")) / "file-sha256.json"
    )

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_REALDATA = REPO_ROOT.parent / "shared" / "realdata"


@pytest.fixture(scope="session")
def realdata_dir() -> Path:
    """The shared real reference files (../shared/realdata); skipped in a user's fresh clone."""
    if not SHARED_REALDATA.is_dir():
        pytest.skip(f"{SHARED_REALDATA} not present (only beside the development checkout)")
    return SHARED_REALDATA


@pytest.fixture(autouse=True)
def _wandb_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep offline W&B runs of a test inside its tmp dir."""
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
