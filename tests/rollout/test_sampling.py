"""Token selection: empirical frequencies, truncation, greedy, and the recorded values."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from trlx_jax.rollout import sampling
from trlx_jax.rollout.sampling import (
    NEG_INF,
    SamplingParams,
    sample_categorical,
    scaled_logprobs,
    truncate,
)

# Every test runs with [B, V] logits and again with the sampler's vocabulary-first layout.
_LAYOUT = {"vocab_major": False}


@pytest.fixture(autouse=True, params=[False, True], ids=["batch_major", "vocab_major"])
def logits_layout(request):
    _LAYOUT["vocab_major"] = request.param


def select_tokens(key, logits, params, vocab_major=None):
    """`sampling.select_tokens` on [B, V] logits, handed over in the layout under test."""
    vocab_major = _LAYOUT["vocab_major"] if vocab_major is None else vocab_major
    logits = logits.T if vocab_major else logits
    return sampling.select_tokens(key, logits, params, vocab_major=vocab_major)

LOGITS = jnp.array([2.0, 1.0, 0.5, 0.0, -0.5, -1.0, -3.0, 1.5])
N_DRAWS = 40_000


def draw(params: SamplingParams, logits=LOGITS, n=N_DRAWS, seed=0) -> np.ndarray:
    batch = jnp.broadcast_to(logits, (n, logits.shape[-1]))
    select = jax.jit(select_tokens, static_argnums=(2, 3))
    tokens, _, _, _ = select(jax.random.key(seed), batch, params, _LAYOUT["vocab_major"])
    return np.asarray(tokens)


def counts(tokens: np.ndarray, vocab: int) -> np.ndarray:
    return np.bincount(tokens, minlength=vocab)


def chi_square_pvalue(observed: np.ndarray, probs) -> float:
    probs = np.asarray(probs, dtype=np.float64)
    return stats.chisquare(observed, probs / probs.sum() * observed.sum()).pvalue


@pytest.mark.parametrize("temperature", [1.0, 0.7, 1.5])
def test_frequencies_match_softmax_chi_square(temperature):
    params = SamplingParams(temperature=temperature)
    observed = counts(draw(params), LOGITS.shape[0])
    # Fixed key, so this is deterministic; a wrong temperature or bias fails by a wide margin.
    assert chi_square_pvalue(observed, jax.nn.softmax(LOGITS / temperature)) > 1e-3
    assert chi_square_pvalue(observed, jax.nn.softmax(LOGITS)) < 1e-6 or temperature == 1.0


def test_two_level_sampler_across_blocks_matches_softmax():
    # 700 tokens = 3 blocks of 256 (the last one padded); mass spread over every block, with
    # excluded tokens in each and one block's share carried by a single token.
    rng = np.random.default_rng(0)
    logits = rng.normal(size=700).astype(np.float32)
    logits[rng.choice(700, 300, replace=False)] = NEG_INF
    logits[600] = 4.0
    n = 60_000
    batch = jnp.broadcast_to(jnp.asarray(logits), (n, 700))
    tokens = np.asarray(jax.jit(sample_categorical)(jax.random.key(1), batch))
    observed = counts(tokens, 700)
    allowed = logits > NEG_INF / 2
    assert observed[~allowed].sum() == 0
    probs = np.asarray(jax.nn.softmax(jnp.asarray(logits)))
    # Pool the rare tokens so each chi-square cell expects >= 5 draws.
    common = probs * n >= 5
    cells = np.append(observed[common & allowed], observed[~common & allowed].sum())
    expected = np.append(probs[common & allowed], probs[~common & allowed].sum())
    assert chi_square_pvalue(cells, expected) > 1e-3
    # Rows are independent draws: a different key gives a different sample.
    other = np.asarray(jax.jit(sample_categorical)(jax.random.key(2), batch))
    assert (other != tokens).mean() > 0.5


def test_two_level_sampler_one_token_and_tiny_vocab():
    one_hot = jnp.full((4, 513), NEG_INF).at[:, 300].set(0.0)
    np.testing.assert_array_equal(sample_categorical(jax.random.key(0), one_hot), 300)
    last = jnp.full((4, 3), NEG_INF).at[:, 2].set(0.0)
    np.testing.assert_array_equal(sample_categorical(jax.random.key(0), last), 2)


def test_greedy_breaks_ties_like_jnp_argmax_across_blocks():
    greedy = SamplingParams(temperature=0.0)
    x = jnp.array([[1.0, 3.0, 3.0, 0.0], [5.0, 5.0, 5.0, 5.0], [-1.0, -2.0, -3.0, -0.5]])
    np.testing.assert_array_equal(select_tokens(None, x, greedy)[0], jnp.argmax(x, -1))
    # 700 = 3 blocks of 256, the last one padded; ties inside a block and across blocks.
    big = jnp.round(jax.random.normal(jax.random.key(0), (64, 700)) * 2) / 2
    big = big.at[0, [10, 600]].set(9.0).at[1, [300, 301]].set(9.0).at[2, 699].set(9.0)
    tokens, logp, _, _ = select_tokens(None, big, greedy)
    np.testing.assert_array_equal(tokens, jnp.argmax(big, -1))
    np.testing.assert_allclose(logp, jnp.max(jax.nn.log_softmax(big), -1), atol=1e-6)


def test_top_k_never_emits_excluded_and_matches_renormalized():
    params = SamplingParams(top_k=3)
    observed = counts(draw(params), 8)
    allowed = np.argsort(-np.asarray(LOGITS))[:3]
    assert set(np.nonzero(observed)[0]) <= set(allowed)
    assert chi_square_pvalue(observed[allowed], jax.nn.softmax(LOGITS[allowed])) > 1e-3


def test_top_p_keeps_smallest_set_reaching_p():
    probs = np.asarray(jax.nn.softmax(LOGITS))
    order = np.argsort(-probs)
    cum = np.cumsum(probs[order])
    for top_p in (0.3, 0.6, 0.9):
        n_keep = int(np.searchsorted(cum, top_p) + 1)
        allowed = set(order[:n_keep].tolist())
        observed = counts(draw(SamplingParams(top_p=top_p), n=5000), 8)
        assert set(np.nonzero(observed)[0]) == allowed, top_p
    kept = truncate(scaled_logprobs(LOGITS, SamplingParams()), SamplingParams(top_p=0.6))
    assert int(jnp.sum(kept > -1e29)) == int(np.searchsorted(cum, 0.6) + 1)


def test_top_k_then_top_p_renormalizes_after_top_k():
    # After top-k=2 the renormalized top token has mass softmax([2, 1.5])[0] = 0.62 < 0.65, so
    # top-p=0.65 must keep both; computed on the full distribution it would keep only one.
    params = SamplingParams(top_k=2, top_p=0.65)
    observed = counts(draw(params, n=4000), 8)
    assert set(np.nonzero(observed)[0]) == {0, 7}


def test_greedy_and_recorded_values():
    params = SamplingParams(temperature=0.0, record_top_k=3)
    logits = jax.random.normal(jax.random.key(1), (5, 11)) * 3
    tokens, logp, topk_ids, topk_logp = select_tokens(jax.random.key(0), logits, params)
    np.testing.assert_array_equal(tokens, jnp.argmax(logits, -1))
    full = jax.nn.log_softmax(logits)
    np.testing.assert_allclose(logp, full[jnp.arange(5), tokens], atol=1e-6)
    np.testing.assert_allclose(topk_logp, jnp.sort(full, -1)[:, ::-1][:, :3], atol=1e-6)
    np.testing.assert_allclose(jnp.take_along_axis(full, topk_ids, -1), topk_logp, atol=1e-6)


def test_recorded_values_are_temperature_scaled_and_untruncated():
    params = SamplingParams(temperature=0.5, top_k=2, record_top_k=4)
    logits = jax.random.normal(jax.random.key(2), (6, 9))
    tokens, logp, _, topk_logp = select_tokens(jax.random.key(3), logits, params)
    full = jax.nn.log_softmax(logits / 0.5)
    np.testing.assert_allclose(logp, full[jnp.arange(6), tokens], atol=1e-6)
    np.testing.assert_allclose(topk_logp, jnp.sort(full, -1)[:, ::-1][:, :4], atol=1e-6)


def test_determinism_and_record_top_k_clamped_to_vocab():
    params = SamplingParams(record_top_k=50)
    a = select_tokens(jax.random.key(7), LOGITS[None].repeat(4, 0), params)
    b = select_tokens(jax.random.key(7), LOGITS[None].repeat(4, 0), params)
    np.testing.assert_array_equal(a[0], b[0])
    assert a[2].shape == (4, 8)


@pytest.mark.parametrize(
    "kwargs", [{"temperature": -1.0}, {"top_k": -2}, {"top_p": 0.0}, {"top_p": 1.5},
               {"record_top_k": -1}],
)
def test_bad_params_raise(kwargs):
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        SamplingParams(**kwargs)
