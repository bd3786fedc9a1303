"""Greedy accuracy and pass@k of a policy on a task split, in batches.

    python -m trlx_jax.cli.evaluate --run_dir=R [--step=N]
    python -m trlx_jax.cli.evaluate --model=D --config=configs/gsm8k.py:qwen2.5-0.5b

With --run_dir the policy is the run's latest checkpoint (or --step's) and the task, prompts
and rewards are the run's config; results go to R/evaluation/. With --model (an HF directory,
e.g. written by cli.export) the task comes from --config (with --config.KEY=VALUE overrides)
and results go to --out (default D/evaluation/). Each evaluation writes
`<split>_step<N>.json` (the figures; `<split>.json` for --model) and a `.jsonl` of every
greedy completion next to it.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from collections.abc import Sequence
from typing import Any

import ml_collections

from trlx_jax.cli.config import split_overrides
from trlx_jax.config import ConfigError, load_config


def merge_metrics(chunks: Sequence[dict[str, float]]) -> dict[str, float]:
    """Evaluation metrics of several batches as one: counts add, `*_max` keys take the max,
    everything else is a mean weighted by each batch's eval/num_problems."""
    counts = [c["eval/num_problems"] for c in chunks]
    total = sum(counts)
    merged = {}
    for key in chunks[0]:
        values = [c[key] for c in chunks]
        if key == "eval/num_problems":
            merged[key] = total
        elif key.endswith("_max"):
            merged[key] = max(values)
        else:
            merged[key] = sum(v * n for v, n in zip(values, counts, strict=True)) / total
    return merged


def evaluate_split(parts: Any, params: Any, *, split: str, num_examples: int, batch_size: int,
                   pass_k: int, max_new_tokens: int, seed: int
                   ) -> tuple[dict[str, float], list[dict[str, Any]]]:
    """(metrics, one row per greedy completion) on the first `num_examples` problems of
    `split` (0: all), `batch_size` prompts per sampler call."""
    import jax

    from trlx_jax.trainer import phases

    source = parts.train_source if split == "train" else parts.test_source
    n = len(source) if num_examples <= 0 else min(num_examples, len(source))
    chunks, rows = [], []
    key = jax.random.key(seed)
    for start in range(0, n, batch_size):
        chunk = dataclasses.replace(parts, test_source=source[start:min(start + batch_size, n)])
        batch = phases.eval_batch(chunk, batch_size)
        metrics, logged = phases.evaluate(
            chunk, params, batch, jax.random.fold_in(key, start), max_new_tokens=max_new_tokens,
            pass_k=pass_k, samples_logged=len(batch.prompts))
        chunks.append(metrics)
        rows += logged
    return merge_metrics(chunks), rows


def parse_args(argv: Sequence[str]) -> tuple[argparse.Namespace, list[str]]:
    """Splits argv into this command's options and the `--config.KEY=VALUE` overrides."""
    parser = argparse.ArgumentParser(
        prog="python -m trlx_jax.cli.evaluate",
        description="Greedy accuracy and pass@k of a run's checkpoint or an HF model directory.",
        epilog="With --model: --config=F and --config.SECTION.KEY=VALUE overrides set the task.")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--run_dir", help="a run directory (config.json, checkpoints/)")
    source.add_argument("--model", help="an HF model directory (needs --config)")
    parser.add_argument("--config", help="with --model: the config file (path.py[:arg])")
    parser.add_argument("--step", type=int, default=None, help="with --run_dir: the checkpoint "
                        "step (default: the latest)")
    parser.add_argument("--split", choices=("test", "train"), default="test")
    parser.add_argument("--num_examples", type=int, default=0,
                        help="problems to evaluate (default 0: the whole split)")
    parser.add_argument("--pass_k", type=int, default=None,
                        help="samples per problem for pass@k (default: train.eval_pass_k)")
    parser.add_argument("--batch_size", type=int, default=256, help="prompts per sampler call")
    parser.add_argument("--out", default=None, help="results directory (default: "
                        "RUN_DIR/evaluation or MODEL/evaluation)")
    args, overrides = split_overrides(parser, argv)
    if args.model and not args.config:
        parser.error("--model needs --config (the task, prompt format and rewards)")
    if args.run_dir and (args.config or overrides):
        parser.error("--run_dir evaluates with the run's own config; --config and "
                     "--config.KEY=VALUE go with --model")
    if args.model and args.step is not None:
        parser.error("--step selects a checkpoint of --run_dir")
    if args.batch_size < 1:
        parser.error(f"--batch_size must be >= 1, got {args.batch_size}")
    return args, overrides


def _policy(args: argparse.Namespace, overrides: Sequence[str]
            ) -> tuple[ml_collections.ConfigDict, Any, Any, int | None, str]:
    """(config, components, params, step, results directory) of the policy to evaluate."""
    from trlx_jax.cli.export import load_run_config, restore_params
    from trlx_jax.trainer.build import build

    if args.run_dir:
        config = load_run_config(args.run_dir)
        parts = build(config, args.run_dir)
        step, params = restore_params(config, args.run_dir, parts.params, parts.mesh, args.step)
        return config, parts, params, step, args.out or os.path.join(args.run_dir, "evaluation")
    config = load_config(args.config, [*overrides, f"model.path={args.model}"])
    out = args.out or os.path.join(args.model, "evaluation")
    return config, build(config, out), None, None, out


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit code (2: a bad run directory, model or config)."""
    args, overrides = parse_args(sys.argv[1:] if argv is None else argv)
    import jax

    try:
        config, parts, params, step, out = _policy(args, overrides)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    pass_k = config.train.eval_pass_k if args.pass_k is None else args.pass_k
    metrics, rows = evaluate_split(
        parts, parts.params if params is None else params, split=args.split,
        num_examples=args.num_examples, batch_size=args.batch_size, pass_k=pass_k,
        max_new_tokens=config.rollout.max_new_tokens, seed=config.seed)
    name = args.split if step is None else f"{args.split}_step{step}"
    result = {"policy": args.run_dir or args.model, "step": step, "split": args.split,
              "task": config.data.task, "max_new_tokens": config.rollout.max_new_tokens,
              **{k.removeprefix("eval/"): v for k, v in metrics.items()}}
    if jax.process_index() == 0:
        os.makedirs(out, exist_ok=True)
        with open(os.path.join(out, f"{name}.json"), "w") as f:
            json.dump(result, f, indent=2)
        with open(os.path.join(out, f"{name}.jsonl"), "w") as f:
            f.writelines(json.dumps(row) + "\n" for row in rows)
    problems = int(metrics["eval/num_problems"])
    line = (f"greedy accuracy {100 * metrics['eval/accuracy']:.1f}% on {problems} {args.split} "
            "problems")
    if pass_k:
        line += f", pass@{pass_k} {100 * metrics[f'eval/pass@{pass_k}']:.1f}%"
    print(f"{line}  ({result['policy']}, step {step})\nwrote {os.path.join(out, name)}.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
