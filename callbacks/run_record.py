"""RunRecordCallback: a run's ``run.json`` (``synthmask runs`` reads it) and its W&B summary.

At setup (global rank zero) it writes ``<run dir>/run.json`` (name, group, tags, settings,
provenance: code version, and for synthetic data the generator fingerprint, the digest of the
synthesis settings and of the sample plan), logs the provenance into the W&B run config, and
updates the file after every validation. At the end it records the outcome (finished / failed /
interrupted, wall time, steps against the budget, stopped early and why) and writes the W&B
summary: ``val/mIoU`` = the final weights' value, ``val/mIoU_best`` and the step it was
measured at, per-class IoU of both (``val/IoU/<class>``, ``val/IoU_best/<class>``).
"""

from __future__ import annotations

import hashlib
import math
import time
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer

from synthmask.callbacks.final_validation import FinalValidation
from synthmask.callbacks.wandb_utils import (
    class_names_of,
    define_summary_metrics,
    find_wandb_logger,
)
from synthmask.run_identity import code_provenance
from synthmask.run_records import now_iso, write_run_record
from synthmask.synthesis_plan import config_digest

SUMMARY_METRICS = ("val/mIoU", "val/mIoU_best", "test/mIoU")


def synthesis_provenance(datamodule: Any, with_plan: bool) -> dict[str, Any]:
    """What a synthetic data module trains on: the generator's fingerprint, the digest of every
    synthesis setting (the cache's ``configs/<digest>.json``) and, with ``with_plan``, the digest
    of the sample plan's keys and its size. Empty for other data modules."""
    synthesizer = getattr(datamodule, "synthesizer", None)
    fingerprint = getattr(synthesizer, "fingerprint", None)
    if not callable(fingerprint):
        return {}
    settings = fingerprint()
    found: dict[str, Any] = {
        "generator_fingerprint": settings.get("generator"),
        "synthesis_config_sha256": config_digest(settings),
    }
    plan = getattr(datamodule, "plan", None)
    if with_plan and callable(plan):
        keys = [spec.key for spec in plan()]
        found["plan_sha256"] = hashlib.sha256("\n".join(keys).encode("utf-8")).hexdigest()
        found["plan_samples"] = len(keys)
    return found


def _per_class(names: list[str], values: torch.Tensor | None) -> dict[str, float | None] | None:
    if values is None:
        return None
    return {
        name: None if math.isnan(v) else float(v)
        for name, v in zip(names, values.tolist(), strict=False)
    }


class RunRecordCallback(Callback):
    """Writes ``run.json`` and the W&B summary (see the module docstring).

    Args:
        run_dir: the run's own directory (``runs/<experiment>-<run id>``).
        record: what is known before the run starts (run_id, name, experiment, group, tags,
            job_type, overrides, settings, wandb mode ...).
        started: ``time.time()`` when the command started (wall time counts from it).
    """

    def __init__(
        self, run_dir: str | Path, record: Mapping[str, Any], started: float | None = None
    ) -> None:
        self.run_dir = Path(run_dir)
        self.record: dict[str, Any] = dict(record)
        self.started = time.time() if started is None else started
        self.record.setdefault("started_at", now_iso())

    def _write(self) -> None:
        write_run_record(self.run_dir, self.record)

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if not trainer.is_global_zero:
            return
        provenance = {
            "code": code_provenance(),
            **synthesis_provenance(trainer.datamodule, with_plan=stage == "fit"),
        }
        self.record.update(status="running", run_dir=str(self.run_dir), provenance=provenance)
        self._write()
        for logger in trainer.loggers:
            logger.log_hyperparams({"provenance": provenance})
        wandb_logger = find_wandb_logger(trainer)
        if wandb_logger is not None:
            define_summary_metrics(wandb_logger)
            run = wandb_logger.experiment
            mode = "offline" if getattr(run, "offline", False) else run.settings.mode
            self.record["wandb"] = {**(self.record.get("wandb") or {}), "mode": mode}
            self._write()

    def metrics(self, trainer: Trainer, pl_module: LightningModule) -> dict[str, Any]:
        """Final and best ``val/mIoU`` (and ``test/mIoU``) with per-class IoU at both."""
        logged = trainer.callback_metrics
        found: dict[str, Any] = {k: float(logged[k]) for k in SUMMARY_METRICS if k in logged}
        names = class_names_of(trainer, pl_module)
        last = _per_class(names, getattr(pl_module, "last_val_iou", None))
        best = _per_class(names, getattr(pl_module, "best_val_iou", None))
        if getattr(pl_module, "best_val_miou", None) is not None:
            found["val/mIoU_best"] = float(pl_module.best_val_miou)
            found["val/mIoU_best_step"] = pl_module.best_val_step
        if last is not None:
            found["val/IoU"] = last
        if best is not None:
            found["val/IoU_best"] = best
        return found

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        self.record.update(
            metrics=self.metrics(trainer, pl_module), global_step=trainer.global_step
        )
        self._write()

    def _finish(self, trainer: Trainer, pl_module: LightningModule, status: str) -> None:
        final = next((c for c in trainer.callbacks if isinstance(c, FinalValidation)), None)
        self.record.update(
            status=status,
            ended_at=now_iso(),
            wall_time_s=round(time.time() - self.started, 3),
            global_step=trainer.global_step,
            metrics=self.metrics(trainer, pl_module),
        )
        if final is not None and final.stopped_early is not None:
            self.record.update(
                budget_steps=final.budget_steps,
                stopped_early=final.stopped_early,
                stopped_reason=final.stopped_reason,
                final_validated=final.final_validated,
            )
        checkpoints = sorted(str(p) for p in (self.run_dir / "checkpoints").glob("*.ckpt"))
        if checkpoints:
            self.record["checkpoints"] = checkpoints
        self._write()
        self._update_wandb_summary(trainer)

    def _update_wandb_summary(self, trainer: Trainer) -> None:
        logger = find_wandb_logger(trainer)
        # No run was started (e.g. the failure was W&B's own start): do not start one now.
        if logger is None or getattr(logger, "_experiment", None) is None:
            return
        metrics = self.record.get("metrics") or {}
        summary: dict[str, Any] = {k: v for k, v in metrics.items() if not isinstance(v, dict)}
        for prefix in ("val/IoU", "val/IoU_best"):
            summary |= {f"{prefix}/{n}": v for n, v in (metrics.get(prefix) or {}).items()}
        for key in ("stopped_early", "stopped_reason", "budget_steps", "final_validated"):
            if key in self.record:
                summary[key] = self.record[key]
        summary["run_dir"] = str(self.run_dir)
        summary["wall_time_s"] = self.record["wall_time_s"]
        logger.experiment.summary.update(summary)

    def teardown(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if trainer.is_global_zero and self.record.get("status") == "running":
            self._finish(trainer, pl_module, "finished")

    def on_exception(
        self, trainer: Trainer, pl_module: LightningModule, exception: BaseException
    ) -> None:
        if not trainer.is_global_zero:
            return
        status = "interrupted" if isinstance(exception, KeyboardInterrupt) else "failed"
        self.record["error"] = f"{type(exception).__name__}: {exception}"[:500]
        try:
            self._finish(trainer, pl_module, status)
        except Exception as err:  # the run's own error is the one to report
            warnings.warn(
                f"run.json / W&B summary not updated after the failure: {err}", stacklevel=1
            )
