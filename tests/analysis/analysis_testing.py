"""Synthetic run directories (the files a trainer writes) for the analysis tests."""

import json
import os


def write_run(root, name: str, *, loss_name: str, seed: int, steps: int = 6,
              offset: float = 0.0, samples: list[dict] | None = None) -> str:
    """A run directory with config.json, metrics.jsonl, summary.json and samples.jsonl."""
    path = os.path.join(str(root), name)
    os.makedirs(path, exist_ok=True)
    config = {"seed": seed, "loss_name": loss_name, "run_dir": path,
              "train": {"steps": steps}, "loss": {"eps_high": 0.2}}
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump(config, f)
    rows = [{"step": 0, "eval/accuracy": 0.1 + offset}]
    for step in range(1, steps + 1):
        rows.append({"step": step, "reward/mean": step / steps + offset, "accuracy": 0.5,
                     "approx_kl": 0.01 * step, "clip_frac": 0.0 if loss_name == "troll" else 0.1,
                     "troll_projected_frac": 0.2 if loss_name == "troll" else 0.0,
                     "entropy": 1.0, "response/length_mean": 4.0,
                     "time/rollout": 0.5 if step > 1 else 9.0, "time/reward": 0.1,
                     "time/logprob": 0.0, "time/update": 1.0, "time/step": 1.6})
    rows.append({"step": steps, "eval/accuracy": 0.5 + offset})
    with open(os.path.join(path, "metrics.jsonl"), "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)
    summary = {"steps": steps, "accuracy_warm_start": 0.1 + offset,
               "accuracy_last3_mean": 0.5 + offset, "seconds_total": 10.0}
    with open(os.path.join(path, "summary.json"), "w") as f:
        json.dump(summary, f)
    with open(os.path.join(path, "samples.jsonl"), "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in samples or [])
    return path
