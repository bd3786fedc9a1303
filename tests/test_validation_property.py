"""Property: random malformed inputs to each public function either raise an error whose
message names an argument, or give finite outputs (never a raw JAX error or a silent NaN).

Each case takes valid inputs and breaks one argument at random (seeded): a wrong rank or axis
size, float ids, out-of-range ids, scalars outside their domain, a missing batch key.
"""

import re
import zlib
from collections.abc import Callable
from typing import Any

import jax
import numpy as np
import pytest
from flax import nnx

from trlx_jax.data import RewardError, call_reward
from trlx_jax.data.prompts import left_pad
from trlx_jax.models import ModelConfig, init_model
from trlx_jax.objectives import advantage_estimator, dppo, policy_loss
from trlx_jax.objectives.aggregation import aggregate
from trlx_jax.objectives.config import get_default_config
from trlx_jax.objectives.metrics import Metric
from trlx_jax.ops.logprobs import token_logprobs
from trlx_jax.ops.projection import kl_projection
from trlx_jax.ops.sparse_support import sparse_support
from trlx_jax.ops.topk import top_k_by_blocks
from trlx_jax.rollout import SamplingParams, generate

V = 16
CASES = 12
RNG = np.random.default_rng(0)


def floats(*shape):
    return -RNG.uniform(0.1, 3.0, shape).astype(np.float32)


def ids(*shape):
    return RNG.integers(0, V, shape).astype(np.int32)


# name -> (function of keyword arguments, valid arguments, kind of each breakable argument).
# Kinds: "float" / "ids" / "mask" arrays; scalars "pos" (> 0), "prob" (in [0, 1]), "count"
# (an integer >= 1) and "k" (an id or a K: also refused from V on); "texts"; "batch" dicts.
def _specs() -> dict[str, tuple[Callable, dict[str, Any], dict[str, str]]]:
    b, t, k = 2, 3, 2
    hidden = RNG.standard_normal((b, t, 4)).astype(np.float32)
    topk = np.tile(np.arange(k, dtype=np.int32), (b, t, 1))
    batch = {"logp": floats(b, t), "old_logp": floats(b, t), "advantages": floats(b),
             "response_mask": np.ones((b, t), bool), "sampled_ids": ids(b, t),
             "old_topk_ids": topk, "old_topk_logp": floats(b, t, k),
             "logp_at_old_topk": floats(b, t, k), "vocab_size": np.int32(V)}
    config = ModelConfig(model_type="qwen3", vocab_size=V, hidden_size=16, intermediate_size=32,
                         num_layers=1, num_heads=2, num_kv_heads=1, head_dim=8, qk_norm=True)
    # Shapes only: every broken input of generate is refused before anything is computed.
    model = nnx.eval_shape(lambda: init_model(config, seed=0))

    def loss(name):
        return lambda batch: policy_loss(name)(batch, get_default_config())

    return {
        "token_logprobs": (
            lambda hidden, lm_head, target_ids, gather_ids, temperature, top_k: token_logprobs(
                hidden, lm_head, target_ids, gather_ids=gather_ids, temperature=temperature,
                top_k=top_k, chunk_size=4),
            {"hidden": hidden, "lm_head": RNG.standard_normal((4, V)).astype(np.float32),
             "target_ids": ids(b, t), "gather_ids": ids(b, t, k), "temperature": 1.0,
             "top_k": 2},
            {"hidden": "float", "lm_head": "float", "target_ids": "ids", "gather_ids": "ids",
             "temperature": "pos", "top_k": "k"}),
        "top_k_by_blocks": (lambda x, k: top_k_by_blocks(x, k), {"x": floats(b, V), "k": 3},
                            {"x": "float", "k": "k"}),
        "kl_projection": (
            kl_projection, {"a": floats(b, 5), "b": floats(b, 5), "valid": np.ones((b, 5), bool),
                            "eps": 0.05},
            {"a": "float", "b": "float", "valid": "mask", "eps": "pos"}),
        "sparse_support": (
            lambda **kw: sparse_support(**kw, k=2),
            {"new_topk_ids": topk, "new_topk_logp": floats(b, t, k),
             "old_topk_ids": topk[..., ::-1], "old_topk_logp": floats(b, t, k),
             "sampled_ids": ids(b, t),
             "new_sampled_logp": floats(b, t), "old_sampled_logp": floats(b, t),
             "vocab_size": V, "delta": 1e-5},
            {"new_topk_ids": "ids", "new_topk_logp": "float", "old_topk_ids": "ids",
             "old_topk_logp": "float", "sampled_ids": "ids", "new_sampled_logp": "float",
             "old_sampled_logp": "float", "vocab_size": "count", "delta": "prob"}),
        "binary_kl": (dppo.binary_kl, {"logp": floats(b, t), "logmu": floats(b, t)},
                      {"logp": "float", "logmu": "float"}),
        "topk_tv": (dppo.topk_tv, {"logq_k": floats(b, t, k), "logmu_k": floats(b, t, k)},
                    {"logq_k": "float", "logmu_k": "float"}),
        "mask": (
            dppo.mask,
            {"divergence": -floats(b, t), "logp": floats(b, t), "logmu": floats(b, t),
             "advantages": floats(b), "response_mask": np.ones((b, t), bool), "delta_low": 0.2,
             "delta_high": 0.2},
            {"divergence": "float", "logp": "float", "logmu": "float", "advantages": "float",
             "response_mask": "mask", "delta_low": "pos", "delta_high": "pos"}),
        "grpo": (lambda rewards, group_size: advantage_estimator("grpo")(
            rewards, group_size=group_size), {"rewards": floats(8), "group_size": 4},
            {"rewards": "float", "group_size": "count"}),
        "rloo": (lambda rewards, group_ids, eps: advantage_estimator("rloo")(
            rewards, group_ids=group_ids, eps=eps),
            {"rewards": floats(8), "group_ids": np.repeat(np.arange(4), 2), "eps": 1e-6},
            {"rewards": "float", "group_ids": "ids", "eps": "pos"}),
        "aggregate": (lambda per_token, mask, norm_length: aggregate(
            per_token, mask, "seq-mean-token-sum-norm", norm_length),
            {"per_token": floats(b, t), "mask": np.ones((b, t), bool), "norm_length": 4},
            {"per_token": "float", "mask": "mask", "norm_length": "count"}),
        "clip": (loss("clip"), {"batch": batch}, {"batch": "batch"}),
        "dppo_topk_kl": (loss("dppo_topk_kl"), {"batch": batch}, {"batch": "batch"}),
        "generate": (
            lambda prompt_tokens, prompt_mask, pad_id, max_new_tokens: generate(
                model, prompt_tokens, prompt_mask, key=jax.random.key(0),
                max_new_tokens=max_new_tokens, pad_id=pad_id),
            {"prompt_tokens": ids(b, 4), "prompt_mask": np.ones((b, 4), bool), "pad_id": 0,
             "max_new_tokens": 2},
            {"prompt_tokens": "ids", "prompt_mask": "mask", "pad_id": "k",
             "max_new_tokens": "count"}),
        "SamplingParams": (SamplingParams, {"temperature": 1.0, "top_p": 0.9, "top_k": 4},
                           {"temperature": "pos", "top_p": "prob", "top_k": "count"}),
        "left_pad": (lambda token_ids, length, pad_id: left_pad(token_ids, length, pad_id),
                     {"token_ids": ids(2, 3), "length": 4, "pad_id": 0},
                     {"token_ids": "ids", "length": "count", "pad_id": "k"}),
        "call_reward": (
            lambda outputs, answer: call_reward(
                lambda s, p, o, answer: [float(x == a) for x, a in zip(o, answer, strict=True)],
                outputs, outputs, outputs, {"answer": answer}, name="r"),
            {"outputs": ["1", "2", "3", "4"], "answer": ["1", "2", "3", "5"]},
            {"outputs": "texts", "answer": "texts"}),
    }


