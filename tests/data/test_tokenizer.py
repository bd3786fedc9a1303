"""Tokenizers: the character tokenizer loads through AutoTokenizer; bad directories fail clearly."""

import json

import pytest
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from trlx_jax.data.tokenizer import build_char_tokenizer, load_tokenizer


def test_char_tokenizer_is_an_hf_directory(tmp_path):
    build_char_tokenizer(tmp_path)
    assert (tmp_path / "tokenizer.json").is_file()
    config = json.loads((tmp_path / "tokenizer_config.json").read_text())
    assert config["eos_token"] == "<eos>" and config["pad_token"] == "<pad>"
    tok = AutoTokenizer.from_pretrained(str(tmp_path), local_files_only=True)
    assert (tok.pad_token_id, tok.bos_token_id, tok.eos_token_id) == (0, 1, 2)


def test_char_tokenizer_round_trip(char_tokenizer):
    text = "12+34*(5-6)/7=8\nWhat is $1,234.50? #### -5 \\boxed{x}"
    ids = char_tokenizer(text)["input_ids"]
    # One token per character, after the bos the post-processor adds.
    assert ids[0] == char_tokenizer.bos_token_id
    assert len(ids) == len(text) + 1
    assert char_tokenizer.decode(ids, skip_special_tokens=True) == text


def test_char_tokenizer_unknown_character_maps_to_unk(char_tokenizer):
    ids = char_tokenizer("1é", add_special_tokens=False)["input_ids"]
    assert ids[1] == char_tokenizer.unk_token_id


def test_char_tokenizer_custom_alphabet(tmp_path):
    tok = build_char_tokenizer(tmp_path, "0123456789+-=", chat_template=False)
    assert len(tok) == 7 + 13  # specials + characters
    assert tok.chat_template is None
    assert tok.decode(tok("7+8=15", add_special_tokens=False)["input_ids"]) == "7+8=15"


def test_char_tokenizer_chat_template(char_tokenizer):
    text = char_tokenizer.apply_chat_template(
        [{"role": "user", "content": "1+1"}], tokenize=False, add_generation_prompt=True
    )
    assert text == "<bos><|user|>1+1<eos><|assistant|>"
    ids = char_tokenizer(text, add_special_tokens=False)["input_ids"]
    assert char_tokenizer.convert_ids_to_tokens(ids) == [
        "<bos>",
        "<|user|>",
        "1",
        "+",
        "1",
        "<eos>",
        "<|assistant|>",
    ]


def test_load_tokenizer_loads_a_transformers_saved_directory(tmp_path):
    vocab = {"[UNK]": 0, "hello": 1, "world": 2}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="[UNK]").save_pretrained(tmp_path)
    tok = load_tokenizer(tmp_path)
    assert tok("hello world", add_special_tokens=False)["input_ids"] == [1, 2]


def test_load_tokenizer_missing_directory(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_tokenizer(tmp_path / "nope")


def test_load_tokenizer_directory_without_tokenizer_files(tmp_path):
    (tmp_path / "README").write_text("not a tokenizer")
    with pytest.raises(FileNotFoundError, match="not an HF tokenizer directory"):
        load_tokenizer(tmp_path)


def test_load_tokenizer_corrupt_file(tmp_path):
    (tmp_path / "tokenizer.json").write_text("{not json")
    (tmp_path / "tokenizer_config.json").write_text(
        '{"tokenizer_class": "PreTrainedTokenizerFast"}'
    )
    with pytest.raises(ValueError, match="could not load the tokenizer"):
        load_tokenizer(tmp_path)
