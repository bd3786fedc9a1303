"""The method comparison on the embedded task: `configs/compare_arithmetic.py:<method>[-<setting>]`.

    python -m trlx_jax.cli.sweep run launch/sweeps/compare_arithmetic.py --parallel=2

Every method starts from the same cached warm-up of its seed (configs/default.py's model, task
and `sft` section) and gets the same rollout budget, batch, learning rate and steps; methods
differ only in their loss section, which holds each paper's settings (configs/arithmetic.py).

Settings (`<method>` is main, `<method>-<setting>` the others):
- main: the default's 4 optimizer updates per rollout batch (64 sequences each), lr 2e-4.
- stale: 16 updates per rollout batch (16 sequences each: the last one is 15 updates stale),
  lr 2e-4: more off-policy data, where a ratio clip is known to struggle.
- stress: the same 16 updates at 5x the learning rate (1e-3): the trust regions have to act.
The compute per step is the same in all three (the same tokens through the model).

`sft_continued` is the baseline a reviewer asks for first: no RL, supervised training continued
from the same warm-up on the labelled problems it used (`train.algorithm="sft"`, the warm-up's
batch and learning rate) for about the wall time of the main setting's RL runs (SFT_STEPS,
measured, in docs/results.md).
"""

import importlib.util
import os

import ml_collections

_HERE = os.path.dirname(os.path.abspath(__file__))

RL_STEPS = 500
# SFT updates taking about the training time of RL_STEPS main-setting RL steps: on 2 CPU
# cores an RL step (rollout + 4 updates) takes ~2.4x a warm-up step (0.20 vs 0.083 s alone,
# 0.33 vs 0.14-0.19 s two jobs at a time), so 500 RL steps ~ 1,200 SFT steps; the measured
# seconds of both are in docs/results.md.
SFT_STEPS = 1200
METHODS = ("clip_higher", "dppo_binary_tv", "dppo_binary_kl", "dppo_topk_kl", "troll", "cispo")
SETTINGS = {
    "main": {},
    "stale": {"train.minibatches": 16},
    "stress": {"train.minibatches": 16, "optimizer.lr": 1e-3},
}


def _arithmetic(method: str) -> ml_collections.ConfigDict:
    spec = importlib.util.spec_from_file_location("trlx_jax_arithmetic_config",
                                                  os.path.join(_HERE, "arithmetic.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(method)


def get_config(arg: str = "troll") -> ml_collections.ConfigDict:
    method, _, setting = arg.partition("-")
    setting = setting or "main"
    valid = ", ".join([*METHODS, "sft_continued"])
    if method not in (*METHODS, "sft_continued") or setting not in SETTINGS:
        raise ValueError(f"unknown comparison {arg!r} for configs/compare_arithmetic.py; "
                         f"valid: <method>[-{'|-'.join(list(SETTINGS)[1:])}] with method "
                         f"one of {valid}")
    if method == "sft_continued":
        if setting != "main":
            raise ValueError(f"sft_continued has no {setting} setting (it takes no RL updates)")
        c = _arithmetic("troll")
        c.train.algorithm = "sft"
        c.train.steps = SFT_STEPS
        c.train.eval_every = SFT_STEPS // 10
    else:
        c = _arithmetic(method)
        c.train.steps = RL_STEPS
        c.train.eval_every = 50
        for key, value in SETTINGS[setting].items():
            section, name = key.split(".")
            c[section][name] = value
    c.train.checkpoint_every = c.train.eval_every
    c.logging.progress = False
    c.run_dir = f"runs/compare_arithmetic/{arg}"
    return c
