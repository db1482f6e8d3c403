"""``synthmask`` command line: LightningCLI (fit/validate/test/predict) plus ``synthesize``.

    synthmask fit --config experiments/folder_example.yaml --data.init_args.root=/path/to/set
    synthmask synthesize --config experiments/<synthetic>.yaml

``data.num_classes`` and ``data.class_names`` are linked into ``model.init_args`` at instantiation
(a link whose source or target does not exist is skipped, so modules / data modules without class
counts work too). The segmentation net's config leaves ``num_classes`` out: SegmentationModule
builds the net from it with its own ``num_classes``, so a config states the count once, in the data.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

import yaml
from lightning.pytorch import LightningDataModule, LightningModule, Trainer
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI, SaveConfigCallback
from lightning.pytorch.loggers import Logger

SYNTHESIZE = "synthesize"


class LoggerSaveConfigCallback(SaveConfigCallback):
    """Saves the resolved config (as LightningCLI does) and also records it in every logger,
    so the W&B run config holds the full experiment (model, data, trainer, seed)."""

    def save_config(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        config = yaml.safe_load(self.parser.dump(self.config, skip_none=False))
        config.pop("config", None)
        for logger in trainer.loggers:
            if isinstance(logger, Logger):
                logger.log_hyperparams({"cli": config})


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

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.link_arguments(
            "data.num_classes", "model.init_args.num_classes", apply_on="instantiate"
        )
        parser.link_arguments(
            "data.class_names", "model.init_args.class_names", apply_on="instantiate"
        )

    def after_fit(self) -> None:
        self._print_metric("val/mIoU", "final ")

    def after_validate(self) -> None:
        self._print_metric("val/mIoU")

    def after_test(self) -> None:
        self._print_metric("test/mIoU")

    def _print_metric(self, name: str, prefix: str = "") -> None:
        """Print the metric on global rank zero (a plain line for users and scripts)."""
        if not self.trainer.is_global_zero:
            return
        value = self.trainer.callback_metrics.get(name)
        if value is None:
            print(f"synthmask: no {name} was logged (no validation/test ran)")
        else:
            print(f"synthmask: {prefix}{name} = {float(value):.6f}")


class _DataOnlyCLI(SynthmaskCLI):
    """Parses a full experiment config but instantiates only its data module (for synthesis):
    no network is built and no pretrained weights are fetched."""

    def instantiate_classes(self) -> None:
        parser = LightningArgumentParser(exit_on_error=False)
        parser.add_lightning_class_args(
            LightningDataModule, "data", subclass_mode=True, required=True
        )
        dumped = yaml.safe_load(self.parser.dump(self.config, skip_none=False))
        config = parser.parse_object({"data": dumped["data"]})
        self.datamodule = parser.instantiate_classes(config).data
        self.model = None
        self.trainer = None


def synthesize(args: Sequence[str]) -> LightningDataModule:
    """Instantiate the config's data module and fill its cache via ``datamodule.synthesize()``."""
    cli = _DataOnlyCLI(run=False, args=list(args))
    datamodule = cli.datamodule
    synthesize_fn = getattr(datamodule, "synthesize", None)
    if not callable(synthesize_fn):
        raise ValueError(
            f"{type(datamodule).__name__} has no synthesize() method; `synthmask synthesize` needs "
            "a synthetic data module (e.g. synthmask.datamodules.synthetic.SyntheticSegDataModule)"
        )
    synthesize_fn()
    return datamodule


def main(args: Sequence[str] | None = None) -> SynthmaskCLI | LightningDataModule:
    """Entry point of the ``synthmask`` console script and ``python -m synthmask``."""
    argv = list(sys.argv[1:] if args is None else args)
    if argv and argv[0] == SYNTHESIZE:
        return synthesize(argv[1:])
    return SynthmaskCLI(args=args)


def console_main() -> None:
    """The ``synthmask`` console script: run :func:`main` and exit with status 0 on success.

    ``main`` returns the CLI object (handy in Python); a console script must not return it, or
    ``sys.exit`` prints it and exits with status 1.
    """
    main()


if __name__ == "__main__":
    console_main()
