"""Batch iterators: seeded epochs, exact resumption, disjoint covering host shards, SFT batches."""

import json
import logging

import numpy as np
import pytest

from trlx_jax.data.expression import evaluate
from trlx_jax.data.iterator import IndexSampler, PromptIterator, SupervisedIterator
from trlx_jax.data.prompts import PromptConfig, PromptFormatter, PromptTooLongError
from trlx_jax.data.rewards import REWARDS


def _take(sampler, steps):
    return [sampler.next() for _ in range(steps)]


def test_epochs_are_seeded_permutations():
    sampler = IndexSampler(12, 4, seed=7)
    epochs = [np.concatenate([sampler.next()[0] for _ in range(3)]) for _ in range(2)]
    for order in epochs:
        np.testing.assert_array_equal(np.sort(order), np.arange(12))
    assert not np.array_equal(epochs[0], epochs[1])
    again = IndexSampler(12, 4, seed=7)
    np.testing.assert_array_equal(np.concatenate([again.next()[0] for _ in range(3)]), epochs[0])
    other = IndexSampler(12, 4, seed=8)
    assert not np.array_equal(np.concatenate([other.next()[0] for _ in range(3)]), epochs[0])


def test_unshuffled_order():
    sampler = IndexSampler(6, 3, shuffle=False)
    np.testing.assert_array_equal(sampler.next()[0], [0, 1, 2])


@pytest.mark.parametrize("stop", [0, 2, 3, 7])
def test_sampler_resumes_exactly(stop):
    reference = IndexSampler(10, 3, seed=1)
    expected = _take(reference, 12)
    interrupted = IndexSampler(10, 3, seed=1)
    _take(interrupted, stop)
    saved = json.loads(json.dumps(interrupted.state()))
    resumed = IndexSampler(10, 3, seed=1)
    resumed.restore(saved)
    for (want, _), (got, _) in zip(expected[stop:], _take(resumed, 12 - stop), strict=True):
        np.testing.assert_array_equal(got, want)


def test_host_shards_are_disjoint_and_cover_the_global_batch():
    single = IndexSampler(40, 8, seed=3)
    hosts = [IndexSampler(40, 8, seed=3, process_index=p, process_count=4) for p in range(4)]
    for _ in range(10):  # two epochs
        global_batch, _ = single.next()
        slices = [host.next()[0] for host in hosts]
        assert all(len(s) == 2 for s in slices)
        np.testing.assert_array_equal(np.concatenate(slices), global_batch)
        assert len(set(np.concatenate(slices))) == 8


def test_final_partial_batch_is_marked():
    sampler = IndexSampler(5, 4, shuffle=False, drop_remainder=False)
    assert sampler.steps_per_epoch == 2
    _, valid = sampler.next()
    indices, valid = sampler.next()
    np.testing.assert_array_equal(indices[valid], [4])
    assert valid.tolist() == [True, False, False, False]
    assert sampler.state()["epoch"] == 1


def test_sampler_validation():
    with pytest.raises(ValueError, match="multiple of process_count"):
        IndexSampler(10, 3, process_count=2)
    with pytest.raises(ValueError, match="fewer than one global batch"):
        IndexSampler(3, 4)
    with pytest.raises(ValueError, match="process_index"):
        IndexSampler(10, 2, process_index=2, process_count=2)
    sampler = IndexSampler(10, 2, seed=0)
    with pytest.raises(ValueError, match="seed=5 in the checkpoint"):
        sampler.restore({**sampler.state(), "seed": 5})
    with pytest.raises(ValueError, match="num_examples"):
        sampler.restore({**sampler.state(), "num_examples": 11})


@pytest.fixture
def formatter(char_tokenizer):
    return PromptFormatter(char_tokenizer, PromptConfig(template="{question}=", max_length=10))


def test_prompt_batches(arithmetic_train, formatter):
    iterator = PromptIterator(
        arithmetic_train, formatter, 8, seed=0, process_index=0, process_count=1
    )
    assert iterator.steps_per_epoch == len(arithmetic_train) // 8
    batch = next(iterator)
    assert batch.prompts.tokens.shape == (8, 10) and batch.prompts.tokens.dtype == np.int32
    assert batch.valid.all()
    assert batch.prompts.texts == [q + "=" for q in batch.questions]
    for question, answer, index in zip(batch.questions, batch.answers, batch.indices, strict=True):
        assert int(answer) == evaluate(question)
        assert arithmetic_train[int(index)]["question"] == question
    # Metadata is exactly what reward functions take as keyword arguments.
    rewards = REWARDS.get("exact_match")(
        batch.prompts.texts, batch.prompts.texts, batch.metadata["answer"], **batch.metadata
    )
    assert rewards == [1.0] * 8


