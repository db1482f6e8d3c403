"""What BECO's labels look like over training: the foreground share of the labels each step
trains on (the offline pseudo-masks during warm-up, the online labels after it) and of their
reliable pixels, read from the W&B runs of the paper table's BECO rows.

Online labels are the two nets' averaged prediction where its confidence passes ``highres_t``;
if the nets under-segment, those labels mark less foreground each epoch and training follows
them (the collapse measured in the robust-training ablation). Real scenes are ~18% foreground.

    python benchmarks/beco_labels.py [--workdir runs/paper_table]  # -> results/beco_labels.csv

Reads the runs of the table's BECO rows (``robust_beco`` and the diagnostics
``robust_beco_late``, ``robust_beco_no_online``, ``best_beco``; ``--rows`` picks) and rewrites the
CSV: the rows of every run found replace that run's earlier rows (same ``run_id``); rows of runs
no longer in ``--workdir`` (a table continued in a fresh work directory) are kept.

One CSV row per run and phase (warm-up / online): the number of logged steps, the mean share of
foreground in the labels and in their reliable pixels, and the share at the phase's first and
last logged step.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from main_job import append_csv, read_rows  # noqa: E402
from offline_wandb import OfflineRun, read_offline_run  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
CSV_PATH = REPO / "benchmarks" / "results" / "beco_labels.csv"
GROUP = "paper-table-robust_beco"
# The table's BECO rows: the table's own, then its diagnostics (paper_table.py).
BECO_ROWS = ("robust_beco", "robust_beco_late", "robust_beco_no_online", "best_beco")
COLUMNS = [
    "run_name", "run_id", "phase", "logged_steps", "label_foreground_mean",
    "reliable_foreground_mean", "label_foreground_first", "label_foreground_last",
]  # fmt: skip
LABEL, RELIABLE, ONLINE = (
    "train/label_foreground",
    "train/reliable_foreground",
    "train/online_labels",
)


def phase_rows(run: OfflineRun) -> list[dict[str, str]]:
    """One row per phase of ``run`` (warm-up: offline labels; online: the nets' own labels)."""
    steps = [h for h in run.history if LABEL in h and ONLINE in h]
    rows = []
    for phase, online in (("warmup", 0.0), ("online", 1.0)):
        part = [h for h in steps if float(h[ONLINE]) == online]
        if not part:
            continue
        labels = [float(h[LABEL]) for h in part]
        reliable = [float(h[RELIABLE]) for h in part if RELIABLE in h]
        rows.append(
            {
                "run_name": run.name,
                "run_id": run.run_id,
                "phase": phase,
                "logged_steps": str(len(part)),
                "label_foreground_mean": f"{statistics.mean(labels):.4f}",
                "reliable_foreground_mean": f"{statistics.mean(reliable):.4f}" if reliable else "",
                "label_foreground_first": f"{labels[0]:.4f}",
                "label_foreground_last": f"{labels[-1]:.4f}",
            }
        )
    return rows


def beco_runs(root: Path, groups: str | Sequence[str] = GROUP) -> list[OfflineRun]:
    """Every offline W&B run of ``groups`` below ``root``, by group (in the given order), then
    oldest first."""
    groups = [groups] if isinstance(groups, str) else list(groups)
    runs = [read_offline_run(p) for p in sorted(root.rglob("run-*.wandb"))]
    return [run for group in groups for run in runs if run.group == group]


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--workdir", type=Path, default=REPO / "runs" / "paper_table")
    parser.add_argument(
        "--rows", nargs="+", default=list(BECO_ROWS), help="paper-table rows to read (W&B groups)"
    )
    parser.add_argument("--csv", type=Path, default=CSV_PATH)
    args = parser.parse_args(argv)
    runs = beco_runs(args.workdir, [f"paper-table-{row}" for row in args.rows])
    if not runs:
        raise SystemExit(
            f"no W&B run of rows {args.rows} under {args.workdir}; run "
            f"`python benchmarks/paper_table.py --rows {' '.join(args.rows)}` first."
        )
    rows = [row for run in runs for row in phase_rows(run)]
    found = {run.run_id for run in runs}
    kept = [row for row in read_rows(args.csv) if row["run_id"] not in found]
    args.csv.unlink(missing_ok=True)  # rewritten: no duplicates on a rerun
    append_csv(args.csv, kept + rows, COLUMNS)
    for row in rows:
        print(" ".join(f"{k}={row[k]}" for k in COLUMNS))
    return rows


if __name__ == "__main__":
    main()
