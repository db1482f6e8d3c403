"""Run setup of ``synthmask fit|validate|test``, after the classes are built and before the
trainer starts (so before W&B's ``wandb.init``, which Lightning calls at setup):

- the run's id, name (experiment + command-line overrides), tags (computed from the resolved
  config, plus the config's and the user's own), group (the experiment, or the sweep id under a
  ``wandb agent``) and job type (the subcommand) go into the WandbLogger;
- the W&B mode follows W&B (``synthmask.wandb_mode``): the logger's ``offline`` flag is honoured
  as an explicit request, except under a sweep agent, whose run (``WANDB_RUN_ID``) the trial
  logs into; with no mode and no login the run falls back to offline and says so in one line;
- the run gets its own directory, ``<save_dir>/<experiment>-<run id>/``, holding its
  ``config.yaml``, ``run.json`` and ``checkpoints/`` (ModelCheckpoints without a ``dirpath``);
- the config is logged once, nested under ``cli`` (LoggerSaveConfigCallback); the module's and
  data module's flat hyper-parameters are not logged again;
- ``fit`` validates (and, when stopped early, checkpoints) its final weights (FinalValidation).
"""

from __future__ import annotations

import os
import re
import secrets
import string
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningCLI, SaveConfigCallback
from lightning.pytorch.loggers import WandbLogger

from synthmask.callbacks.final_validation import FinalValidation
from synthmask.callbacks.run_record import RunRecordCallback
from synthmask.run_identity import (
    command_line_overrides,
    experiment_name,
    flat_settings,
    merge_tags,
    model_slug,
    run_name,
    run_tags,
)
from synthmask.wandb_mode import offline_fallback_line, resolve_wandb_mode, sweep_trial

_ID_CHARS = string.ascii_lowercase + string.digits
# Ids of W&B runs this process's CLI commands started: a later command finishes a run an
# earlier one left open (in Python, one process can run several commands), and only those.
_STARTED_RUN_IDS: set[str] = set()


def new_run_id() -> str:
    """An 8-character run id in W&B's alphabet."""
    return "".join(secrets.choice(_ID_CHARS) for _ in range(8))


def _is_rank_zero() -> bool:
    return int(os.environ.get("RANK", os.environ.get("LOCAL_RANK", "0"))) == 0


def _say(line: str) -> None:
    if _is_rank_zero():
        print(line, flush=True)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._+-]+", "-", text).strip("-") or "run"


def resolved_config(cli: LightningCLI) -> dict[str, Any]:
    """The subcommand's resolved config as plain data (what ``config.yaml`` holds)."""
    subcommand = cli.subcommand
    parser = cli._parser(subcommand)
    config = yaml.safe_load(parser.dump(cli.config[subcommand], skip_none=False))
    config.pop("config", None)
    return config


def _finish_leftover_run() -> None:
    """End the W&B run an earlier command of this process left open, so this command's run is
    its own (Lightning would log into any active run)."""
    import wandb

    if wandb.run is not None and wandb.run.id in _STARTED_RUN_IDS:
        wandb.run.finish()


def configure_wandb_logger(
    logger: WandbLogger, subcommand: str, identity: dict[str, Any], command_line: dict[str, str]
) -> dict[str, Any]:
    """Put the run's identity and mode into the logger's ``wandb.init`` arguments; returns what
    run.json records about W&B (mode, what decided it, project)."""
    init = logger._wandb_init
    if init.get("anonymous") is None:
        init.pop("anonymous", None)  # W&B warns about the setting even when it is unset
    trial = sweep_trial()
    decision = resolve_wandb_mode()
    # The logger's id, else the run W&B was pointed at (an agent's trial, a resumed run).
    run_id = init.get("id") or os.environ.get("WANDB_RUN_ID", "").strip() or new_run_id()
    init["id"] = logger._id = run_id
    init["name"] = logger._name = init.get("name") or identity["name"]
    init["tags"] = merge_tags(identity["tags"], init.get("tags"))
    group_on_command_line = "trainer.logger.init_args.group" in command_line
    if trial is not None and not group_on_command_line:
        init["group"] = trial.sweep_id
    else:
        init["group"] = init.get("group") or identity["experiment"]
    init["job_type"] = init.get("job_type") or subcommand
    mode, source = init.get("mode"), decision.source
    if trial is not None:
        if logger._offline or mode:
            _say("synthmask: a sweep agent runs this trial: it logs into the agent's run "
                 f"{run_id} in the agent's mode (the logger's offline/mode setting is ignored)")  # fmt: skip
        logger._offline, mode = False, None
        if trial.project:
            init["project"] = logger._project = trial.project
    elif logger._offline:
        # Lightning's offline flag sets WANDB_MODE for the whole process; pass the mode instead.
        logger._offline, mode, source = False, "offline", "logger offline: true"
    elif mode:
        source = "logger mode"
    elif decision.mode is not None:
        mode = decision.mode
        _say(offline_fallback_line(logger.save_dir or ".", run_id))
    init["mode"] = mode
    _STARTED_RUN_IDS.add(run_id)
    return {"mode": mode, "decided_by": source, "project": init.get("project")}


