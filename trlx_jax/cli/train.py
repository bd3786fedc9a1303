"""The main job: `python -m trlx_jax.cli.train --config=configs/default.py [--config.KEY=VALUE]`.

Warm-up (cached), RL with periodic greedy evaluation, then a table of the results and the
paths of the run directory and plots. `--help_config` lists every key.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from trlx_jax.cli.config import config_parser, resolve_config, split_overrides
from trlx_jax.config import ConfigError
from trlx_jax.distributed import DistributedError
from trlx_jax.distributed import initialize as initialize_distributed


def parse_args(argv: Sequence[str]) -> tuple[argparse.Namespace, list[str]]:
    """Splits argv into this command's options and the `--config.KEY=VALUE` overrides."""
    parser = config_parser("python -m trlx_jax.cli.train",
                           "Run an RL experiment (warm-up + RL) from a config file.")
    return split_overrides(parser, argv)


def _quiet_dataset_preparation() -> None:
    """TFDS prints progress bars and absl warnings while preparing a task; keep the log for
    the run's own progress and results."""
    import tensorflow_datasets as tfds
    from absl import logging as absl_logging

    tfds.disable_progress_bar()
    absl_logging.set_verbosity(absl_logging.ERROR)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit code (2 for a bad config or override)."""
    args, overrides = parse_args(sys.argv[1:] if argv is None else argv)
    config = resolve_config(args, overrides)
    if isinstance(config, int):
        return config
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    # Before anything touches a device: a multi-process run joins its peers here.
    try:
        layout = initialize_distributed()
    except DistributedError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if layout is not None:
        print(f"distributed: {layout.describe()}", flush=True)
    _quiet_dataset_preparation()
    from trlx_jax.trainer.loop import Trainer, format_summary

    try:
        trainer = Trainer(config)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"run directory: {config.run_dir}  (loss {config.loss_name}, seed {config.seed})",
          flush=True)
    try:
        summary = trainer.run()
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if summary["interrupted"]:
        return 0  # the loop printed where the checkpoint is and how to resume
    if summary["resumed_from_step"] == config.train.steps:
        print(f"{config.run_dir} already holds the complete run ({config.train.steps} steps); "
              "its results (wall times are this invocation's):")
    print(format_summary(summary, config.run_dir))
    return 0


if __name__ == "__main__":
    sys.exit(main())
