"""Synthetic run directories (the files a trainer writes) for the analysis tests."""

import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


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
               "accuracy_last3_mean": 0.5 + offset, "seconds_total": 10.0,
               "eval_history": [r for r in rows if "eval/accuracy" in r]}
    with open(os.path.join(path, "summary.json"), "w") as f:
        json.dump(summary, f)
    with open(os.path.join(path, "samples.jsonl"), "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in samples or [])
    return path


# configs/arithmetic.py shrunk to seconds (as tests/trainer/trainer_testing.run_config): a tiny
# model and task, no warm-up, 4 RL steps, checkpoints at steps 2 and 4.
TINY = {
    "data.task_options": "num_train=300,num_test=40",
    "data.prompts_per_step": 4,
    "rollout.num_samples": 4,
    "rollout.record_top_k": 8,
    "loss.troll_k": 8,
    "model.hidden_size": 32,
    "model.intermediate_size": 64,
    "model.head_dim": 8,
    "train.steps": 4,
    "train.minibatches": 2,
    "train.eval_every": 2,
    "train.eval_examples": 16,
    "train.checkpoint_every": 2,
    "sft.steps": 0,
    "logging.progress": False,
    "mesh.shape": (1, 1, 1),
}
SWEEP_METHODS = ("clip", "troll")  # troll: quickstart trains the default, TROLL
SWEEP_SEEDS = (0, 1)


def compilation_cache_env(root) -> dict[str, str]:
    """Environment variables that give a process JAX's persistent compilation cache in
    root/jax_cache, every program cached: the sweep's processes and the notebooks' kernels
    then compile each program once between them."""
    return {"JAX_COMPILATION_CACHE_DIR": os.path.join(str(root), "jax_cache"),
            "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
            "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "-1"}


def tiny_sweep(root) -> str:
    """trlx_jax.analysis.demo.demo_sweep at TINY size under root/runs (2 methods x 2 seeds), in
    a subprocess with `compilation_cache_env(root)` (the cache stays out of the test process);
    returns that directory."""
    runs = os.path.join(str(root), "runs")
    overrides = {**TINY, "data.data_dir": os.path.join(str(root), "tfds")}
    code = ("import sys, json\n"
            "from trlx_jax.analysis.demo import demo_sweep\n"
            "demo_sweep(sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3]),"
            " json.loads(sys.argv[4]), progress=False)\n")
    path = os.pathsep.join(filter(None, [ROOT, os.environ.get("PYTHONPATH")]))
    subprocess.run([sys.executable, "-c", code, runs, json.dumps(SWEEP_METHODS),
                    json.dumps(SWEEP_SEEDS), json.dumps(overrides)], check=True, cwd=str(root),
                   env={**os.environ, "PYTHONPATH": path, **compilation_cache_env(root)})
    return runs


def shared_tiny_sweep(tmp_path_factory, worker_id: str) -> tuple[str, dict[str, str]]:
    """`tiny_sweep` made once per test session, shared by every module and xdist worker (a
    file lock in the session's temporary directory): (its runs directory, its
    compilation-cache environment)."""
    from filelock import FileLock

    base = tmp_path_factory.getbasetemp()
    # xdist workers each get base = <session>/popen-gw<N>: share the session directory.
    root = (base if worker_id == "master" else base.parent) / "tiny_sweep"
    with FileLock(f"{root}.lock"):
        done = root / "complete"
        if not done.exists():
            root.mkdir(exist_ok=True)
            tiny_sweep(root)
            done.touch()
    return os.path.join(str(root), "runs"), compilation_cache_env(root)
