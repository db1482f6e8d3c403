"""Model fingerprints in cache keys: every byte of every weight file counts, and a file whose
identity did not change is not read again (synthmask/diffusion/fingerprint.py)."""

from __future__ import annotations

import json
import os
import shutil
import struct
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

import synthmask.diffusion.fingerprint as fingerprint
from synthmask.diffusion.fingerprint import FileHashIndex, tree_sha256
from synthmask.diffusion.pipeline import PipelineConfig, pipeline_fingerprint
from synthmask.diffusion.shipped import shipped_ldm_path
from synthmask.prompt_types import Prompt
from synthmask.synthesis_plan import build_plan

UNET = Path("unet") / "diffusion_pytorch_model.safetensors"


@pytest.fixture(autouse=True)
def _private_index(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "hash-index" / "file-sha256.json"
    monkeypatch.setenv(fingerprint.HASH_INDEX_ENV, str(path))
    return path


def _age(root: Path, seconds: float = 3600.0) -> None:
    """Date every file `seconds` back, as a model installed earlier would be."""
    when = os.stat(root).st_mtime - seconds
    for path in [root, *root.rglob("*")]:
        os.utime(path, (when, when))


def _float64_copy(target: Path) -> Path:
    """The shipped model with its UNet saved as float64 (12.7 MB: over the old sampling size)."""
    shutil.copytree(shipped_ldm_path(), target)
    tensors = {k: v.double() for k, v in load_file(target / UNET).items()}
    save_file(tensors, str(target / UNET), metadata={"format": "pt"})
    return target


def _mid_file_tensor(path: Path) -> str:
    """Name of the tensor whose bytes lie nearest 40% into the file (between the blocks the
    old fingerprint sampled: the first, middle and last 4 MB)."""
    raw = path.read_bytes()
    (length,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + length])
    target = 0.4 * len(raw)
    spans = {
        name: 8 + length + sum(info["data_offsets"]) / 2
        for name, info in header.items()
        if name != "__metadata__"
    }
    return min(spans, key=lambda name: abs(spans[name] - target))


def _keys(model_dir: Path) -> list[str]:
    digest = pipeline_fingerprint(PipelineConfig(model=str(model_dir)))
    prompts = [Prompt.from_text_and_words("a photo of a circle", [("circle", 1)])] * 3
    return [spec.key for spec in build_plan(prompts, 0, {"generator": digest})]


def test_one_changed_mid_file_tensor_changes_every_key(tmp_path: Path) -> None:
    first = _float64_copy(tmp_path / "a")
    second = tmp_path / "b"
    shutil.copytree(first, second)
    tensors = load_file(second / UNET)
    name = _mid_file_tensor(second / UNET)
    tensors[name] = torch.zeros_like(tensors[name])
    save_file(tensors, str(second / UNET), metadata={"format": "pt"})
    assert (first / UNET).stat().st_size == (second / UNET).stat().st_size
    keys_a, keys_b = _keys(first), _keys(second)
    assert len(set(keys_a)) == 3 and not set(keys_a) & set(keys_b)
    assert _keys(tmp_path / "a") == keys_a  # the same files give the same keys


def test_a_second_fingerprint_does_not_read_the_files_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, _private_index: Path
) -> None:
    model = tmp_path / "model"
    shutil.copytree(shipped_ldm_path(), model)
    _age(model)
    reads: list[str] = []
    real_hash = fingerprint.hash_file_contents

    def counting(path: Path) -> str:
        reads.append(Path(path).name)
        return real_hash(path)

    monkeypatch.setattr(fingerprint, "hash_file_contents", counting)
    files = [p for p in model.rglob("*") if p.is_file()]
    first = pipeline_fingerprint(PipelineConfig(model=str(model)))
    assert len(reads) == len(files) and _private_index.is_file()
    reads.clear()
    assert pipeline_fingerprint(PipelineConfig(model=str(model))) == first
    assert reads == []  # one stat per file, no read
    # The shipped alias names the same bytes: the same fingerprint.
    assert pipeline_fingerprint(PipelineConfig(model="synthmask:shapes-ldm")) == first


def test_an_in_place_edit_with_size_and_mtime_restored_is_hashed_again(tmp_path: Path) -> None:
    model = tmp_path / "model"
    shutil.copytree(shipped_ldm_path(), model)
    _age(model)
    before = _keys(model)
    weights = model / UNET
    stat = weights.stat()
    with open(weights, "r+b") as f:  # flip one byte in the middle, keep the inode and size
        f.seek(stat.st_size // 2)
        byte = f.read(1)
        f.seek(stat.st_size // 2)
        f.write(bytes([byte[0] ^ 0xFF]))
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert weights.stat().st_mtime_ns == stat.st_mtime_ns
    assert not set(_keys(model)) & set(before)


def test_hub_snapshot_blobs_are_used_by_name_and_copies_agree(tmp_path: Path) -> None:
    content = b"weights" * 1000
    blob = tmp_path / "hub" / "blobs"
    blob.mkdir(parents=True)
    sha = fingerprint.hashlib.sha256(content).hexdigest()
    (blob / sha).write_bytes(content)
    snapshot = tmp_path / "hub" / "snapshots" / "rev"
    snapshot.mkdir(parents=True)
    (snapshot / "w.safetensors").symlink_to(Path("..") / ".." / "blobs" / sha)
    index = FileHashIndex()
    assert index.sha256(snapshot / "w.safetensors") == sha and index.hashed == 0
    copy = tmp_path / "copy"
    copy.mkdir()
    (copy / "w.safetensors").write_bytes(content)
    assert tree_sha256(copy) == tree_sha256(snapshot)


def test_a_corrupt_or_unwritable_index_only_costs_the_memo(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, _private_index: Path
) -> None:
    model = tmp_path / "model"
    model.mkdir()
    (model / "w.bin").write_bytes(b"x" * 100)
    _age(model)
    expected = fingerprint.hashlib.sha256(b"w.bin")
    expected.update(fingerprint.hashlib.sha256(b"x" * 100).hexdigest().encode())
    _private_index.parent.mkdir(parents=True)
    for junk in ("{not json", "[]", '{"version": 1, "files": {"a": 3}}'):
        _private_index.write_text(junk)
        assert tree_sha256(model) == expected.hexdigest()
    monkeypatch.setenv(fingerprint.HASH_INDEX_ENV, str(model / "w.bin" / "index.json"))
    index = FileHashIndex()
    assert tree_sha256(model, index) == expected.hexdigest() and index.hashed == 1
    index.save()  # a file where the index folder should be: ignored
