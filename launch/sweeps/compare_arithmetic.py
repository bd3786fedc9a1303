"""Sweep: the method comparison of docs/results.md (configs/compare_arithmetic.py).

    python -m trlx_jax.cli.sweep run launch/sweeps/compare_arithmetic.py --parallel=2
    python -m trlx_jax.cli.sweep aggregate launch/sweeps/compare_arithmetic.py

Six losses in the main, the stress and the stale setting, and the continued-SFT baseline,
3 seeds each (57 runs); every run of a seed starts from that seed's cached warm-up.
"""

CONFIG = "configs/compare_arithmetic.py"
METHODS = ("clip_higher", "dppo_binary_tv", "dppo_binary_kl", "dppo_topk_kl", "troll", "cispo")


def get_sweep():
    return {
        "config": CONFIG,
        "points": [*({"config": f"{CONFIG}:{m}"} for m in METHODS),
                   {"config": f"{CONFIG}:sft_continued"},
                   *({"config": f"{CONFIG}:{m}-stress"} for m in METHODS),
                   *({"config": f"{CONFIG}:{m}-stale"} for m in METHODS)],
        "seeds": [0, 1, 2],
        "root": "runs/compare_arithmetic",
    }
