"""``synthmask`` command line: LightningCLI (fit/validate/test/predict) plus ``synthesize`` and
``export``, which build only the config's data module (no network, no validation set).

    synthmask fit --config experiments/folder_example.yaml --data.init_args.root=/path/to/set
    synthmask synthesize --config experiments/<synthetic>.yaml
    synthmask export --config experiments/<synthetic>.yaml --format voc --output DIR

``data.num_classes`` and ``data.class_names`` are linked into ``model.init_args`` at instantiation
(a link whose source or target does not exist is skipped, so modules / data modules without class
counts work too). The segmentation net's config leaves ``num_classes`` out: SegmentationModule
builds the net from it with its own ``num_classes``, so a config states the count once, in the data.

User errors (bad values, missing or corrupt files) print one message and exit with status 1;
``--debug`` or ``SYNTHMASK_DEBUG=1`` shows the full traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import importlib
import inspect
import os
import sys
import time
import typing
import zipfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from synthmask.cli_errors import (
    Interrupted,
    check_config_files,
    check_devices,
    exit_on_interrupt,
    on_interrupt,
    run_with_user_errors,
)

with exit_on_interrupt():  # Ctrl-C while torch and Lightning load: one line, not a traceback
    import torch
    import yaml
    from jsonargparse import ArgumentParser
    from lightning.pytorch import Callback, LightningDataModule, LightningModule, Trainer
    from lightning.pytorch.callbacks import RichProgressBar
    from lightning.pytorch.cli import LightningArgumentParser, LightningCLI, SaveConfigCallback
    from lightning.pytorch.loggers import Logger
    from lightning.pytorch.utilities.model_helpers import is_overridden

    from synthmask.callbacks.run_setup import prepare_run

SYNTHESIZE = "synthesize"
EXPORT = "export"
DATA_COMMANDS: dict[str, str] = {
    SYNTHESIZE: "Fill the sample cache of a synthetic data module (resumable; shard it with "
    "torchrun). Builds only the data module: no network, no validation set.",
    EXPORT: "Write the cached samples of a config as a VOC-layout or image/mask folder data set "
    "(--format voc|folder --output DIR; resumable). The output folder must be new, empty or an "
    "earlier export of the same samples; --force writes into any folder, overwriting its files.",
}
"""Commands that run on the config's data module alone (listed by ``synthmask --help``)."""
RUNS = "runs"
EXTRA_COMMANDS: dict[str, str] = {
    **DATA_COMMANDS,
    RUNS: "Compare local runs (synthmask runs [DIR] [--csv FILE]): name, group, the settings "
    "that differ, final and best val/mIoU, wall time, stopped early; read from each run's "
    "run.json (no W&B server needed).",
    "cache": "Check, repair or describe a sample cache: synthmask cache verify DIR (hash every "
    "shard, change nothing), synthmask cache repair DIR (quarantine bad shards, adopt unlisted "
    "ones), synthmask cache stats DIR (samples, shards, bytes).",
}
"""Every command besides LightningCLI's, name -> one-line help (``synthmask --help`` lists them)."""


