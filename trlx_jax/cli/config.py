"""Prints (and optionally saves) a resolved config: `python -m trlx_jax.cli.config --config=F`.

Use it to check overrides before launching a run or a sweep:
    python -m trlx_jax.cli.config --config=configs/default.py --config.loss.eps_high=0.28
    python -m trlx_jax.cli.config --config=configs/default.py --help_config   # every key
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import ml_collections

from trlx_jax.config import ConfigError, flat_keys, load_config, save_config


def config_parser(prog: str, description: str) -> argparse.ArgumentParser:
    """The options every config-driven command takes: --config and --help_config."""
    parser = argparse.ArgumentParser(
        prog=prog, description=description,
        epilog="Overrides: --config.SECTION.KEY=VALUE (repeatable); unknown keys are errors.",
    )
    parser.add_argument("--config", required=True, help="config file, optionally path.py:arg")
    parser.add_argument("--help_config", action="store_true", help="list every config key")
    return parser


def split_overrides(
    parser: argparse.ArgumentParser, argv: Sequence[str]
) -> tuple[argparse.Namespace, list[str]]:
    """Splits argv into the parser's options and the `--config.KEY=VALUE` overrides."""
    overrides = [a for a in argv if a.startswith("--config.")]
    rest = [a for a in argv if not a.startswith("--config.")]
    return parser.parse_args(rest), overrides


def resolve_config(
    args: argparse.Namespace, overrides: Sequence[str]
) -> ml_collections.ConfigDict | int:
    """The loaded config, or the exit code when there is nothing more to do (2: a bad config
    or override, reported on stderr; 0: --help_config listed the keys)."""
    try:
        config = load_config(args.config, overrides)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.help_config:
        print("\n".join(flat_keys(config)))
        return 0
    return config


def parse_args(argv: Sequence[str]) -> tuple[argparse.Namespace, list[str]]:
    """Splits argv into this command's options and the `--config.KEY=VALUE` overrides."""
    parser = config_parser("python -m trlx_jax.cli.config",
                           "Resolve a config file with dotted overrides and print it as JSON.")
    parser.add_argument("--save_to", default="", help="also write RUN_DIR/config.json")
    return split_overrides(parser, argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the process exit code (2 for a bad config or override)."""
    args, overrides = parse_args(sys.argv[1:] if argv is None else argv)
    config = resolve_config(args, overrides)
    if isinstance(config, int):
        return config
    print(config.to_json_best_effort(indent=2, sort_keys=True))
    if args.save_to:
        print(f"saved {save_config(config, args.save_to)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
