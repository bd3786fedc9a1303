"""Default hyper-parameters of every policy loss, in one locked ConfigDict (`config.loss`), and
the domain of each: the losses and the trainer's config validation check against `DOMAINS`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import ml_collections
from ml_collections import config_dict

from trlx_jax.checks import Choice, Domain, check_table
from trlx_jax.objectives.aggregation import MODES

KL_ESTIMATORS = ("k1", "k3")
OLD_SOURCES = ("rollout", "recompute")


def get_default_config() -> ml_collections.ConfigDict:
    """Loss settings read by the registered losses; each loss reads only the keys it needs."""
    c = ml_collections.ConfigDict()
    # Aggregation of per-token terms: token-mean | seq-mean-token-sum | seq-mean-token-mean |
    # seq-mean-token-sum-norm. `norm_length` is the constant divisor of the last mode (0: the
    # padded response length T).
    c.aggregation = "token-mean"
    c.norm_length = 0
    # Numerical safety: log-ratios are capped at this value before exp.
    c.log_ratio_cap = 20.0
    # clip (PPO/GRPO, clip-higher via eps_high, dual-clip via dual_clip_c; inf disables it).
    c.eps_low = 0.2
    c.eps_high = 0.2
    c.dual_clip_c = float("inf")
    # gspo: sequence-level ratio clip range (GSPO paper values).
    c.gspo_eps_low = 3e-4
    c.gspo_eps_high = 4e-4
    # Importance-weight cap C of cispo and the dppo_* losses (inf allowed and explicit).
    c.is_cap = float("inf")
    # dppo_*: divergence thresholds; None selects the paper value of the variant
    # (0.05 for the KL variants, 0.15 for the TV variants). Typed placeholders so that
    # `--config.loss.delta_low=0.2` can override them from the command line.
    c.delta_low = config_dict.placeholder(float)
    c.delta_high = config_dict.placeholder(float)
    # Optional KL-to-reference penalty: coefficient (0 = off) and estimator (k1 | k3).
    c.kl_coef = 0.0
    c.kl_estimator = "k3"
    # troll / troll_gspo (specs/troll.md): KL bound, regression weight, sparse support size and
    # mass threshold, where the old policy's top-K comes from (rollout | recompute), and the
    # variant that uses the new policy's true log-probs on the whole union (off: the reference).
    c.troll_eps = 0.05
    c.troll_alpha = 1.0
    c.troll_k = 64
    c.troll_delta = 1e-5
    c.troll_old_source = "rollout"
    c.troll_new_logp_on_union = False
    c.gspo_log_ratio_cap = 10.0
    c.lock()
    return c


DOMAINS: dict[str, Domain | Choice] = {
    "aggregation": Choice(MODES),
    "norm_length": Domain(0, integer=True, note="(0: the padded length T)"),
    "log_ratio_cap": Domain(0, low_open=True, finite=True),
    "eps_low": Domain(0, 1, high_open=True),
    "eps_high": Domain(0),
    "dual_clip_c": Domain(1, low_open=True, note="(inf = off)"),
    "gspo_eps_low": Domain(0, 1, high_open=True),
    "gspo_eps_high": Domain(0),
    "is_cap": Domain(0, low_open=True, note="(inf = no cap)"),
    "delta_low": Domain(0, low_open=True, none_ok="the paper value of the variant"),
    "delta_high": Domain(0, low_open=True, none_ok="the paper value of the variant"),
    "kl_coef": Domain(0, finite=True, note="(0 = off)"),
    "kl_estimator": Choice(KL_ESTIMATORS),
    "troll_eps": Domain(0, low_open=True, finite=True),
    "troll_alpha": Domain(0, finite=True),
    "troll_k": Domain(1, integer=True),
    "troll_delta": Domain(0, 1, high_open=True),
    "troll_old_source": Choice(OLD_SOURCES),
    # An upper bound on the sequence log-ratio: any finite value is well defined (tests force
    # the cap with a negative one).
    "gspo_log_ratio_cap": Domain(finite=True),
}


def check_loss_config(cfg: Mapping[str, Any], prefix: str = "") -> None:
    """Raises ArgumentError naming the first setting of `cfg` outside its domain in `DOMAINS`."""
    check_table(cfg, DOMAINS, prefix)
