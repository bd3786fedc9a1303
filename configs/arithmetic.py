"""The embedded arithmetic experiment for every registered loss: `configs/arithmetic.py:<method>`.

    python -m trlx_jax.cli.train --config=configs/arithmetic.py:clip_higher

Methods share configs/default.py (model, task, warm-up, rollout budget, optimizer, steps) and
differ only in `loss_name` and the loss section, which holds each paper's settings:
TROLL K = 64, eps = 0.05, alpha = 1; DPPO delta 0.15 (TV) / 0.05 (KL); PPO/GRPO clip 0.2 and
clip-higher 0.2 / 0.28; GSPO 3e-4 / 4e-4 on sequence-mean token-mean; CISPO without a cap.
"""

import importlib.util
import os

import ml_collections

_DEFAULT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "default.py")

# method -> (loss_name, loss-section changes)
METHODS = {
    "troll": ("troll", {}),
    "troll_gspo": ("troll_gspo", {"aggregation": "seq-mean-token-mean"}),
    "clip": ("clip", {"eps_low": 0.2, "eps_high": 0.2}),
    "clip_higher": ("clip", {"eps_low": 0.2, "eps_high": 0.28}),
    "dppo_binary_tv": ("dppo_binary_tv", {}),
    "dppo_binary_kl": ("dppo_binary_kl", {}),
    "dppo_topk_tv": ("dppo_topk_tv", {}),
    "dppo_topk_kl": ("dppo_topk_kl", {}),
    "gspo": ("gspo", {"aggregation": "seq-mean-token-mean"}),
    "cispo": ("cispo", {}),
}


def _default_config() -> ml_collections.ConfigDict:
    spec = importlib.util.spec_from_file_location("trlx_jax_default_config", _DEFAULT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config()


def get_config(method: str = "troll") -> ml_collections.ConfigDict:
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r} for configs/arithmetic.py; "
                         f"valid: {', '.join(METHODS)}")
    c = _default_config()
    loss_name, changes = METHODS[method]
    c.loss_name = loss_name
    c.loss.update(changes)
    c.run_dir = f"runs/arithmetic_{method}"
    return c