class LoggerSaveConfigCallback(SaveConfigCallback):
    """Saves the resolved config (as LightningCLI does) and also records it in every logger,
    so the W&B run config holds the full experiment (model, data, trainer, seed), once, under
    ``cli``. With ``run_dir`` set (``synthmask.callbacks.run_setup``) the file is ``<run_dir>/config.yaml``,
    so runs sharing a logger's save_dir never overwrite each other's config."""

    run_dir: Path | None = None

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if self.run_dir is None or self.already_saved:
            super().setup(trainer, pl_module, stage)
            return
        if trainer.is_global_zero:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            path = self.run_dir / self.config_filename
            self.parser.save(self.config, str(path), skip_none=False, overwrite=True,
                             multifile=self.multifile)  # fmt: skip
            self.save_config(trainer, pl_module, stage)
            self.already_saved = True
        self.already_saved = trainer.strategy.broadcast(self.already_saved)

    def save_config(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        config = yaml.safe_load(self.parser.dump(self.config, skip_none=False))
        config.pop("config", None)
        for logger in trainer.loggers:
            if isinstance(logger, Logger):
                logger.log_hyperparams({"cli": config})


def check_checkpoint_file(path: str | Path) -> None:
    """Raise a clear error unless ``path`` is a checkpoint written by ``torch.save``."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(
            f"--ckpt_path {path} does not exist; give a .ckpt file written by a run "
            "(e.g. runs/<name>/checkpoints/last.ckpt)."
        )
    if not zipfile.is_zipfile(path):
        raise ValueError(
            f"--ckpt_path {path} is not a PyTorch Lightning checkpoint (not a torch.save zip "
            "archive; the file is corrupt or of another kind). Give a .ckpt file written by a run."
        )


class SynthmaskCLI(LightningCLI):
    """LightningCLI with data -> model links; any LightningModule / LightningDataModule subclass
    can be named by ``class_path``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("subclass_mode_model", True)
        kwargs.setdefault("subclass_mode_data", True)
        kwargs.setdefault("seed_everything_default", True)
        # Optimizers/schedulers are init args of the modules (OptimizerCallable), not top-level
        # --optimizer/--lr_scheduler options that would silently replace configure_optimizers.
        kwargs.setdefault("auto_configure_optimizers", False)
        kwargs.setdefault("save_config_callback", LoggerSaveConfigCallback)
        # Loggers such as W&B share one save_dir across runs; the per-run config goes to the logger.
        kwargs.setdefault("save_config_kwargs", {"overwrite": True})
        super().__init__(*args, **kwargs)

    def _run_subcommand(self, subcommand: str) -> None:
        try:
            super()._run_subcommand(subcommand)
        except SystemExit:  # Lightning exits 1 after a Ctrl-C: say what was saved, exit 130
            if self.trainer is not None and self.trainer.interrupted:
                raise Interrupted(_saved_checkpoint_note(self.trainer)) from None
            raise

    def parse_arguments(self, parser: LightningArgumentParser, args: Any) -> None:
        self._started = time.time()
        command_line = sys.argv[1:] if args is None else args
        # A dict / Namespace of settings has no command line to name the run from.
        self._command_line = list(command_line) if isinstance(command_line, list | tuple) else []
        super().parse_arguments(parser, args)

    def before_instantiate_classes(self) -> None:
        # A device this machine lacks fails here, not after a pipeline has loaded.
        config = self.config[self.subcommand] if self.subcommand else self.config
        check_devices(config.as_dict())

    def instantiate_classes(self) -> None:
        super().instantiate_classes()
        # Names, tags, group, W&B mode, run directory, final validation (synthmask.callbacks.run_setup).
        self.run_dir = prepare_run(self, self._command_line, self._started)

    def _add_subcommands(self, parser: LightningArgumentParser, **kwargs: Any) -> None:
        super()._add_subcommands(parser, **kwargs)
        # Listed for `synthmask --help` only: main() runs these before LightningCLI parses.
        for name, help_text in EXTRA_COMMANDS.items():
            stub = LightningArgumentParser(description=help_text)
            parser._subcommands_action.add_subcommand(name, stub, help=help_text)

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.link_arguments(
            "data.num_classes", "model.init_args.num_classes", apply_on="instantiate"
        )
        parser.link_arguments(
            "data.class_names", "model.init_args.class_names", apply_on="instantiate"
        )

    def _parse_ckpt_path(self) -> None:
        subcommand = self.config.get("subcommand")
        ckpt_path = self.config[subcommand].get("ckpt_path") if subcommand else None
        if ckpt_path and ckpt_path not in ("last", "best", "hpc", "registry"):
            check_checkpoint_file(ckpt_path)
            try:
                super()._parse_ckpt_path()
            except (RuntimeError, ValueError, IndexError, KeyError, EOFError) as err:
                raise ValueError(
                    f"--ckpt_path {ckpt_path} could not be read as a checkpoint ({err}); give a "
                    ".ckpt file written by a run."
                ) from err
            return
        super()._parse_ckpt_path()

    def before_fit(self) -> None:
        bar = self.trainer.progress_bar_callback
        if isinstance(bar, RichProgressBar) and self.trainer.max_epochs == -1:
            # Step-limited runs (max_epochs: -1): "Epoch 3", not "Epoch 3/-2".
            bar._get_train_description = lambda epoch: f"Epoch {epoch}"  # type: ignore[method-assign]

    def after_fit(self) -> None:
        self._print_metric("val/mIoU", "final ", "validation_step")

    def after_validate(self) -> None:
        self._print_metric("val/mIoU", "", "validation_step")

    def after_test(self) -> None:
        self._print_metric("test/mIoU", "", "test_step")

    def _print_metric(self, name: str, prefix: str, step: str) -> None:
        """Print the metric on global rank zero (a plain line for users and scripts); modules
        without that evaluation step (e.g. a LoRA fine-tune) print nothing."""
        if not self.trainer.is_global_zero or not is_overridden(step, self.model):
            return
        value = self.trainer.callback_metrics.get(name)
        if value is None:
            print(f"synthmask: no {name} was logged (no validation/test ran)")
        else:
            print(f"synthmask: {prefix}{name} = {float(value):.6f}")


def _saved_checkpoint_note(trainer: Trainer) -> str:
    """What an interrupted fit left on disk and how to resume from it."""
    callback = trainer.checkpoint_callback
    last = getattr(callback, "last_model_path", "") or getattr(callback, "best_model_path", "")
    if last and Path(last).is_file():
        return f"the last checkpoint is {last}; resume with --ckpt_path={last}"
    return "no checkpoint was saved yet; rerun the same command to start again."


def _requested_devices(trainer: dict[str, Any]) -> int:
    """Number of processes `fit` would start for these trainer settings (one node)."""
    devices = trainer.get("devices", "auto")
    accelerator = str(trainer.get("accelerator") or "auto")
    if isinstance(devices, (list, tuple)):
        return len(devices)
    text = str(devices).strip()
    if "," in text:
        return len([d for d in text.split(",") if d.strip()])
    if text in ("auto", "-1"):
        gpus = torch.cuda.device_count() if accelerator in ("auto", "gpu", "cuda") else 0
        return max(1, gpus)
    try:
        return max(1, int(text))
    except ValueError:
        return 1


def check_one_process(trainer: dict[str, Any], args: Sequence[str]) -> None:
    """Refuse multi-process trainer settings outside torchrun (they would be ignored)."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        return  # under torchrun every rank synthesizes its own share
    count = _requested_devices(trainer)
    nodes = int(trainer.get("num_nodes") or 1)
    strategy = str(trainer.get("strategy") or "auto")
    multi = any(name in strategy for name in ("ddp", "fsdp", "deepspeed"))
    if count > 1 or nodes > 1 or multi:
        kept = [a for a in args if not a.startswith("--trainer.")]
        raise ValueError(
            f"`synthmask synthesize` runs in the one process it is started in; it does not start "
            f"ranks for trainer settings devices={trainer.get('devices')!r}, strategy={strategy!r}"
            f", num_nodes={nodes}. To shard synthesis over {max(count, 2)} processes run:\n"
            f"  torchrun --nproc_per_node={max(count, 2)} -m synthmask synthesize {' '.join(kept)}"
            "\n(each rank fills its share of the plan), or pass --trainer.devices=1 "
            "--trainer.strategy=auto for one process."
        )


class _DataOnlyCLI(SynthmaskCLI):
    """Parses a full experiment config but instantiates only its data module, without its
    validation data (``val_data``): no network is built and no pretrained weights are fetched."""

    command = SYNTHESIZE

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        super().add_arguments_to_parser(parser)
        if self.command == EXPORT:
            parser.add_argument(
                "--format", type=str, required=True, help="Layout: voc | folder (see README)."
            )
            parser.add_argument(
                "--output",
                type=str,
                required=True,
                help="Export folder: new, empty, or an earlier export of the same samples.",
            )
            parser.add_argument(
                "--force",
                action="store_true",
                help="Write into a folder that holds other files or another export: files of "
                "the same name are OVERWRITTEN, the other export's samples removed.",
            )
            parser.add_argument(
                "--val-share",
                type=float | None,
                default=None,
                help="voc: share of the samples listed in val.txt instead of train.txt, "
                "chosen by name (deterministic); default 0.1, 0 = none.",
            )

    def parse_arguments(self, parser: LightningArgumentParser, args: Any) -> None:
        command_line = sys.argv[1:] if args is None else args
        if isinstance(command_line, list | tuple) and {"-h", "--help"} & set(command_line):
            parser.print_help()  # LightningCLI's options, then the data module's own
            print(synthetic_data_help())
            raise SystemExit(0)
        super().parse_arguments(parser, args)

    def instantiate_classes(self) -> None:
        dumped = yaml.safe_load(self.parser.dump(self.config, skip_none=False))
        if self.command == SYNTHESIZE:
            check_one_process(dumped.get("trainer") or {}, sys.argv[1:])
        data = dumped["data"]
        if isinstance(data.get("init_args"), dict) and "val_data" in data["init_args"]:
            data["init_args"]["val_data"] = None  # synthesis and export never validate
        parser = LightningArgumentParser(exit_on_error=False)
        parser.add_lightning_class_args(
            LightningDataModule, "data", subclass_mode=True, required=True
        )
        config = parser.parse_object({"data": data})
        self.datamodule = parser.instantiate_classes(config).data
        self.model = None
        self.trainer = None
        self.synthesis_loggers = (
            _synthesis_loggers(dumped.get("trainer") or {}) if self.command == SYNTHESIZE else []
        )


SYNTHETIC_DATA_MODULE = "synthmask.datamodules.synthetic.SyntheticSegDataModule"


def synthetic_data_help(class_path: str = SYNTHETIC_DATA_MODULE) -> str:
    """The options of the synthetic data module and of each of its settings blocks (pipeline,
    prompts, mask classes, capture, synthesis, loader, augment, pruning), spelled as overrides
    (``--data.init_args.synthesis.num_images``); LightningCLI's own help shows one line per block."""
    module_name, _, name = class_path.rpartition(".")
    module_class = getattr(importlib.import_module(module_name), name)
    prefix = "data.init_args"
    sections = [_options_help(module_class, prefix)]
    hints = typing.get_type_hints(module_class.__init__)
    for param in inspect.signature(module_class).parameters:
        hint = hints.get(param)
        types = [t for t in typing.get_args(hint) or [hint] if isinstance(t, type)]
        types = [t for t in types if t is not type(None)]
        base = types[0] if len(types) == 1 else None
        if base is not None and base.__module__.startswith("synthmask.") and _subclasses(base):
            choices = _subclasses(base)  # a class_path choice (mask): each class's own options
        else:
            choices = [t for t in types if dataclasses.is_dataclass(t)]
        if param == "pipeline" or not choices:
            continue  # the module's section shows pipeline's fields already
        for choice in choices:
            title = f"[--{prefix}.{param}={choice.__name__}] " if len(choices) > 1 else ""
            sections.append(title + _options_help(choice, f"{prefix}.{param}"))
    heading = f"Options of the data module ({name}), settings blocks included:"
    return "\n\n".join([heading, *sections])


def _subclasses(base: type) -> list[type]:
    found, pending = [], list(base.__subclasses__())
    while pending:
        cls = pending.pop(0)
        if cls not in found and not cls.__name__.startswith("_"):
            found.append(cls)
        pending.extend(cls.__subclasses__())
    return found


def _options_help(cls: type, prefix: str) -> str:
    parser = ArgumentParser(add_help=False, usage=argparse.SUPPRESS, description=None)
    parser.add_class_arguments(cls, prefix, fail_untyped=False)
    return parser.format_help().strip("\n")


def _synthesis_loggers(trainer: dict[str, Any]) -> list[Any]:
    """The config's trainer callbacks that log a synthesis pass: those with a
    ``log_synthesis(datamodule, report)`` method (e.g. SynthesisStatsCallback -> W&B)."""
    callbacks = trainer.get("callbacks") or []
    if isinstance(callbacks, dict):
        callbacks = [callbacks]
    parser = LightningArgumentParser(exit_on_error=False)
    parser.add_argument("--callbacks", type=list[Callback] | None, default=None)
    built = parser.instantiate_classes(parser.parse_object({"callbacks": callbacks})).callbacks
    return [c for c in built or [] if callable(getattr(c, "log_synthesis", None))]


@contextlib.contextmanager
def _argv(argv: list[str]) -> Iterator[None]:
    """Run a CLI on ``argv`` as if typed (LightningCLI warns when given both args and argv)."""
    saved = sys.argv
    sys.argv = argv
    try:
        yield
    finally:
        sys.argv = saved


def _data_cli(command: str, args: Sequence[str], raise_parse_errors: bool = False) -> _DataOnlyCLI:
    cli_class = type(f"_{command.title()}CLI", (_DataOnlyCLI,), {"command": command})
    kwargs: dict[str, Any] = {"prog": f"synthmask {command}"}
    kwargs["description"] = DATA_COMMANDS[command]
    if raise_parse_errors:
        kwargs["exit_on_error"] = False
    with _argv([f"synthmask {command}", *args]):
        return cli_class(run=False, parser_kwargs=kwargs)


def _synthetic_datamodule(cli: _DataOnlyCLI, command: str) -> LightningDataModule:
    datamodule = cli.datamodule
    if not callable(getattr(datamodule, "synthesize", None)):
        raise ValueError(
            f"{type(datamodule).__name__} has no synthesize() method; `synthmask {command}` needs "
            "a synthetic data module (e.g. synthmask.datamodules.synthetic.SyntheticSegDataModule)"
        )
    return datamodule


def synthesize(args: Sequence[str], raise_parse_errors: bool = False) -> LightningDataModule:
    """Instantiate the config's data module and fill its cache via ``datamodule.synthesize()``."""
    cli = _data_cli(SYNTHESIZE, args, raise_parse_errors)
    datamodule = _synthetic_datamodule(cli, SYNTHESIZE)
    cache_dir = getattr(datamodule, "cache_dir", None)
    saved = (
        f"the samples finished so far are in the cache{f' {cache_dir}' if cache_dir else ''}; "
        "rerun the same command to resume (finished samples are not drawn again)."
    )
    with on_interrupt(saved):
        report = datamodule.synthesize()  # prints its own summary line
    if int(os.environ.get("RANK", "0")) == 0:
        for callback in cli.synthesis_loggers:
            callback.log_synthesis(datamodule, report)
    return datamodule


def export(args: Sequence[str], raise_parse_errors: bool = False) -> Any:
    """Write the cache filled by the same config to ``--output`` in ``--format``."""
    from synthmask.cache import SampleCache
    from synthmask.export import FORMATS, export_cache

    cli = _data_cli(EXPORT, args, raise_parse_errors)
    fmt, output = cli.config["format"], cli.config["output"]
    if fmt not in FORMATS:
        raise ValueError(f"--format {fmt!r} is not supported; use one of {list(FORMATS)}.")
    datamodule = _synthetic_datamodule(cli, EXPORT)
    cache_dir = Path(datamodule.cache_dir)
    if not cache_dir.is_dir():
        raise FileNotFoundError(
            f"cache_dir {cache_dir} does not exist: fill it first with `synthmask synthesize` "
            "and the same --config and overrides."
        )
    items = [(f"synth_{spec.index:06d}", spec.key) for spec in datamodule.plan()]
    saved = (
        f"the files written so far are in {output}; rerun the same command to resume "
        "(finished files are kept, partial ones redone)."
    )
    with on_interrupt(saved):
        report = export_cache(
            SampleCache(cache_dir, create=False),
            items,
            datamodule.class_names,
            output,
            fmt,
            source=datamodule.synthesizer.fingerprint(),
            force=bool(cli.config.get("force")),
            val_share=cli.config.get("val_share"),
        )
    held_out = f"; {report.val} of them in val.txt" if fmt == "voc" else ""
    print(
        f"synthmask: exported {len(items)} samples ({report.written} written, {report.skipped} "
        f"already there{held_out}) to {report.root}"
    )
    return report


def main(args: Sequence[str] | None = None, raise_parse_errors: bool = False) -> Any:
    """Entry point of the ``synthmask`` console script and ``python -m synthmask``.

    ``raise_parse_errors``: parser errors raise (for the console script's one-screen message)
    instead of printing usage and exiting with status 2.
    """
    argv = list(sys.argv[1:] if args is None else args)
    check_config_files(argv)  # names the file of a YAML or encoding error
    if argv and argv[0] == SYNTHESIZE:
        return synthesize(argv[1:], raise_parse_errors)
    if argv and argv[0] == EXPORT:
        return export(argv[1:], raise_parse_errors)
    if argv and argv[0] == RUNS:  # synthmask runs [DIR] [--csv FILE]
        from synthmask.run_records import main as runs_main

        raise SystemExit(runs_main(argv[1:]))
    if argv and argv[0] == "cache":  # synthmask cache verify|repair|stats DIR
        from synthmask.cache.commands import main as cache_main

        raise SystemExit(cache_main(argv[1:]))
    kwargs = {"parser_kwargs": {"exit_on_error": False}} if raise_parse_errors else {}
    return SynthmaskCLI(args=args, **kwargs)


def console_main() -> None:
    """The ``synthmask`` console script: run :func:`main`, exit 0 on success and 1 with a
    one-screen message on a user error (``--debug`` / ``SYNTHMASK_DEBUG=1``: full traceback).

    ``main`` returns the CLI object (handy in Python); a console script must not return it, or
    ``sys.exit`` prints it and exits with status 1.
    """
    debug = "--debug" in sys.argv[1:]
    sys.argv = [a for a in sys.argv if a != "--debug"]
    run_with_user_errors(lambda: main(raise_parse_errors=True), debug=debug)


if __name__ == "__main__":
    console_main()
