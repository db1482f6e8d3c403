"""Export of a sample cache to the VOC and folder layouts, read back by torchvision and by the
project's data modules and compared pixel by pixel with the cache; the output folder guard,
resuming after a killed run, and a fit on the VOC export through the CLI."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from fixtures_cache import key_of, make_record
from fixtures_datasets import make_folder_dataset, make_voc
from fixtures_segmentation import TINY_NET_ARGS
from fixtures_synthetic import tiny_pipeline_dir
from PIL import Image
from torchvision.datasets import VOCSegmentation

from synthmask.cache import SampleCache
from synthmask.cli import console_main, main
from synthmask.datamodules.folder import FolderSegDataModule
from synthmask.datamodules.voc import VOCDataModule
from synthmask.export import DONE_LOG, export_cache, held_out_names, voc_palette

REPO = Path(__file__).resolve().parents[1]
N = 5
CLASSES = ["background", "circle", "square"]
DEAD_PID = 2**22 + 12345  # above Linux's largest pid (2**22): no such process


@pytest.fixture(name="cache")
def cache_fixture(tmp_path) -> SampleCache:
    cache = SampleCache(tmp_path / "cache")
    with cache.writer("t", shard_size=2) as writer:
        for i in range(N):
            writer.add(key_of(i), make_record(i, h=24, w=20))
    return SampleCache(tmp_path / "cache", create=False)


def _items() -> list[tuple[str, str]]:
    return [(f"synth_{i:06d}", key_of(i)) for i in range(N)]


def snapshot(root: Path) -> dict[Path, tuple[bytes, int]]:
    """Every file under ``root``: its bytes and mtime (ns)."""
    return {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in root.rglob("*") if p.is_file()}


def test_voc_export_reads_back_in_torchvision_and_voc_datamodule(cache, tmp_path) -> None:
    out = tmp_path / "voc"
    report = export_cache(cache, _items(), CLASSES, out, "voc", val_share=0.4)
    assert (report.written, report.skipped, report.val) == (N, 0, 2)
    train = VOCSegmentation(str(out), year="2012", image_set="train")
    val = VOCSegmentation(str(out), year="2012", image_set="val")
    assert (len(train), len(val)) == (N - 2, 2)
    names = [Path(p).stem for p in train.images + val.images]
    assert sorted(names) == [name for name, _ in _items()]  # disjoint, together all
    for image_path, target_path in zip(
        train.images + val.images, train.targets + val.targets, strict=True
    ):
        record = cache[key_of(int(Path(image_path).stem.split("_")[1]))]
        target = Image.open(target_path)
        np.testing.assert_array_equal(np.asarray(target), record.mask)  # every pixel
        assert target.mode == "P" and target.getpalette()[: 3 * 256] == voc_palette()
        image = np.asarray(Image.open(image_path).convert("RGB"), dtype=np.int16)
        assert np.abs(image - record.image).mean() < 12  # JPEG (quality 95) of random noise
        reliability = Image.open(
            out / "VOCdevkit/VOC2012/SegmentationReliability" / f"{Path(image_path).stem}.png"
        )
        np.testing.assert_array_equal(np.asarray(reliability), record.reliability)
    root = out / "VOCdevkit" / "VOC2012"
    assert (root / "classes.txt").read_text().splitlines() == CLASSES
    dm = VOCDataModule(root=str(out))  # no flag: train.txt and val.txt are there
    assert [s.name for s in dm.find_samples("val")] == [Path(p).stem for p in val.images]
    assert dm.class_names == CLASSES and dm.num_classes == 3  # from classes.txt
    assert len(dm.build_dataset("train")) == N - 2 and len(dm.build_dataset("val")) == 2


def test_val_share_is_deterministic_by_name(cache, tmp_path) -> None:
    names = [f"synth_{i:06d}" for i in range(100)]
    chosen = held_out_names(names, 0.1)  # by sha256 of the name: the same on every machine
    assert sorted(chosen) == [f"synth_{i:06d}" for i in (15, 26, 35, 54, 60, 64, 69, 74, 75, 77)]
    assert held_out_names(list(reversed(names)), 0.1) == chosen  # not by position
    assert len(held_out_names(names[:3], 0.1)) == 1 and len(held_out_names(names[:2], 0.9)) == 1
    assert held_out_names(names, 0.0) == set() and held_out_names(names[:1], 0.5) == set()
    report = export_cache(cache, _items(), CLASSES, tmp_path / "zero", "voc", val_share=0)
    split = tmp_path / "zero/VOCdevkit/VOC2012/ImageSets/Segmentation"
    assert report.val == 0 and (split / "val.txt").read_text() == ""
    assert len((split / "train.txt").read_text().split()) == N
    with pytest.raises(ValueError, match=r"--val-share 1.0: give the share .* in \[0, 1\)"):
        export_cache(cache, _items(), CLASSES, tmp_path / "one", "voc", val_share=1.0)
    with pytest.raises(ValueError, match="applies to --format voc only"):
        export_cache(cache, _items(), CLASSES, tmp_path / "f", "folder", val_share=0.2)
    assert not (tmp_path / "one").exists() and not (tmp_path / "f").exists()


def test_folder_export_is_read_exactly_by_folder_datamodule(cache, tmp_path) -> None:
    out = tmp_path / "folder"
    export_cache(cache, _items(), CLASSES, out, "folder")
    dm = FolderSegDataModule(root=str(out), val_fraction=0.0)
    assert dm.class_names == CLASSES
    stems = sorted(p.stem for p in (out / "images").iterdir())
    assert stems == [name for name, _ in _items()]
    for name, key in _items():
        record = cache[key]
        np.testing.assert_array_equal(
            np.asarray(Image.open(out / "images" / f"{name}.png")), record.image
        )
        np.testing.assert_array_equal(
            np.asarray(Image.open(out / "masks" / f"{name}.png")), record.mask
        )
    dataset = dm.build_dataset("train")
    item = dataset[0]
    assert isinstance(item["mask"], torch.Tensor) and len(dataset) == N


def test_export_is_idempotent_and_guarded(cache, tmp_path) -> None:
    out = tmp_path / "voc"
    export_cache(cache, _items(), CLASSES, out, "voc")
    before = snapshot(out)
    again = export_cache(cache, _items(), CLASSES, out, "voc")
    assert (again.written, again.skipped) == (0, N)
    assert snapshot(out) == before  # not one file rewritten: same bytes, same mtimes
    with pytest.raises(ValueError, match="holds an export of other samples.*--force"):
        export_cache(cache, _items()[:2], CLASSES, out, "voc")
    assert snapshot(out) == before
    with pytest.raises(ValueError, match="not in the cache"):
        export_cache(cache, [("x", "missing-key")], CLASSES, tmp_path / "other", "voc")
    with pytest.raises(ValueError, match="class name 'circle' is used by class ids 1 and 2"):
        export_cache(cache, _items(), ["background", "circle", "circle"], tmp_path / "d", "folder")
    with pytest.raises(ValueError, match="use one of"):
        export_cache(cache, _items(), CLASSES, tmp_path / "e", "coco")
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="is a file; give a folder"):
        export_cache(cache, _items(), CLASSES, tmp_path / "file", "voc")


def test_force_replaces_another_export_with_only_the_new_samples(cache, tmp_path) -> None:
    out = tmp_path / "folder"
    export_cache(cache, _items(), CLASSES, out, "folder")
    report = export_cache(cache, _items()[:2], CLASSES, out, "folder", force=True)
    assert (report.written, report.skipped) == (2, 0)
    assert sorted(p.stem for p in (out / "images").iterdir()) == [n for n, _ in _items()[:2]]
    assert len(FolderSegDataModule(root=str(out), val_fraction=0.0).build_dataset("train")) == 2


def test_resume_redoes_empty_and_wrong_size_files_and_removes_stale_temp_files(
    cache, tmp_path
) -> None:
    """What a killed or crashed export leaves: an empty file (data never flushed), a file of
    another size (torn), a missing file, temporary files of dead processes."""
    out = tmp_path / "voc"
    export_cache(cache, _items(), CLASSES, out, "voc")
    good = snapshot(out)
    masks = out / "VOCdevkit/VOC2012/SegmentationClass"
    images = out / "VOCdevkit/VOC2012/JPEGImages"
    (masks / "synth_000000.png").write_bytes(b"")
    (images / "synth_000001.jpg").write_bytes(good[images / "synth_000001.jpg"][0][:-100])
    (masks / "synth_000002.png").unlink()
    stale = [masks / f".synth_000003.png.tmp{DEAD_PID}", out / f".export.json.tmp{DEAD_PID}"]
    for path in stale:
        path.write_bytes(b"partial")
    live = masks / f".synth_000004.png.tmp{os.getppid()}"  # a live process: not ours to delete
    live.write_bytes(b"in flight")
    resumed = export_cache(cache, _items(), CLASSES, out, "voc")
    assert (resumed.written, resumed.skipped) == (3, N - 3)
    assert not any(path.exists() for path in stale) and live.exists()
    live.unlink()
    now = snapshot(out)
    files = {p: data for p, (data, _) in good.items() if p.name != DONE_LOG}
    assert {p: data for p, (data, _) in now.items() if p.name != DONE_LOG} == files
    untouched = masks / "synth_000004.png"
    assert now[untouched][1] == good[untouched][1]  # complete samples were not rewritten


def test_a_torn_done_log_line_is_ignored(cache, tmp_path) -> None:
    out = tmp_path / "folder"
    export_cache(cache, _items(), CLASSES, out, "folder")
    log = out / DONE_LOG
    lines = log.read_text().splitlines()
    log.write_text("\n".join(lines[:-1]) + "\n" + lines[-1][:10])  # killed mid-append
    resumed = export_cache(cache, _items(), CLASSES, out, "folder")
    assert (resumed.written, resumed.skipped) == (1, N - 1)


# ---- through the command line, on a cache filled by `synthmask synthesize` ------------------


@pytest.fixture(scope="module", name="synthesized")
def synthesized_fixture(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """The arguments of a config whose cache `synthmask synthesize` filled (4 tiny images)."""
    cache_dir = tmp_path_factory.mktemp("export_cli") / "cache"
    pipe = "--data.init_args.pipeline"
    args = [
        "--config", str(REPO / "experiments" / "voc_synth.yaml"),
        f"{pipe}.model={tiny_pipeline_dir()}", f"{pipe}.device=cpu", f"{pipe}.dtype=float32",
        f"{pipe}.num_inference_steps=2", f"{pipe}.height=32", f"{pipe}.width=32",
        "--data.init_args.synthesis.num_images=4",
        f"--data.init_args.synthesis.cache_dir={cache_dir}",
        "--data.init_args.synthesis.progress=false",
    ]  # fmt: skip
    main(["synthesize", *args])
    return args


def run_console(argv: list[str], monkeypatch, capsys) -> tuple[int, str, str]:
    """``synthmask <argv>`` as the console script runs it: (exit status, stdout, stderr)."""
    monkeypatch.setattr(sys, "argv", ["synthmask", *argv])
    monkeypatch.delenv("SYNTHMASK_DEBUG", raising=False)
    code = 0
    try:
        console_main()
    except SystemExit as exit_info:
        code = exit_info.code if isinstance(exit_info.code, int) else 1
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.parametrize(
    ("kind", "first_file"),
    [("voc_root", "VOCdevkit/VOC2012/ImageSets/Segmentation/train.txt"),
     ("image_mask_folder", "classes.txt")],
)  # fmt: skip
def test_export_into_a_foreign_folder_is_refused_and_changes_nothing(
    synthesized, kind, first_file, tmp_path, monkeypatch, capsys
) -> None:
    if kind == "voc_root":
        out, fmt = make_voc(tmp_path / "voc", n_train=2, n_val=1), "voc"
    else:
        out, fmt = make_folder_dataset(tmp_path / "folder", n_images=3), "folder"
    before = snapshot(out)
    export = ["export", *synthesized, "--format", fmt, "--output", str(out)]
    code, _, err = run_console(export, monkeypatch, capsys)
    assert code == 1 and snapshot(out) == before  # same files, bytes and mtimes
    message = err[err.index("synthmask: error:") :]
    assert len(message.splitlines()) <= 2, err
    assert f"(first: {out / first_file})" in message and "--force" in message
    assert "Traceback" not in err
    code, out_text, _ = run_console([*export, "--force"], monkeypatch, capsys)
    assert code == 0 and "exported 4 samples (4 written" in out_text
    if kind == "voc_root":  # --force overwrites what has the same name, and says so in --help
        split = out / "VOCdevkit/VOC2012/ImageSets/Segmentation"
        listed = (split / "train.txt").read_text().split() + (split / "val.txt").read_text().split()
        assert sorted(listed) == [f"synth_{i:06d}" for i in range(4)]
        assert (out / "VOCdevkit/VOC2012/JPEGImages/2008_000000.jpg").is_file()  # others stay
    else:
        assert len(list((out / "images").glob("synth_*.png"))) == 4
        assert len(list((out / "images").glob("img_*.png"))) == 3


def test_fit_on_the_voc_export_through_the_cli(synthesized, tmp_path, monkeypatch) -> None:
    """`VOCDataModule` reads the export with no extra flag: train on train.txt, validate on the
    held-out val.txt (one step each)."""
    out = tmp_path / "synth_voc"
    report = main(["export", *synthesized, "--format", "voc", "--output", str(out),
                   "--val-share", "0.25"])  # fmt: skip
    assert (report.written, report.val) == (4, 1)
    monkeypatch.chdir(tmp_path)  # the run's outputs land here
    cli = main([
        "fit", "--config", str(REPO / "experiments" / "voc_real.yaml"),
        f"--data.init_args.root={out}",
        "--data.init_args.use_sbd=false", "--data.init_args.loader.batch_size=2",
        "--data.init_args.loader.num_workers=0", "--data.init_args.loader.pin_memory=false",
        "--data.init_args.val_batch_size=1", "--data.init_args.augment.crop_size=32",
        "--data.init_args.val_pad_to=32", *TINY_NET_ARGS,
        "--model.init_args.net.init_args.pretrained=false", "--trainer.accelerator=cpu",
        "--trainer.devices=1", "--trainer.precision=32-true", "--trainer.sync_batchnorm=false",
        "--trainer.fast_dev_run=true", "--trainer.enable_progress_bar=false",
        f"--trainer.logger.init_args.save_dir={tmp_path / 'runs'}",
        "--trainer.logger.init_args.offline=true",
    ])  # fmt: skip
    assert cli.trainer.state.finished and cli.trainer.global_step == 1
    assert len(cli.datamodule.datasets["train"]) == 3 and len(cli.datamodule.datasets["val"]) == 1
    classes = (out / "VOCdevkit/VOC2012/classes.txt").read_text().splitlines()
    assert cli.datamodule.class_names == classes and cli.model.num_classes == len(classes)
    assert 0.0 <= float(cli.trainer.callback_metrics["val/mIoU"]) <= 1.0
