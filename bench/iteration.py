"""Where an RL iteration's time goes, from a run's metrics.jsonl; prints a markdown table.

    python -m trlx_jax.cli.train --config=configs/default.py      # the main job -> runs/default
    python bench/iteration.py runs/default

Phases as the loop times them (`trlx_jax.trainer.loop`): rollout (sampling, until the tokens
reach the host), reward (decode + reward functions + advantages), log-prob (reference /
recomputed behaviour policy; empty unless configured), update (the jitted rl_train_step, until
its metrics reach the host). Step 1 (compilation) and evaluation steps are left out; figures
are medians over the remaining steps.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics

PHASES = ("rollout", "reward", "logprob", "update")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("run_dir")
    args = parser.parse_args()
    with open(os.path.join(args.run_dir, "metrics.jsonl")) as f:
        rows = [json.loads(line) for line in f if line.strip()]
    steps = [r for r in rows if r["step"] > 1 and "time/step" in r and "eval/accuracy" not in r]
    if not steps:
        raise SystemExit(f"{args.run_dir}: no timed steps after the first in metrics.jsonl")
    total = statistics.median(r["time/step"] for r in steps)
    print(f"run: {args.run_dir}, {len(steps)} steps (step 1 and evaluation steps left out)")
    print("| phase | median ms | share of the step |")
    print("|---|---|---|")
    for phase in PHASES:
        ms = 1000 * statistics.median(r[f"time/{phase}"] for r in steps)
        print(f"| {phase} | {ms:.1f} | {ms / (1000 * total):.0%} |")
    print(f"| step | {1000 * total:.1f} | 100% |")
    first = next(r for r in rows if r["step"] == 1)
    print(f"step 1 (compiles the sampler and the train step): {first['time/step']:.1f} s")
    for key in ("tokens_per_s/rollout", "tokens_per_s/update"):
        print(f"{key}: {statistics.median(r[key] for r in steps):,.0f}")


if __name__ == "__main__":
    main()
