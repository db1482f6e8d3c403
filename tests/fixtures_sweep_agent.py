"""Sweep trials launched exactly as ``wandb agent`` launches them, and their W&B runs read back.

``launch_trial`` hands wandb's own ``Agent`` the "run" command the W&B server sends it (run id,
program, one value per parameter): the agent writes the parameter file in its format and names
it in ``WANDB_SWEEP_PARAM_PATH``, sets ``WANDB_RUN_ID`` (``WANDB_SWEEP_ID`` is the agent's own),
expands the sweep's ``command`` with ``create_sweep_command`` / ``create_sweep_command_args``
(``${env}``, ``${program}``, ``${args}`` ...) and starts it in the agent's working directory.
Tests append overrides for a tiny budget after ``${args}``; they never touch a swept parameter.

Parameters are drawn as the sweep's method would, at its extremes: the open-source ``sweeps``
engine cannot be installed beside this wandb (it pins numpy < 2), so each trial takes the first
(or the last) value of every parameter: ``values[0]`` / ``values[-1]``, ``min`` / ``max`` of a
distribution, ``value`` of a constant.

``offline_run`` reads a trial's offline run file (``run-<id>.wandb``: W&B's record log, which
holds no ``wandb-summary.json`` in offline mode) into its id, sweep id, name, group, tags, config
and summary.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from fixtures_datasets import make_voc
from fixtures_segmentation import TINY_NET_ARGS

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from offline_wandb import OfflineRun, read_offline_run  # noqa: E402, F401 (re-export)

REPO = Path(__file__).resolve().parents[1]
SWEEPS = sorted((REPO / "experiments" / "sweeps").glob("*.yaml"))
SWEEP_ID = "sweeptest"
PLAN = 8  # synthetic images of a shrunk synthetic trial


def load_sweep(path: Path) -> dict[str, Any]:
    return yaml.safe_load(path.read_text())


def extreme_value(spec: dict[str, Any], last: bool) -> Any:
    """The first (or last) value a parameter spec allows: value, values[0|-1], min|max."""
    if "value" in spec:
        return spec["value"]
    if "values" in spec:
        return spec["values"][-1 if last else 0]
    if "min" in spec and "max" in spec:
        return spec["max" if last else "min"]
    raise ValueError(f"parameter spec {spec} has no value, values or min/max")


def draw_parameters(sweep: dict[str, Any], last: bool = False) -> dict[str, Any]:
    """One trial's parameters: every parameter at its first (or last) value."""
    return {name: extreme_value(spec, last) for name, spec in sweep["parameters"].items()}


def expanded_args(parameters: dict[str, Any]) -> list[str]:
    """What ``${args}`` becomes for these parameters (wandb's create_sweep_command_args)."""
    from wandb.sdk.launch.sweeps.utils import create_sweep_command_args

    command = {"args": {name: {"value": value} for name, value in parameters.items()}}
    return create_sweep_command_args(command)["args"]


def expanded_command(sweep: dict[str, Any], parameters: dict[str, Any]) -> list[str]:
    """The sweep's ``command`` with its macros expanded as the agent expands them."""
    from wandb.sdk.launch.sweeps.utils import create_sweep_command

    values = {
        "env": ["/usr/bin/env"],
        "interpreter": ["python"],
        "program": [sweep["program"]],
        "args": expanded_args(parameters),
    }
    out: list[str] = []
    for chunk in create_sweep_command(list(sweep["command"])):
        chunk = str(chunk)
        is_macro = chunk.startswith("${") and chunk.endswith("}")
        out += values[chunk[2:-1]] if is_macro else [chunk]
    return out


def override_names(args: list[str]) -> set[str]:
    """Dotted names set by ``--name=value`` arguments."""
    return {arg.split("=", 1)[0].removeprefix("--") for arg in args if arg.startswith("--")}


def check_budget_leaves_parameters(parameters: dict[str, Any], extra: list[str]) -> None:
    """Budget overrides come after ``${args}`` and win: they must not replace a swept value."""
    for name in override_names(extra):
        assert name not in parameters, f"budget override --{name} replaces a swept parameter"


def _leaves(node: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(node, dict) or not node:
        return {prefix: node}
    out: dict[str, Any] = {}
    for key, value in node.items():
        out.update(_leaves(value, f"{prefix}.{key}" if prefix else str(key)))
    return out


def swept_settings(parameters: dict[str, Any]) -> dict[str, Any]:
    """Dotted setting -> value a trial with these parameters must resolve to: each parameter,
    and for ``config`` (a file of overrides, relative to the repository) every leaf of it."""
    settings: dict[str, Any] = {}
    for name, value in parameters.items():
        if name == "config":
            settings.update(_leaves(yaml.safe_load((REPO / value).read_text())))
        else:
            settings[name] = value
    return settings


def resolved_value(config: dict[str, Any], dotted: str) -> Any:
    """The value at ``dotted`` of a resolved config; a class node gives its class name (the
    form sweeps pass: ``--data.init_args.mask=Attn2MaskConfig``)."""
    node = nested(config, dotted)
    if isinstance(node, dict) and "class_path" in node:
        return str(node["class_path"]).rsplit(".", 1)[-1]
    return node


def check_resolved(
    config: dict[str, Any], parameters: dict[str, Any], overridden: Collection[str] = ()
) -> None:
    """Every swept setting (``swept_settings``) holds in the resolved ``config``, except those
    a test's budget overrides after ``${args}``."""
    for name, value in swept_settings(parameters).items():
        if name not in overridden:
            assert resolved_value(config, name) == value, name


@dataclass
class Trial:
    """A trial the agent started: its run id, parameters and process (``AgentProcess``)."""

    run_id: str
    parameters: dict[str, Any]
    extra: list[str]
    process: Any
    workdir: Path

    def wait(self, timeout: float) -> int:
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.process._popen.pid, signal.SIGKILL)  # the trial and its DDP ranks
            raise