def _run_dir(cli: LightningCLI, experiment: str) -> tuple[Path | None, str | None]:
    """(run directory, run id) from the trainer's first logger; (None, None) without one."""
    loggers = cli.trainer.loggers
    if not loggers:
        return None, None
    first = loggers[0]
    if isinstance(first, WandbLogger):
        run_id = first._wandb_init["id"]
        return Path(first.save_dir or ".") / f"{_slug(experiment)}-{run_id}", run_id
    log_dir = getattr(first, "log_dir", None)
    return (Path(log_dir), str(first.version)) if log_dir else (None, None)


def _place_final_validation(cli: LightningCLI) -> None:
    """One FinalValidation, after Lightning's Timer (it reads what the Timer decided)."""
    callbacks = cli.trainer.callbacks
    mine = [c for c in callbacks if isinstance(c, FinalValidation)]
    for callback in mine:
        callbacks.remove(callback)
    callbacks.append(mine[0] if mine else FinalValidation())


def prepare_run(cli: LightningCLI, args: Sequence[str] | None, started: float) -> Path | None:
    """Set up the run of ``cli``'s subcommand (see the module docstring); returns its run
    directory (None when the trainer has no logger)."""
    subcommand = cli.subcommand
    if subcommand is None:
        return None
    config = resolved_config(cli)
    config_files = cli.config[subcommand].get("config") or []
    experiment = experiment_name([str(p) for p in config_files], fallback=model_slug(config))
    overrides = command_line_overrides(list(args)[1:] if args else [])
    identity = {
        "experiment": experiment,
        "name": run_name(experiment, overrides),
        "tags": run_tags(config),
    }
    wandb_info: dict[str, Any] | None = None
    wandb_loggers = [lg for lg in cli.trainer.loggers if isinstance(lg, WandbLogger)]
    if wandb_loggers:
        _finish_leftover_run()
    every_option = command_line_overrides(list(args or [])[1:], settings_only=False)
    for logger in wandb_loggers:
        wandb_info = configure_wandb_logger(logger, subcommand, identity, every_option)
    if subcommand == "fit":
        _place_final_validation(cli)
    run_dir, run_id = _run_dir(cli, experiment)
    for callback in cli.trainer.callbacks:
        if isinstance(callback, SaveConfigCallback):
            # The config is logged nested (under "cli"): not again as flat hyper-parameters.
            for owner in (cli.model, cli.datamodule):
                if owner is not None:
                    owner._log_hyperparams = False
            if run_dir is not None:
                callback.run_dir = run_dir
        if isinstance(callback, ModelCheckpoint) and callback.dirpath is None and run_dir:
            callback.dirpath = str(run_dir / "checkpoints")
    if run_dir is None:
        return None
    first = wandb_loggers[0]._wandb_init if wandb_loggers else {}
    record = {
        "run_id": run_id,
        "name": first.get("name") or identity["name"],
        "experiment": experiment,
        "group": first.get("group") or experiment,
        "tags": first.get("tags") or identity["tags"],
        "job_type": first.get("job_type") or subcommand,
        "config_files": [str(p) for p in config_files],
        "overrides": overrides,
        "settings": flat_settings(config),
        "wandb": wandb_info,
    }
    cli.trainer.callbacks.append(RunRecordCallback(run_dir, record, started))
    return run_dir
