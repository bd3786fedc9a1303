"""Sweep: the embedded arithmetic experiment with four losses x three seeds, 300 RL steps.

    python -m trlx_jax.cli.sweep status launch/sweeps/loss_comparison.py
    python -m trlx_jax.cli.sweep run launch/sweeps/loss_comparison.py
    python -m trlx_jax.cli.sweep print launch/sweeps/loss_comparison.py --form=slurm

Each method is its configs/arithmetic.py variant (the paper settings of its loss section);
every job shares the cached warm-up, so it starts RL at once after the first.
"""


def get_sweep():
    return {
        "config": "configs/arithmetic.py",
        "points": [{"config": f"configs/arithmetic.py:{method}"}
                   for method in ("troll", "clip", "clip_higher", "dppo_binary_tv")],
        "overrides": {"train.steps": 300, "logging.progress": False},
        "seeds": [0, 1, 2],
    }