def _break_array(x: np.ndarray, kind: str, rng: np.random.Generator) -> np.ndarray:
    """`x` with a wrong rank, a wrong axis size, a float dtype or an out-of-range value."""
    options = ["rank+", "size"] + (["rank-"] if x.ndim else [])
    if kind == "ids":
        options += ["float", "negative", "too_large", "negative", "too_large"]
    if kind == "mask":
        options += ["not_01"]
    choice = options[rng.integers(len(options))]
    if choice == "rank+":
        return x[None]
    if choice == "rank-":
        return x[..., 0]
    if choice == "size":
        axis = int(rng.integers(max(x.ndim, 1)))
        return np.concatenate([x, np.take(x, [0], axis=axis)], axis=axis) if x.ndim else x[None]
    if choice == "float":
        return x.astype(np.float32)
    y = np.array(x, dtype=np.int32 if kind == "mask" else x.dtype, copy=True)
    where = tuple(int(rng.integers(s)) for s in y.shape)
    y[where] = {"negative": -1 - rng.integers(3), "too_large": V + rng.integers(3),
                "not_01": 2}[choice]
    return y


def _break(value: Any, kind: str, rng: np.random.Generator) -> Any:
    if kind in ("pos", "prob"):
        return [float("nan"), -1.0, float("inf") if kind == "pos" else 1.5, "0.1"][
            rng.integers(4)]
    if kind in ("count", "k"):
        bad = [-1, 2.5, float("nan"), True] + ([V + 1, 10**6] if kind == "k" else [])
        return bad[rng.integers(len(bad))]
    if kind == "texts":
        return ["1", value[:-1], value + ["x"], 3][rng.integers(4)]
    if kind == "batch":
        batch = dict(value)
        key = sorted(batch)[rng.integers(len(batch))]
        if rng.integers(2):
            del batch[key]
        else:
            batch[key] = _break_array(np.asarray(batch[key]),
                                      "ids" if "ids" in key else "float", rng)
        return batch
    return _break_array(np.asarray(value), kind, rng)


def _names_an_argument(message: str, names: list[str]) -> bool:
    alternatives = "|".join(re.escape(n) for n in sorted(names, key=len, reverse=True))
    return re.search(rf"(^|: |')({alternatives})( |=|\[|'|$)", message) is not None


def _finite(out: Any) -> bool:
    leaves = jax.tree.leaves(out, is_leaf=lambda x: isinstance(x, Metric))
    values = [np.asarray(x.value() if isinstance(x, Metric) else x) for x in leaves]
    return all(np.isfinite(v).all() for v in values if np.issubdtype(v.dtype, np.floating))


@pytest.mark.parametrize("name", list(_specs()))
def test_malformed_inputs_raise_by_name_or_give_finite_outputs(name):
    fn, valid, kinds = _specs()[name]
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    # Names an error may mention: the arguments, and for batches their keys.
    names = list(valid) + [k for v in valid.values() if isinstance(v, dict) for k in v]
    if name != "generate":  # the abstract model has no weights to compute with
        assert _finite(fn(**valid))
    for case in range(CASES):
        arg = list(kinds)[rng.integers(len(kinds))]
        broken = {**valid, arg: _break(valid[arg], kinds[arg], rng)}
        try:
            out = fn(**broken)
        except (ValueError, KeyError, TypeError, RewardError) as e:
            assert _names_an_argument(str(e), names), f"{name} case {case} ({arg}): {e}"
        else:
            assert _finite(out), f"{name} case {case} ({arg}): non-finite output"
