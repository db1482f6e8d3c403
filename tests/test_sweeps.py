"""Sweep trials run the way ``wandb agent`` runs them (tests/fixtures_sweep_agent.py): wandb's own
agent writes the parameter file, sets the agent's environment and expands the sweep's command,
which runs the real ``synthmask`` console script; the sweep's metric is read back from the
trial's W&B run.

Default suite: two trials of robust_modes (every parameter at its first, and at its last
value) started side by side on one empty cache with on-the-fly synthesis: each sample is
generated once over both (``synth/generated`` adds up to the plan), each run carries the agent's
run id, a name of its own and its reliability mode in its tags. Slow: one trial of every other
sweep at each extreme, on the tiny pipeline or a fixture VOC root.
"""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from fixtures_diffusion import tiny_pipeline_dir_fixture  # noqa: F401  (fixture tiny_pipeline_dir)
from fixtures_sweep_agent import (
    BUDGETS,
    PLAN,
    REPO,
    SWEEP_ID,
    SWEEPS,
    check_resolved,
    draw_parameters,
    launch_trial,
    load_sweep,
    mirror_repository,
    offline_run,
    override_names,
    shapes_budget,
)

from synthmask.cli import main as cli_main

TRIAL_SECONDS = 600


def test_every_sweep_has_a_trial_budget() -> None:
    assert SWEEPS and {p.stem for p in SWEEPS} <= set(BUDGETS), "add the sweep to BUDGETS"


def check_trial_run(run_root: Path, trial, sweep: dict) -> dict:
    """The trial's W&B run: the agent's run id and sweep, the swept values in its config (from
    the agent's parameter file) and in the CLI's resolved config, the sweep's metric."""
    run = offline_run(run_root, trial.run_id)
    assert (run.run_id, run.sweep_id) == (trial.run_id, SWEEP_ID)
    for name, value in trial.parameters.items():
        assert run.config[name] == value, name  # WANDB_SWEEP_PARAM_PATH reached wandb.init
    check_resolved(run.config["cli"], trial.parameters, override_names(trial.extra))  # ${args}
    metric = run.summary[sweep["metric"]["name"]]
    assert 0.0 <= metric <= 1.0
    return run


def test_two_agent_trials_on_one_cache_generate_each_sample_once(
    tiny_pipeline_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two agents (one per GPU, as the README's multi-GPU sweeps run) start robust_modes trials
    at the same time on one empty cache, synthesizing on the fly: the first trial reads its 8
    samples in its one epoch, the second (pruning) reads all 8 before training."""
    sweep = load_sweep(REPO / "experiments" / "sweeps" / "robust_modes.yaml")
    workdir = mirror_repository(tmp_path / "agent")
    budget = [
        *shapes_budget(workdir, tiny_pipeline_dir),
        "--data.init_args.synthesis.mode=on_the_fly",
    ]
    first, last = draw_parameters(sweep), draw_parameters(sweep, last=True)
    assert first["data.init_args.pruning.share"] == 0.0 and last["data.init_args.pruning.share"] > 0
    trials = [
        launch_trial(sweep, params, budget, workdir, run_id, monkeypatch)
        for params, run_id in ((first, "trialfirst"), (last, "triallast"))
    ]
    assert [trial.wait(TRIAL_SECONDS) for trial in trials] == [0, 0]
    runs = [check_trial_run(workdir, trial, sweep) for trial in trials]
    generated = [run.summary["synth/generated"] for run in runs]
    assert sum(generated) == PLAN, generated  # each sample generated once over both trials
    assert all(g + r.summary["synth/cached"] == PLAN for g, r in zip(generated, runs, strict=True))
    # Runs tell apart on a dashboard: their own names, the reliability mode in their tags.
    names = [run.name for run in runs]
    assert all(names) and names[0] != names[1]
    for run, params in zip(runs, (first, last), strict=True):
        assert f"reliability:{params['model.init_args.reliability_mode']}" in run.tags
    # Compared without a W&B server: `synthmask runs` lists both trials and what differs.
    out_csv = tmp_path / "runs.csv"
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["runs", str(workdir), "--csv", str(out_csv)])
    assert exit_info.value.code == 0
    with out_csv.open() as handle:
        rows = {row["name"]: row for row in csv.DictReader(handle)}
    assert set(rows) == set(names)
    for run, params in zip(runs, (first, last), strict=True):
        row = rows[run.name]
        assert row["reliability_mode"] == params["model.init_args.reliability_mode"]
        assert float(row["val/mIoU"]) == pytest.approx(run.summary["val/mIoU"])


@pytest.mark.slow
@pytest.mark.parametrize("last", [False, True], ids=["first", "last"])
@pytest.mark.parametrize("sweep_path", SWEEPS, ids=lambda p: p.stem)
def test_agent_trial_of_every_sweep_reports_its_metric(
    sweep_path: Path,
    last: bool,
    tiny_pipeline_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sweep = load_sweep(sweep_path)
    workdir = mirror_repository(tmp_path / "agent")
    params = draw_parameters(sweep, last=last)
    budget = BUDGETS[sweep_path.stem](workdir, tiny_pipeline_dir)
    trial = launch_trial(sweep, params, budget, workdir, "trial", monkeypatch)
    assert trial.wait(TRIAL_SECONDS) == 0
    check_trial_run(workdir, trial, sweep)