def launch_trial(
    sweep: dict[str, Any],
    parameters: dict[str, Any],
    extra: list[str],
    workdir: Path,
    run_id: str,
    monkeypatch: pytest.MonkeyPatch,
) -> Trial:
    """Start one trial of ``sweep`` with wandb's ``Agent``, in ``workdir``, as run ``run_id``.

    The agent changes ``WANDB_RUN_ID`` and ``WANDB_SWEEP_PARAM_PATH`` of this process (it does
    so for each trial); ``monkeypatch`` restores them after the test.
    """
    from wandb import wandb_agent

    check_budget_leaves_parameters(parameters, extra)
    monkeypatch.chdir(workdir)  # the agent starts trials in its own working directory
    monkeypatch.setenv("WANDB_SWEEP_ID", SWEEP_ID)
    for name in ("WANDB_RUN_ID", "WANDB_SWEEP_PARAM_PATH"):
        monkeypatch.setenv(name, "")  # recorded, so the agent's values are undone afterwards
    # the `synthmask` console script of this environment, whether or not it is activated
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    agent = wandb_agent.Agent(api=None, queue=None, sweep_id=SWEEP_ID)
    agent._sweep_command = [*sweep["command"], *extra]
    agent._command_run(
        {
            "type": "run",
            "run_id": run_id,
            "program": sweep["program"],
            "args": {name: {"value": value} for name, value in parameters.items()},
        }
    )
    return Trial(run_id, parameters, extra, agent._run_processes[run_id], workdir)


def mirror_repository(workdir: Path) -> Path:
    """A working directory for trials: the repository's experiments/ (configs are given by
    relative paths in sweep commands), outputs (runs/, caches) stay in ``workdir``."""
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "experiments").symlink_to(REPO / "experiments")
    return workdir


# ---- trial budgets ---------------------------------------------------------------------------
TRAINER_BUDGET = [  # max_steps bounds the trial whatever max_epochs a sweep sets
    "--trainer.max_steps=2",
    "--trainer.max_time=null",
    "--trainer.check_val_every_n_epoch=1",
    "--trainer.log_every_n_steps=1",
]


def shapes_budget(workdir: Path, pipeline: Path) -> list[str]:
    """A shapes-world synthetic trial in seconds: the tiny pipeline (2 steps) draws 8 images,
    the test net trains 2 steps of 4 images (one epoch) and validates on 4 scenes."""
    data, val = "--data.init_args", "--data.init_args.val_data.init_args"
    return [
        f"{data}.pipeline.model={pipeline}",
        f"{data}.pipeline.num_inference_steps=2",
        f"{data}.synthesis.num_images={PLAN}",
        f"{data}.synthesis.batch_size=2",
        f"{data}.synthesis.processes=1",
        f"{data}.synthesis.cache_dir={workdir / 'cache'}",
        f"{data}.synthesis.progress=false",
        f"{data}.loader.batch_size=4",
        f"{val}.n_val=4",
        f"{val}.n_test=4",
        f"{val}.val_batch_size=4",
        *TINY_NET_ARGS,
        *TRAINER_BUDGET,
    ]


def voc_budget(workdir: Path, pipeline: Path) -> list[str]:
    """voc_real on a fixture VOC root at the sweep's own ``data/voc`` (no SBD), on the CPU:
    the test net (not ImageNet-pretrained), 32 px crops, 2 steps, fp32."""
    make_voc(workdir / "data" / "voc")
    return [
        "--data.init_args.use_sbd=false",
        "--data.init_args.loader.batch_size=2",
        "--data.init_args.loader.num_workers=0",
        "--data.init_args.loader.pin_memory=false",
        "--data.init_args.val_batch_size=2",
        "--data.init_args.augment.crop_size=32",
        "--data.init_args.val_pad_to=64",
        *TINY_NET_ARGS,
        "--model.init_args.net.init_args.pretrained=false",
        "--trainer.accelerator=cpu",
        "--trainer.precision=32-true",
        "--trainer.sync_batchnorm=false",
        "--trainer.limit_train_batches=2",
        *TRAINER_BUDGET,
    ]


BUDGETS: dict[str, Callable[[Path, Path], list[str]]] = {
    "robust_modes": shapes_budget,
    "seg_lr_sweep": voc_budget,
    "paper_table": shapes_budget,
}
"""Overrides that shrink a trial of each sweep (appended after ``${args}``)."""


# ---- offline W&B run files: benchmarks/offline_wandb.py reads them -------------------------


def offline_run(root: Path, run_id: str) -> OfflineRun:
    """The one offline run file of ``run_id`` below ``root``."""
    found = sorted(Path(root).rglob(f"run-{run_id}.wandb"))
    assert len(found) == 1, f"expected one W&B run {run_id} under {root}, found {found}"
    return read_offline_run(found[0])


def nested(config: dict[str, Any], dotted: str) -> Any:
    """``config["a"]["b"]`` for ``"a.b"``."""
    node: Any = config
    for part in dotted.split("."):
        node = node[part]
    return node
