"""FinalValidation: the weights a fit ends with are always validated, and checkpointed when it
ends before its budget (``max_time``, early stopping), and the run says so.

Without it, Lightning validates only on the configured schedule: a run whose ``max_time`` fires
mid-epoch, or whose last epoch is not a validation epoch, reports the ``val/mIoU`` of older
weights and may never save its final ones.

How: when the batch that ends training has run (the ``Timer`` of ``max_time`` fired, something
set ``trainer.should_stop``, ``max_steps`` is reached, or it is the last batch of the last epoch),
the callback asks Lightning's own loop for one more validation right there (``should_stop`` with
validation allowed in this epoch), so every callback and checkpoint sees it as a normal
validation at the final step. At the end of a run stopped early it saves ``last.ckpt`` (in the
first ModelCheckpoint's folder) unless a ModelCheckpoint already saved the final step, and prints
one line. Place it after Lightning's ``Timer`` in ``trainer.callbacks`` (``synthmask fit`` does).
"""

from __future__ import annotations

import math
import os
from typing import Any

from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint, Timer

LAST_CHECKPOINT = "last.ckpt"


def planned_steps(trainer: Trainer) -> int | None:
    """The optimizer steps the trainer's limits allow (``max_steps`` / ``max_epochs``), or None
    when unbounded (an iterable data set without length and no ``max_steps``)."""
    try:
        steps = float(trainer.estimated_stepping_batches)
    except (RuntimeError, ValueError, TypeError, ZeroDivisionError):
        steps = (
            float(trainer.max_steps) if trainer.max_steps and trainer.max_steps > 0 else math.inf
        )
    return None if math.isinf(steps) else int(steps)


class FinalValidation(Callback):
    """See the module docstring.

    Attributes (after ``fit``):
        budget_steps: the steps the run was set to train (None: unbounded).
        stopped_early: whether it ended before ``budget_steps``.
        stopped_reason: ``"max_time"``, ``"early_stopping"`` or ``"should_stop"`` (None if not
            stopped early).
        final_validated: whether the last validation ran on the final weights.
        checkpoint_path: the checkpoint of the final weights this callback wrote, if any.
    """

    def __init__(self) -> None:
        self._reset()

    def _reset(self) -> None:
        self.budget_steps: int | None = None
        self.stopped_early: bool | None = None
        self.stopped_reason: str | None = None
        self.final_validated = False
        self.checkpoint_path: str | None = None
        self._validated_step: int | None = None
        self._timer_fired = False

    @staticmethod
    def _timer(trainer: Trainer) -> Timer | None:
        return next((c for c in trainer.callbacks if isinstance(c, Timer)), None)

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._reset()
        self.budget_steps = planned_steps(trainer)

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not trainer.sanity_checking:
            self._validated_step = trainer.global_step

    def _ends_after(self, trainer: Trainer, batch_idx: int) -> bool:
        """Whether training ends after this batch. Only synced state decides (should_stop, which
        the Timer broadcasts, and step counters), so all DDP ranks agree."""
        if trainer.should_stop:
            timer = self._timer(trainer)
            remaining = timer.time_remaining() if timer is not None else None
            self._timer_fired = self._timer_fired or (remaining is not None and remaining <= 0)
            return True
        if trainer.max_steps is not None and 0 < trainer.max_steps <= trainer.global_step:
            return True
        max_epochs = trainer.max_epochs
        last_epoch = max_epochs is not None and max_epochs >= 0
        last_epoch = last_epoch and trainer.current_epoch + 1 >= max_epochs
        return last_epoch and batch_idx + 1 >= float(trainer.num_training_batches)

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if trainer.fast_dev_run or not self._ends_after(trainer, batch_idx):
            return
        if not trainer.enable_validation:
            return
        # Lightning validates after a batch that sets should_stop when the epoch allows
        # validation (training_epoch_loop._should_check_val_fx): allow it in this epoch.
        every = trainer.check_val_every_n_epoch
        if every is not None and (trainer.current_epoch + 1) % every != 0:
            trainer.check_val_every_n_epoch = 1
        trainer.should_stop = True

    def _reason(self, trainer: Trainer) -> str:
        if self._timer_fired:
            return "max_time"
        if any(isinstance(c, EarlyStopping) and c.stopped_epoch > 0 for c in trainer.callbacks):
            return "early_stopping"
        return "should_stop"

    @staticmethod
    def _saved_final_step(trainer: Trainer) -> bool:
        return any(
            getattr(c, "_last_global_step_saved", None) == trainer.global_step
            for c in trainer.checkpoint_callbacks
        )

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.final_validated = self._validated_step == trainer.global_step
        steps = trainer.global_step
        self.stopped_early = self.budget_steps is not None and steps < self.budget_steps
        self.stopped_reason = self._reason(trainer) if self.stopped_early else None
        if not self.stopped_early:
            return
        checkpoints = [c for c in trainer.checkpoint_callbacks if isinstance(c, ModelCheckpoint)]
        if checkpoints and checkpoints[0].dirpath and not self._saved_final_step(trainer):
            path = os.path.join(checkpoints[0].dirpath, LAST_CHECKPOINT)
            trainer.save_checkpoint(path)
            self.checkpoint_path = path
        elif checkpoints:
            self.checkpoint_path = checkpoints[0].last_model_path or checkpoints[0].best_model_path
        if trainer.is_global_zero:
            print(self.stop_line(trainer), flush=True)

    def stop_line(self, trainer: Trainer) -> str:
        """The line printed when a run stops early."""
        timer = self._timer(trainer)
        reason = self.stopped_reason or "should_stop"
        duration = getattr(timer, "_duration", None)
        if reason == "max_time" and duration is not None:
            reason = f"max_time, {duration:g} s"
        text = (
            f"synthmask: training stopped early ({reason}) at step {trainer.global_step} of "
            f"{self.budget_steps}"
        )
        value = trainer.callback_metrics.get("val/mIoU")
        if self.final_validated and value is not None:
            text += f"; the final weights were validated (val/mIoU = {float(value):.6f})"
        elif not trainer.enable_validation:
            text += "; no validation is configured"
        if self.checkpoint_path:
            text += f" and saved to {self.checkpoint_path}"
        elif not trainer.checkpoint_callbacks:
            text += " (checkpointing is off: not saved)"
        return text
