"""Where a run's W&B data goes: the mode W&B itself would pick, with an offline fallback.

W&B decides its mode from ``WANDB_MODE``, its settings files (``wandb offline`` / ``wandb
online`` write them) and a login (``WANDB_API_KEY``, an identity token file, or the netrc entry
``wandb login`` writes). When one of these is present, the run follows it. When none is, W&B
would stop to ask for an API key (or fail without a terminal), so the run logs offline instead
and says, in one line, how to upload it later with ``wandb sync``.

Under a sweep agent (``WANDB_SWEEP_ID`` in the environment) the trial belongs to the agent's run
(``WANDB_RUN_ID``), in the agent's mode: a config never turns it offline.

Nothing here imports wandb or touches the network: it reads the environment and files only.
"""

from __future__ import annotations

import configparser
import netrc
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

DEFAULT_BASE_URL = "https://api.wandb.ai"
OFFLINE = "offline"


@dataclass(frozen=True)
class SweepTrial:
    """The agent's run a sweep trial logs into (from the environment the agent sets)."""

    sweep_id: str
    run_id: str | None
    project: str | None


@dataclass(frozen=True)
class WandbModeDecision:
    """What decides the mode of a run.

    Attributes:
        mode: the mode to pass to ``wandb.init`` (``"offline"``), or None to let W&B resolve it.
        source: what decided it: ``"WANDB_MODE"``, ``"settings file <path>"``, ``"login
            (<where>)"``, ``"sweep agent"`` or ``"no login"`` (the offline fallback).
    """

    mode: str | None
    source: str

    @property
    def is_fallback(self) -> bool:
        return self.source == "no login"


def sweep_trial(environ: Mapping[str, str] | None = None) -> SweepTrial | None:
    """The sweep trial this process runs for a ``wandb agent``, or None outside an agent."""
    env = os.environ if environ is None else environ
    sweep_id = env.get("WANDB_SWEEP_ID", "").strip()
    if not sweep_id:
        return None
    return SweepTrial(
        sweep_id=sweep_id,
        run_id=env.get("WANDB_RUN_ID", "").strip() or None,
        project=env.get("WANDB_PROJECT", "").strip() or None,
    )


def _settings_files(env: Mapping[str, str], workdir: Path) -> list[Path]:
    """W&B's settings files: the user's (``WANDB_CONFIG_DIR`` or ``~/.config/wandb``) and the
    workspace's (``<WANDB_DIR or the working directory>/wandb/settings``)."""
    config_dir = env.get("WANDB_CONFIG_DIR") or str(Path(_home(env)) / ".config" / "wandb")
    workspace = Path(env.get("WANDB_DIR") or workdir)
    return [Path(config_dir) / "settings", workspace / "wandb" / "settings"]


def _home(env: Mapping[str, str]) -> str:
    return env.get("HOME") or str(Path.home())


def settings_file_mode(env: Mapping[str, str], workdir: Path) -> tuple[str, Path] | None:
    """``(mode, file)`` when a W&B settings file sets ``mode`` (the workspace's wins)."""
    found = None
    for path in _settings_files(env, workdir):
        parser = configparser.ConfigParser()
        try:
            parser.read(path)
        except (configparser.Error, OSError, UnicodeDecodeError):
            continue
        mode = parser.get("default", "mode", fallback="").strip()
        if mode:
            found = (mode, path)
    return found


def _netrc_path(env: Mapping[str, str]) -> Path:
    if env.get("NETRC"):
        return Path(env["NETRC"]).expanduser()
    home = Path(_home(env))
    unix = home / ".netrc"
    windows = home / "_netrc"
    return windows if not unix.exists() and windows.exists() else unix


def login_source(env: Mapping[str, str]) -> str | None:
    """Where W&B would find credentials (``"WANDB_API_KEY"``, a netrc file ...), or None."""
    for name in ("WANDB_API_KEY", "WANDB_IDENTITY_TOKEN_FILE"):
        if env.get(name, "").strip():
            return name
    host = urlsplit(env.get("WANDB_BASE_URL") or DEFAULT_BASE_URL).netloc
    path = _netrc_path(env)
    if not host or not path.is_file():
        return None
    try:
        entry = netrc.netrc(str(path)).authenticators(host)
    except (netrc.NetrcParseError, OSError):
        return None
    return str(path) if entry and entry[2] else None


def resolve_wandb_mode(
    environ: Mapping[str, str] | None = None, workdir: str | Path | None = None
) -> WandbModeDecision:
    """The mode a run should start in (see the module docstring for the order)."""
    env = os.environ if environ is None else environ
    if env.get("WANDB_MODE", "").strip():
        return WandbModeDecision(None, "WANDB_MODE")
    if sweep_trial(env) is not None:
        return WandbModeDecision(None, "sweep agent")
    from_file = settings_file_mode(env, Path(workdir or os.getcwd()))
    if from_file is not None:
        return WandbModeDecision(None, f"settings file {from_file[1]}")
    where = login_source(env)
    if where is not None:
        return WandbModeDecision(None, f"login ({where})")
    return WandbModeDecision(OFFLINE, "no login")


def offline_fallback_line(wandb_dir: str | Path, run_id: str) -> str:
    """The one line printed when a run falls back to offline."""
    pattern = Path(wandb_dir) / "wandb" / f"offline-run-*-{run_id}"
    return (
        "synthmask: W&B has no login and WANDB_MODE is not set, so this run logs offline; "
        f"upload it later with `wandb sync {pattern}` (or `wandb login` / WANDB_MODE=online "
        "before the run to log online)"
    )
