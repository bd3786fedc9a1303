"""The KV-cache sampler against cache-free forwards, HF transformers and a sharded mesh."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from hf_testing import FAMILIES, make_hf_model

from trlx_jax.models import load_hf, make_mesh, positions_from_mask
from trlx_jax.rollout import sampler as sampler_module
from trlx_jax.rollout.sampler import (
    FINISH_LENGTH,
    FINISH_STOP,
    _generate,
    bucket_length,
    decode_segments,
    generate,
)
from trlx_jax.rollout.sampling import SamplingParams

VOCAB = 128


@pytest.fixture(scope="module")
def qwen3_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("qwen3")
    make_hf_model(FAMILIES["qwen3"]()).save_pretrained(path)
    return str(path)


def ragged_prompts(batch=3, length=9, seed=0):
    rng = np.random.default_rng(seed)
    tokens = rng.integers(1, VOCAB, (batch, length)).astype(np.int32)
    mask = np.ones((batch, length), bool)
    for row, pad in enumerate([0, 4, 7, 2][:batch]):
        pad = min(pad, length - 1)
        mask[row, :pad] = False
        tokens[row, :pad] = 0
    return tokens, mask


def full_logits(model, tokens, mask):
    """Cache-free logits [B, T, V] of a left-padded sequence batch."""
    hidden, _ = model(jnp.asarray(tokens), positions_from_mask(jnp.asarray(mask)),
                      jnp.asarray(mask))
    return model.logits(hidden)


def test_greedy_equals_stepwise_argmax_of_full_forward(qwen3_dir):
    model, _ = load_hf(qwen3_dir)
    tokens, mask = ragged_prompts()
    out = generate(model, tokens, mask, key=jax.random.key(0), max_new_tokens=7,
                   sampling=SamplingParams(temperature=0.0))
    seq, seq_mask = tokens, mask
    for step in range(7):
        nxt = np.asarray(jnp.argmax(full_logits(model, seq, seq_mask)[:, -1], -1), np.int32)
        np.testing.assert_array_equal(out.tokens[:, step], nxt, err_msg=f"step {step}")
        seq = np.concatenate([seq, nxt[:, None]], 1)
        seq_mask = np.concatenate([seq_mask, np.ones((3, 1), bool)], 1)
    assert (np.asarray(out.finish_reason) == FINISH_LENGTH).all()
    assert (np.asarray(out.lengths) == 7).all()


def test_recorded_logprobs_and_topk_equal_full_forward_with_early_stop(qwen3_dir):
    model, _ = load_hf(qwen3_dir)
    tokens, mask = ragged_prompts()
    # 3 prompts x 3 samples = 9 rows: the decode loop keeps its logits vocabulary-first (>= 8).
    assert 9 >= sampler_module._VOCAB_MAJOR_ROWS
    params = SamplingParams(temperature=0.8, record_top_k=5)
    key = jax.random.key(3)
    first = generate(model, tokens, mask, key=key, max_new_tokens=9, num_samples=3,
                     sampling=params)
    stop = int(first.tokens[0, 2])  # row 0 must now stop at step 2 at the latest
    out = generate(model, tokens, mask, key=key, max_new_tokens=9, num_samples=3,
                   sampling=params, stop_ids=(stop,), pad_id=0)
    lengths = np.asarray(out.lengths)
    assert lengths[0] <= 3 and out.finish_reason[0] == FINISH_STOP
    resp_mask = np.asarray(out.response_mask)
    np.testing.assert_array_equal(resp_mask, np.arange(9)[None] < lengths[:, None])
    assert (np.asarray(out.tokens)[~resp_mask] == 0).all()
    for row in range(9):
        n = lengths[row]
        if out.finish_reason[row] == FINISH_STOP:
            assert out.tokens[row, n - 1] == stop
            assert stop not in np.asarray(out.tokens[row, : n - 1])
        else:
            assert n == 9

    seq = np.concatenate([np.asarray(out.prompt_tokens), np.asarray(out.tokens)], 1)
    seq_mask = np.concatenate([np.asarray(out.prompt_mask), resp_mask], 1)
    p = out.prompt_tokens.shape[1]
    logp_full = jax.nn.log_softmax(full_logits(model, seq, seq_mask) / 0.8, -1)
    # Logits at column p - 1 + t predict generated token t.
    pred = np.asarray(logp_full[:, p - 1 : p - 1 + 9])
    want_logp = np.take_along_axis(pred, np.asarray(out.tokens)[..., None], -1)[..., 0]
    np.testing.assert_allclose(np.asarray(out.logp)[resp_mask], want_logp[resp_mask], atol=1e-4)
    want_topk = -np.sort(-pred, -1)[..., :5]
    np.testing.assert_allclose(np.asarray(out.topk_logp)[resp_mask], want_topk[resp_mask],
                               atol=1e-4)
    gathered = np.take_along_axis(pred, np.asarray(out.topk_ids), -1)
    np.testing.assert_allclose(gathered[resp_mask], want_topk[resp_mask], atol=1e-4)
    np.testing.assert_array_equal(np.asarray(out.prompt_index), np.repeat(np.arange(3), 3))


def test_long_generation_across_decode_segments_equals_full_forward(qwen3_dir):
    # 150 new tokens: a 256-step buffer decoded in segments ending at 64, 128, 192, each
    # attending to a growing window of the cache; every token and log-prob must still match
    # one cache-free forward over prompt + completion.
    assert decode_segments(bucket_length(150)) == [64, 128, 192, 256]
    model, _ = load_hf(qwen3_dir)
    tokens, mask = ragged_prompts()
    out = generate(model, tokens, mask, key=jax.random.key(5), max_new_tokens=150,
                   sampling=SamplingParams(temperature=0.0, record_top_k=3))
    assert (np.asarray(out.lengths) == 150).all()
    seq = np.concatenate([np.asarray(out.prompt_tokens), np.asarray(out.tokens)], 1)
    seq_mask = np.concatenate([np.asarray(out.prompt_mask), np.ones((3, 150), bool)], 1)
    p = out.prompt_tokens.shape[1]
    pred = np.asarray(jax.nn.log_softmax(full_logits(model, seq, seq_mask), -1))[:, p - 1 : -1]
    want = np.take_along_axis(pred, np.asarray(out.tokens)[..., None], -1)[..., 0]
    np.testing.assert_allclose(np.asarray(out.logp), want, atol=1e-4)
    # Greedy picked a maximizer (up to float32 near-ties) at every step.
    assert (want >= pred.max(-1) - 1e-4).all()
    assert (np.asarray(out.tokens) == pred.argmax(-1)).mean() > 0.99
    np.testing.assert_allclose(np.asarray(out.topk_logp), -np.sort(-pred, -1)[..., :3],
                               atol=1e-4)


@pytest.mark.parametrize("family", ["llama3", "qwen2_tied", "qwen3"])
def test_greedy_equals_transformers_generate(family, tmp_path):
    hf_model = make_hf_model(FAMILIES[family]())
    hf_model.save_pretrained(tmp_path)
    hf_model.generation_config.eos_token_id = None
    model, _ = load_hf(str(tmp_path))
    tokens, mask = ragged_prompts(seed=1)
    with torch.no_grad():
        ref = hf_model.generate(
            input_ids=torch.tensor(tokens, dtype=torch.long),
            attention_mask=torch.tensor(mask, dtype=torch.long),
            do_sample=False, max_new_tokens=8, min_new_tokens=8, pad_token_id=0,
        )[:, tokens.shape[1]:].numpy()
    out = generate(model, tokens, mask, key=jax.random.key(0), max_new_tokens=8,
                   sampling=SamplingParams(temperature=0.0))
    np.testing.assert_array_equal(np.asarray(out.tokens), ref)


def test_sharded_mesh_gives_same_tokens_as_one_device(qwen3_dir):
    tokens, mask = ragged_prompts(batch=2)
    params = SamplingParams(temperature=1.0, record_top_k=3)
    kwargs = dict(key=jax.random.key(11), max_new_tokens=6, num_samples=4, sampling=params)
    model, _ = load_hf(qwen3_dir)
    single = generate(model, tokens, mask, **kwargs)
    mesh = make_mesh((2, 2, 2))
    sharded_model, _ = load_hf(qwen3_dir, mesh=mesh)
    with jax.set_mesh(mesh):
        sharded = generate(sharded_model, tokens, mask, **kwargs)
    assert len(sharded.tokens.sharding.device_set) == 8
    np.testing.assert_array_equal(np.asarray(sharded.tokens), np.asarray(single.tokens))
    np.testing.assert_allclose(np.asarray(sharded.logp), np.asarray(single.logp), atol=1e-5)
    np.testing.assert_array_equal(np.asarray(sharded.topk_ids), np.asarray(single.topk_ids))


def test_buckets_reuse_the_compiled_program_and_key_determinism(qwen3_dir):
    model, _ = load_hf(qwen3_dir)
    assert [bucket_length(n) for n in (1, 16, 17, 200, 256, 257, 600)] == [
        16, 16, 32, 256, 256, 512, 768]
    params = SamplingParams(temperature=1.0)
    before = _generate._cache_size()
    runs = []
    for length, new in [(5, 3), (9, 11), (9, 11)]:
        tokens, mask = ragged_prompts(length=length)
        runs.append(generate(model, tokens, mask, key=jax.random.key(1), max_new_tokens=new,
                             sampling=params))
    assert _generate._cache_size() == before + 1
    assert runs[0].tokens.shape == (3, 3) and runs[1].tokens.shape == (3, 11)
    np.testing.assert_array_equal(np.asarray(runs[1].tokens), np.asarray(runs[2].tokens))
    other = generate(model, *ragged_prompts(length=9), key=jax.random.key(2), max_new_tokens=11,
                     sampling=params)
    assert not np.array_equal(np.asarray(other.tokens), np.asarray(runs[1].tokens))


def test_bad_inputs_raise(qwen3_dir):
    model, _ = load_hf(qwen3_dir)
    tokens, mask = ragged_prompts()
    key = jax.random.key(0)
    with pytest.raises(ValueError, match="LEFT-padded"):
        generate(model, tokens, mask[:, ::-1], key=key, max_new_tokens=2)
    empty = mask.copy()
    empty[1] = False
    with pytest.raises(ValueError, match="at least one real token"):
        generate(model, tokens, empty, key=key, max_new_tokens=2)
    with pytest.raises(ValueError, match="max_new_tokens"):
        generate(model, tokens, mask, key=key, max_new_tokens=0)
    with pytest.raises(ValueError, match=r"\[batch, prompt_len\]"):
        generate(model, tokens[0], mask[0], key=key, max_new_tokens=2)
