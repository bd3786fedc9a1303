"""Prompt formatting and fixed-shape left-padded tokenization."""

import logging

import numpy as np
import pytest

from trlx_jax.data.prompts import (
    PromptConfig,
    PromptFormatter,
    PromptTooLongError,
    left_pad,
)
from trlx_jax.data.tokenizer import build_char_tokenizer


def test_left_pad_layout():
    tokens, mask, positions, lengths = left_pad([[5, 6, 7], [8], []], 4, pad_id=0)
    np.testing.assert_array_equal(tokens, [[0, 5, 6, 7], [0, 0, 0, 8], [0, 0, 0, 0]])
    np.testing.assert_array_equal(mask, [[0, 1, 1, 1], [0, 0, 0, 1], [0, 0, 0, 0]])
    np.testing.assert_array_equal(positions, [[0, 0, 1, 2], [0, 0, 0, 0], [0, 0, 0, 0]])
    np.testing.assert_array_equal(lengths, [3, 1, 0])
    assert tokens.dtype == positions.dtype == lengths.dtype == np.int32
    assert mask.dtype == bool


def test_plain_template_batch(char_tokenizer):
    config = PromptConfig(template="{instruction}{question}=", instruction="Q:", max_length=12)
    formatter = PromptFormatter(char_tokenizer, config)
    batch, kept = formatter.batch(["1+2", "10-33"])
    assert batch.texts == ["Q:1+2=", "Q:10-33="]
    np.testing.assert_array_equal(kept, [0, 1])
    assert batch.tokens.shape == batch.mask.shape == batch.positions.shape == (2, 12)
    # bos + characters, right-aligned.
    np.testing.assert_array_equal(batch.lengths, [7, 9])
    row = batch.tokens[1][batch.mask[1]]
    assert row[0] == char_tokenizer.bos_token_id
    assert char_tokenizer.decode(row, skip_special_tokens=True) == "Q:10-33="
    np.testing.assert_array_equal(batch.positions[0, -7:], np.arange(7))
    assert (batch.tokens[0, :5] == char_tokenizer.pad_token_id).all()
    assert batch.mask[:, -1].all()


def test_chat_template_batch(char_tokenizer):
    config = PromptConfig(
        instruction="Add. ", use_chat_template=True, system_prompt="Be brief.", max_length=40
    )
    formatter = PromptFormatter(char_tokenizer, config)
    assert (
        formatter.format("1+1") == "<bos><|system|>Be brief.<eos><|user|>Add. 1+1<eos><|assistant|>"
    )
    batch, _ = formatter.batch(["1+1"])
    ids = batch.tokens[0][batch.mask[0]].tolist()
    # The template's own bos only: tokenizing must not add a second one.
    assert ids.count(char_tokenizer.bos_token_id) == 1
    assert ids[-1] == char_tokenizer.convert_tokens_to_ids("<|assistant|>")


def test_chat_template_required_when_requested(tmp_path):
    plain = build_char_tokenizer(tmp_path, chat_template=False)
    with pytest.raises(ValueError, match="no chat template"):
        PromptFormatter(plain, PromptConfig(use_chat_template=True))


def test_too_long_prompts_raise(char_tokenizer):
    formatter = PromptFormatter(char_tokenizer, PromptConfig(max_length=5))
    with pytest.raises(PromptTooLongError, match="1 prompt.*max_length=5.*7 tokens.*123456"):
        formatter.batch(["12", "123456"])


def test_too_long_prompts_dropped_and_counted(char_tokenizer, caplog):
    formatter = PromptFormatter(char_tokenizer, PromptConfig(max_length=5, on_too_long="drop"))
    with caplog.at_level(logging.WARNING, logger="trlx_jax.data.prompts"):
        batch, kept = formatter.batch(["12", "123456", "1234", "1234567"])
    np.testing.assert_array_equal(kept, [0, 2])
    assert batch.texts == ["12", "1234"]
    assert batch.tokens.shape == (2, 5)
    assert "dropped 2 of 4 prompts longer than 5 tokens" in caplog.text


@pytest.mark.parametrize(
    "kwargs",
    [{"on_too_long": "truncate"}, {"max_length": 0}, {"template": "{instruction}"}],
)
def test_prompt_config_validation(kwargs):
    with pytest.raises(ValueError):
        PromptConfig(**kwargs)