def test_prompt_iterator_resumes_exactly(arithmetic_train, formatter):
    kwargs = {"seed": 4, "process_index": 0, "process_count": 1}
    reference = PromptIterator(arithmetic_train, formatter, 16, **kwargs)
    expected = [next(reference) for _ in range(10)]  # crosses the 7-step epoch boundary
    interrupted = PromptIterator(arithmetic_train, formatter, 16, **kwargs)
    for _ in range(5):
        next(interrupted)
    state = json.loads(json.dumps(interrupted.state()))
    resumed = PromptIterator(arithmetic_train, formatter, 16, **kwargs)
    resumed.restore(state)
    for want in expected[5:]:
        got = next(resumed)
        np.testing.assert_array_equal(got.prompts.tokens, want.prompts.tokens)
        assert got.metadata == want.metadata


def test_prompt_iterator_host_sharding(arithmetic_train, formatter):
    single = PromptIterator(arithmetic_train, formatter, 12, process_index=0, process_count=1)
    hosts = [
        PromptIterator(arithmetic_train, formatter, 12, process_index=p, process_count=3)
        for p in range(3)
    ]
    for _ in range(3):
        whole = next(single)
        parts = [next(host) for host in hosts]
        assert [len(p.questions) for p in parts] == [4, 4, 4]
        assert sum((p.questions for p in parts), []) == whole.questions
        np.testing.assert_array_equal(
            np.concatenate([p.prompts.tokens for p in parts]), whole.prompts.tokens
        )


def test_process_defaults_come_from_jax(arithmetic_train, formatter):
    iterator = PromptIterator(arithmetic_train, formatter, 4)
    assert (iterator.sampler.process_index, iterator.sampler.local_batch_size) == (0, 4)


def test_num_epochs_and_eval_pass(arithmetic_train, formatter):
    iterator = PromptIterator(
        arithmetic_train[:10],
        formatter,
        4,
        shuffle=False,
        drop_remainder=False,
        num_epochs=1,
        process_index=0,
        process_count=1,
    )
    batches = list(iterator)
    assert len(batches) == 3
    seen = [q for b in batches for q, v in zip(b.questions, b.valid, strict=True) if v]
    assert seen == [arithmetic_train[i]["question"] for i in range(10)]


LONG = [
    {"question": "1+1", "answer": "2", "solution": "2"},
    {"question": "123456789+1", "answer": "123456790", "solution": "123456790"},
    {"question": "2+2", "answer": "4", "solution": "4"},
]


def test_long_prompts_rejected_up_front(char_tokenizer):
    formatter = PromptFormatter(char_tokenizer, PromptConfig(max_length=8))
    with pytest.raises(PromptTooLongError, match="123456789"):
        PromptIterator(LONG, formatter, 1, process_index=0, process_count=1)


def test_long_prompts_dropped_with_count(char_tokenizer, caplog, monkeypatch):
    formatter = PromptFormatter(char_tokenizer, PromptConfig(max_length=8, on_too_long="drop"))
    # Several scan chunks still give one total count.
    monkeypatch.setattr("trlx_jax.data.iterator._SCAN_CHUNK", 2)
    with caplog.at_level(logging.WARNING):
        iterator = PromptIterator(
            LONG, formatter, 1, shuffle=False, num_epochs=1, process_index=0, process_count=1
        )
    assert [r.getMessage() for r in caplog.records] == [
        "dropped 1 of 3 prompts longer than 8 tokens"
    ]
    assert [b.questions[0] for b in iterator] == ["1+1", "2+2"]


def test_supervised_batches(arithmetic_train, char_tokenizer):
    formatter = PromptFormatter(char_tokenizer, PromptConfig(template="{question}=", max_length=10))
    iterator = SupervisedIterator(
        arithmetic_train, formatter, 4, max_completion_length=6, process_index=0, process_count=1
    )
    batch = next(iterator)
    assert batch.completion_tokens.shape == batch.completion_mask.shape == (4, 6)
    for row, completion in enumerate(batch.completions):
        assert completion == batch.metadata["answer"][row]
        ids = batch.completion_tokens[row][batch.completion_mask[row]].tolist()
        assert ids[-1] == char_tokenizer.eos_token_id
        assert char_tokenizer.decode(ids[:-1]) == completion
        # Right-padded: real tokens first, padding after.
        n = len(ids)
        assert batch.completion_mask[row, :n].all() and not batch.completion_mask[row, n:].any()
        assert (batch.completion_tokens[row, n:] == char_tokenizer.pad_token_id).all()


def test_supervised_long_completions(char_tokenizer, caplog):
    formatter = PromptFormatter(char_tokenizer, PromptConfig(max_length=20))
    with pytest.raises(PromptTooLongError, match="max_completion_length=4"):
        SupervisedIterator(
            LONG, formatter, 1, max_completion_length=4, process_index=0, process_count=1
        )
    dropping = PromptFormatter(char_tokenizer, PromptConfig(max_length=20, on_too_long="drop"))
    with caplog.at_level(logging.WARNING):
        iterator = SupervisedIterator(
            LONG,
            dropping,
            1,
            max_completion_length=4,
            shuffle=False,
            num_epochs=1,
            process_index=0,
            process_count=1,
        )
    assert "dropped 1 of 3 examples whose completion" in caplog.text
    assert [b.completions[0] for b in iterator] == ["2", "4"]
