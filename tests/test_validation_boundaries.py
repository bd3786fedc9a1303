"""Host-boundary checks of the public functions: each bad input raises before any computation,
with a message naming the argument (and its shape or domain) and the fix."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from trlx_jax.checks import ArgumentError, MissingKeyError
from trlx_jax.data import RewardError, call_reward
from trlx_jax.data.prompts import left_pad
from trlx_jax.models import ModelConfig, init_model
from trlx_jax.objectives import advantage_estimator, dppo, policy_loss
from trlx_jax.objectives.aggregation import aggregate
from trlx_jax.objectives.config import get_default_config
from trlx_jax.ops.logprobs import token_logprobs
from trlx_jax.ops.projection import kl_projection
from trlx_jax.ops.sparse_support import sparse_support
from trlx_jax.ops.topk import top_k_by_blocks
from trlx_jax.rollout import SamplingParams, generate

V = 32


@pytest.fixture(scope="module")
def model():
    """An abstract tiny model (shapes only): the checks run before any computation."""
    config = ModelConfig(model_type="qwen3", vocab_size=V, hidden_size=16, intermediate_size=32,
                         num_layers=1, num_heads=2, num_kv_heads=1, head_dim=8, qk_norm=True)
    return nnx.eval_shape(lambda: init_model(config, seed=0))


def head_inputs(b=2, t=3, d=4):
    rng = np.random.default_rng(0)
    return (rng.standard_normal((b, t, d), np.float32), rng.standard_normal((d, V), np.float32),
            rng.integers(0, V, (b, t)).astype(np.int32))


@pytest.mark.parametrize("change,message", [
    ({"lm_head": np.zeros((5, V), np.float32)},
     r"lm_head must be \[D, V\] = \(4, \?\) with D = 4 of hidden \[B, T, D\], got shape \(5, 32\)"),
    ({"hidden": np.zeros((2, 3), np.float32)}, r"hidden must be \[B, T, D\] \(rank 3\)"),
    ({"target_ids": np.zeros((2, 4), np.int32)}, r"target_ids must be \[B, T\] = \(2, 3\)"),
    ({"target_ids": np.full((2, 3), 1.0, np.float32)}, r"target_ids must hold token ids with an "
                                                        r"integer dtype, got float32"),
    # The examples: -1 silently read id V-1, ids >= V gave NaN log-probs.
    ({"target_ids": np.array([[0, -1, 2], [3, 4, 5]])}, r"target_ids holds id -1 at index "
                                                        r"\(0, 1\), outside \[0, 32\)"),
    ({"target_ids": np.array([[0, 1, 2], [3, 4, V]])}, r"holds id 32 .* lm_head \[D, V = 32\]"),
    ({"gather_ids": np.zeros((2, 4, 2), np.int32)}, r"gather_ids must be \[B, T, K'\]"),
    ({"temperature": float("nan")}, r"temperature=nan is out of range: it must be >= 0 and "
                                    r"finite"),
    ({"top_k": V + 1}, r"top_k=33 is out of range: it must be an integer in \[0, 32\]"),
])
def test_token_logprobs(change, message):
    hidden, head, ids = head_inputs()
    args = {"hidden": hidden, "lm_head": head, "target_ids": ids, **change}
    with pytest.raises(ArgumentError, match=message):
        token_logprobs(args.pop("hidden"), args.pop("lm_head"), args.pop("target_ids"), **args)


@pytest.mark.parametrize("change,message", [
    ({"prompt_tokens": np.array([[1, -1, 3]])}, r"prompt_tokens holds id -1 at index \(0, 1\), "
                                                r"outside \[0, 32\) \(the model's vocabulary"),
    ({"prompt_tokens": np.array([[1, V, 3]])}, r"prompt_tokens holds id 32"),
    ({"prompt_tokens": np.array([[1.0, 2.0, 3.0]])}, r"prompt_tokens must hold token ids with "
                                                     r"an integer dtype, got float64"),
    ({"pad_id": V}, r"pad_id=32 is outside \[0, 32\)"),
    ({"stop_ids": 3}, r"stop_ids must be a sequence of token ids \(e.g. \[eos_id\]\), got 3"),
    ({"stop_ids": [1, 40]}, r"stop_ids\[1\]=40 is outside \[0, 32\)"),
    ({"prompt_mask": np.ones((1, 2), bool)}, r"prompt_mask must be \[batch, prompt_len\] = "
                                             r"\(1, 3\) as prompt_tokens"),
    ({"max_new_tokens": 0}, r"max_new_tokens=0 is out of range: it must be an integer >= 1"),
    ({"num_samples": 1.5}, r"num_samples=1.5 is out of range"),
    ({"key": 0}, r"key must be one PRNG key \(jax.random.key\(seed\)\)"),
])
def test_generate(model, change, message):
    args = {"prompt_tokens": np.array([[1, 2, 3]]), "prompt_mask": np.ones((1, 3), bool),
            "key": jax.random.key(0), "max_new_tokens": 2, **change}
    with pytest.raises(ArgumentError, match=message):
        generate(model, args.pop("prompt_tokens"), args.pop("prompt_mask"), **args)


def test_sampling_params_refuse_nan_and_fractional_k():
    with pytest.raises(ArgumentError, match=r"temperature=nan .* >= 0 and finite \(0 = greedy\)"):
        SamplingParams(temperature=float("nan"))
    with pytest.raises(ArgumentError, match=r"top_k=2.5 .* an integer >= 0"):
        SamplingParams(top_k=2.5)


def test_projection_and_support():
    a = np.zeros((2, 5), np.float32)
    valid = np.ones((2, 5), bool)
    # The example: a NaN eps switched the projection off without a word.
    with pytest.raises(ArgumentError, match=r"eps=nan is out of range: it must be > 0 and finite"):
        kl_projection(a, a, valid, float("nan"))
    with pytest.raises(ArgumentError, match=r"eps=0.0 is out of range"):
        kl_projection(a, a, valid, np.array([0.1, 0.0]))
    with pytest.raises(ArgumentError, match=r"b must be \[\.\.\., S\] = \(2, 5\) as a"):
        kl_projection(a, a[:, :4], valid, 0.1)
    with pytest.raises(ArgumentError, match=r"valid of shape \(3,\) does not broadcast to "
                                            r"\(2, 5\)"):
        kl_projection(a, a, np.ones(3, bool), 0.1)
    ids = np.array([[0, 1], [2, 3]])
    logp = np.full((2, 2), -1.0, np.float32)
    s, lp = np.array([0, 2]), np.array([-1.0, -1.0], np.float32)
    with pytest.raises(ArgumentError, match=r"old_topk_logp must be \[\.\.\., K\] = \(2, 2\) as "
                                            r"old_topk_ids"):
        sparse_support(ids, logp, ids, logp[:, :1], s, lp, lp, 8, k=2)
    with pytest.raises(ArgumentError, match=r"sampled_ids holds id 9 .* \(vocab_size\)"):
        sparse_support(ids, logp, ids, logp, np.array([0, 9]), lp, lp, 8, k=2)
    with pytest.raises(ArgumentError, match=r"k=0 is out of range: it must be an integer >= 1"):
        sparse_support(ids, logp, ids, logp, s, lp, lp, 8, k=0)
    with pytest.raises(ArgumentError, match=r"k=9 is out of range: it must be an integer in "
                                            r"\[1, 8\]"):
        top_k_by_blocks(np.zeros((2, 8), np.float32), 9)


def loss_batch(b=3, t=4, k=2):
    rng = np.random.default_rng(1)
    logp = -rng.uniform(0.1, 3, (b, t)).astype(np.float32)
    return {"logp": logp, "old_logp": logp - 0.1, "advantages": rng.standard_normal(b),
            "response_mask": np.ones((b, t), bool), "sampled_ids": np.zeros((b, t), np.int32),
            "old_topk_ids": np.tile(np.arange(k), (b, t, 1)).astype(np.int32),
            "old_topk_logp": np.full((b, t, k), -1.0, np.float32),
            "logp_at_old_topk": np.full((b, t, k), -1.0, np.float32), "vocab_size": np.int32(V)}


@pytest.mark.parametrize("name,change,message", [
    ("clip", {"response_mask": np.ones((3, 5), bool)},
     r"response_mask must be \[B, T\] = \(3, 4\) as logp, got shape \(3, 5\)"),
    ("clip", {"advantages": np.zeros((4,))}, r"advantages must be \[B\] = \(3,\) as logp"),
    ("clip", {"logp": np.zeros((3,), np.float32)}, r"logp must be \[B, T\] \(rank 2\)"),
    ("dppo_topk_tv", {"logp_at_old_topk": np.zeros((3, 4, 3), np.float32)},
     r"logp_at_old_topk must be \[B, T, K\] = \(3, 4, 2\) as old_topk_ids"),
    ("dppo_topk_tv", {"old_topk_ids": np.full((3, 4, 2), V, np.int32)},
     r"old_topk_ids holds id 32 .* \(vocab_size\)"),
    ("dppo_topk_kl", {"old_topk_logp": None}, r"the dppo_topk_kl loss needs 'old_topk_logp'"),
])
def test_loss_batches(name, change, message):
    batch = {**loss_batch(), **change}
    batch = {k: v for k, v in batch.items() if v is not None}
    error = MissingKeyError if "needs" in message else ArgumentError
    with pytest.raises(error, match=message):
        policy_loss(name)(batch, get_default_config())


def test_loss_settings_are_checked_by_the_loss_itself():
    cfg = get_default_config()
    cfg.eps_high = -0.5
    with pytest.raises(ArgumentError, match=r"^eps_high=-0.5 is out of range: it must be >= 0$"):
        policy_loss("clip")(loss_batch(), cfg)


def test_advantages_dppo_and_aggregation():
    grpo = advantage_estimator("grpo")
    # The example: a 2-D reward array was normalised along the wrong axis.
    with pytest.raises(ArgumentError, match=r"rewards must be \[N\] \(one reward per "
                                            r"completion\) \(rank 1\), got shape \(2, 4\)"):
        grpo(np.zeros((2, 4)), group_size=4)
    with pytest.raises(ArgumentError, match=r"group_ids must be \[N\] = \(8,\) as rewards"):
        grpo(np.zeros(8), group_ids=np.zeros(4, np.int32))
    with pytest.raises(ArgumentError, match=r"rewards hold the non-finite value nan at index 1"):
        grpo(np.array([0.0, np.nan, 1.0, 1.0]), group_size=2)
    with pytest.raises(ArgumentError, match=r"group_size=3 must divide N = 4"):
        grpo(np.zeros(4), group_size=3)
    x = np.zeros((2, 3), np.float32)
    with pytest.raises(ArgumentError, match=r"logmu must be \[\.\.\.\] = \(2, 3\) as logp"):
        dppo.binary_tv(x, x[:, :2])
    with pytest.raises(ArgumentError, match=r"delta_low=nan is out of range: it must be >= 0"):
        dppo.mask(x, x, x, np.zeros(2), x > -1, float("nan"), 0.2)
    with pytest.raises(ArgumentError, match=r"advantages must be \[B\] or \[B, T\]"):
        dppo.mask(x, x, x, np.zeros(3), x > -1, 0.2, 0.2)
    with pytest.raises(ArgumentError, match=r"mask must be \[B, T\] = \(2, 3\) as per_token"):
        aggregate(jnp.zeros((2, 3)), jnp.ones((3, 2), bool), "token-mean")


def test_reward_harness_with_per_prompt_metadata_says_one_entry_per_sample():
    """G = 2 samples of 2 prompts with the 2 prompts' answers: the harness used to raise an
    IndexError from its own error description; now it names the key and the fix."""
    outputs = ["1", "2", "3", "4"]
    with pytest.raises(RewardError, match=r"metadata 'answer' has 2 entries for 4 samples; "
                                          r"metadata needs one entry per sample: with G samples "
                                          r"per prompt, repeat each prompt's entry G times"):
        call_reward(lambda s, p, o, answer: [0.0] * len(o), outputs, outputs, outputs,
                    {"answer": ["1", "3"]}, name="exact")
    with pytest.raises(RewardError, match=r"outputs must be a list of strings, one per sample, "
                                          r"got str"):
        call_reward(lambda s, p, o: [0.0], "1", "1", "1")
    with pytest.raises(ValueError, match=r"token_ids\[0\] must be a list of integer token ids"):
        left_pad([[1.5, 2.0]], 4, 0)


def test_registry_lookups_of_non_strings_list_the_names():
    """The lookup's own error path used to crash (difflib on None, hashing a list)."""
    for bad in (None, ["clip"], 3):
        with pytest.raises(KeyError, match=r"unknown policy loss .*Valid names: cispo, clip"):
            policy_loss(bad)
