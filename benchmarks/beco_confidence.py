"""Why BECO's online labels collapse in the shapes world: how often its two nets are confident
about foreground.

After its warm-up, BECO trains each pixel on the nets' own averaged prediction only where that
prediction's probability exceeds ``highres_t`` (0.95), and on the peer's label only where the
peer is that confident too. If the nets reach such confidence on background but hardly ever on
foreground, the online labels hold no foreground to learn from, and the nets unlearn it.

This script loads the final weights of each run of a paper-table row (default
``robust_beco_no_online``: BECO whose warm-up covers all 960 steps, so its two nets are as well
trained as the table's budget makes them and were never pulled by their own labels) and, over
training batches (the augmented synthetic images the online labels are computed on) and the
real test scenes, measures:

- the foreground share of the nets' argmax label (and of the offline pseudo-masks / true masks);
- for each threshold ``t``: the share of pixels whose probability exceeds ``t`` (BECO's reliable
  pixels at ``highres_t = t``) and the foreground share among those pixels.

    python benchmarks/beco_confidence.py [--workdir runs/paper_table] [--row robust_beco_no_online]
    # -> results/beco_confidence.csv (rewritten: one row per run, data split and threshold)

Run ``python benchmarks/paper_table.py --rows robust_beco_no_online`` first.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from main_job import append_csv  # noqa: E402

from synthmask.training import online_prediction  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
CSV_PATH = REPO / "benchmarks" / "results" / "beco_confidence.csv"
THRESHOLDS = (0.5, 0.7, 0.8, 0.9, 0.95)
IGNORE_INDEX = 255
COLUMNS = [
    "run_name", "run_id", "data", "images", "mask_foreground", "label_foreground",
    "threshold", "confident_share", "foreground_among_confident",
]  # fmt: skip


def confidence_stats(
    nets: Sequence[nn.Module],
    batches: Iterable[dict[str, torch.Tensor]],
    thresholds: Sequence[float] = THRESHOLDS,
) -> dict[str, Any]:
    """Foreground shares of the nets' online prediction over ``batches``.

    Each batch has ``"image"`` (B, 3, H, W) and ``"mask"`` (B, H, W) class ids (255 = ignore;
    pixels marked so are left out everywhere). Returns ``images``, ``mask_foreground`` and
    ``label_foreground`` (shares of counted pixels), and ``by_threshold[t]`` =
    ``(confident_share, foreground_among_confident)``, the latter NaN when no pixel passes ``t``.
    """
    images = pixels = mask_fg = label_fg = 0
    above = dict.fromkeys(thresholds, 0)
    fg_above = dict.fromkeys(thresholds, 0)
    for batch in batches:
        label, confidence = online_prediction(nets, batch["image"])
        counted = batch["mask"] != IGNORE_INDEX
        foreground = (label != 0) & counted
        images += batch["image"].shape[0]
        pixels += int(counted.sum())
        mask_fg += int(((batch["mask"] != 0) & counted).sum())
        label_fg += int(foreground.sum())
        for t in thresholds:
            confident = (confidence > t) & counted
            above[t] += int(confident.sum())
            fg_above[t] += int((confident & foreground).sum())
    share = lambda n, d: n / d if d else float("nan")  # noqa: E731
    return {
        "images": images,
        "mask_foreground": share(mask_fg, pixels),
        "label_foreground": share(label_fg, pixels),
        "by_threshold": {
            t: (share(above[t], pixels), share(fg_above[t], above[t])) for t in thresholds
        },
    }


def row_runs(workdir: Path, row: str) -> list[Path]:
    """Run directories (``runs/<experiment>-<id>/``) of the paper-table ``row``, by name."""
    found = []
    for record in sorted((workdir / "runs").glob("*/run.json")):
        info = json.loads(record.read_text())
        if info.get("group") == f"paper-table-{row}":
            found.append(record.parent)
    return found


@contextlib.contextmanager
def _cwd(path: Path) -> Iterator[None]:
    before = Path.cwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(before)


@contextlib.contextmanager
def loaded_run(run_dir: Path) -> Iterator[tuple[Any, Any]]:
    """The run's model (final checkpoint loaded) and data module, from its saved config, used
    inside the work directory the run was started in (``run_dir``'s grandparent: the config's
    paths, such as the cache, are relative to it)."""
    from synthmask.cli import SynthmaskCLI

    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    for key in ("ckpt_path", "weights_only"):  # `fit` arguments, not settings of the classes
        config.pop(key, None)
    checkpoints = sorted((run_dir / "checkpoints").glob("*.ckpt"), key=lambda p: p.stat().st_mtime)
    if not checkpoints:
        raise SystemExit(f"{run_dir} has no checkpoint; its run did not finish")
    with tempfile.TemporaryDirectory() as tmp, _cwd(run_dir.parents[1]):
        path = Path(tmp) / "config.yaml"
        path.write_text(yaml.safe_dump(config))
        args = ["--config", str(path), "--trainer.logger=false", "--trainer.callbacks=[]"]
        cli = SynthmaskCLI(run=False, args=args)
        state = torch.load(checkpoints[-1], map_location="cpu", weights_only=True)
        cli.model.load_state_dict(state["state_dict"])
        cli.datamodule.setup("fit")
        cli.datamodule.setup("test")
        yield cli.model, cli.datamodule


def _first(loader: Iterable, count: int) -> Iterator[Any]:
    for index, batch in enumerate(loader):
        if index >= count:
            return
        yield batch


def main(argv: list[str] | None = None) -> list[dict[str, str]]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--workdir", type=Path, default=REPO / "runs" / "paper_table")
    parser.add_argument("--row", default="robust_beco_no_online")
    parser.add_argument("--train-batches", type=int, default=16)
    parser.add_argument("--csv", type=Path, default=CSV_PATH)
    args = parser.parse_args(argv)
    runs = row_runs(args.workdir.resolve(), args.row)
    if not runs:
        raise SystemExit(
            f"no run of row {args.row!r} under {args.workdir}/runs; run "
            f"`python benchmarks/paper_table.py --rows {args.row}` first."
        )
    torch.manual_seed(0)  # the training batches' shuffling and augmentation
    rows = []
    for run_dir in runs:
        info = json.loads((run_dir / "run.json").read_text())
        with loaded_run(run_dir) as (model, data):
            nets = (model.net, model.net2)
            splits = {
                "train (synthetic, augmented)": confidence_stats(
                    nets, _first(data.train_dataloader(), args.train_batches)
                ),
                "test (real)": confidence_stats(nets, data.test_dataloader()),
            }
        for name, stats in splits.items():
            for t, (confident, foreground) in stats["by_threshold"].items():
                rows.append({
                    "run_name": info["name"], "run_id": info["run_id"], "data": name,
                    "images": str(stats["images"]),
                    "mask_foreground": f"{stats['mask_foreground']:.4f}",
                    "label_foreground": f"{stats['label_foreground']:.4f}",
                    "threshold": f"{t:g}", "confident_share": f"{confident:.4f}",
                    "foreground_among_confident": f"{foreground:.4f}",
                })  # fmt: skip
    args.csv.unlink(missing_ok=True)
    append_csv(args.csv, rows, COLUMNS)
    for row in rows:
        print(" ".join(f"{k}={row[k]}" for k in COLUMNS))
    return rows


if __name__ == "__main__":
    main()
