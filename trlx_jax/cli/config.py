"""Prints (and optionally saves) a resolved config: `python -m trlx_jax.cli.config --config=F`.

Use it to check overrides before launching a run or a sweep:
    python -m trlx_jax.cli.config --config=configs/default.py --config.loss.eps_high=0.28
    python -m trlx_jax.cli.config --config=configs/default.py --help_config   # every key
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from trlx_jax.config import ConfigError, flat_keys, load_config, save_config


def parse_args(argv: Sequence[str]) -> tuple[argparse.Namespace, list[str]]:
    """Splits argv into this command's options and the `--config.KEY=VALUE` overrides."""
    parser = argparse.ArgumentParser(
        prog="python -m trlx_jax.cli.config",
        description="Resolve a config file with dotted overrides and print it as JSON.",
        epilog="Overrides: --config.SECTION.KEY=VALUE (repeatable); unknown keys are errors.",
    )
    parser.add_argument("--config", required=True, help="config file, optionally path.py:arg")
    parser.add_argument("--save_to", default="", help="also write RUN_DIR/config.json")
    parser.add_argument("--help_config", action="store_true", help="list every config key")
    overrides = [a for a in argv if a.startswith("--config.")]
    rest = [a for a in argv if not a.startswith("--config.")]
    return parser.parse_args(rest), overrides


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the process exit code (2 for a bad config or override)."""
    args, overrides = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        config = load_config(args.config, overrides)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.help_config:
        print("\n".join(flat_keys(config)))
        return 0
    print(config.to_json_best_effort(indent=2, sort_keys=True))
    if args.save_to:
        print(f"saved {save_config(config, args.save_to)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
