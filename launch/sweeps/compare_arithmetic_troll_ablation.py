"""Sweep: TROLL's stale-setting result of docs/results.md taken apart (3 seeds each).

    python -m trlx_jax.cli.sweep run launch/sweeps/compare_arithmetic_troll_ablation.py --parallel=2

`troll-stale` (configs/compare_arithmetic.py) without the regression term (alpha 0: the network
is not pulled toward its projection) and with a 5x looser trust region (eps 0.25, the paper's
upper ablation); the unchanged configuration is in launch/sweeps/compare_arithmetic.py.
"""

CONFIG = "configs/compare_arithmetic.py:troll-stale"


def get_sweep():
    return {
        "config": CONFIG,
        "points": [{"loss.troll_alpha": 0.0}, {"loss.troll_eps": 0.25}],
        "seeds": [0, 1, 2],
        "root": "runs/compare_arithmetic_ablation",
    }
