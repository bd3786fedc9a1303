"""Tokenizers: load any local HF tokenizer, or build a character-level one for synthetic tasks."""

from __future__ import annotations

import json
import string
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

# Files of which at least one marks a directory as an HF tokenizer (fast, sentencepiece, BPE).
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")

PAD, BOS, EOS, UNK = "<pad>", "<bos>", "<eos>", "<unk>"
CHAT_MARKERS = ("<|system|>", "<|user|>", "<|assistant|>")
# Printable ASCII without the rare vertical whitespace: digits, operators, letters, punctuation,
# space, tab and newline, enough for arithmetic, countdown and GSM8K-style text.
DEFAULT_CHARS = "".join(c for c in string.printable if c not in "\r\x0b\x0c")
# Each message ends with eos, so the sampler stops at the end of the assistant turn.
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}<|{{ message['role'] }}|>"
    "{{ message['content'] }}{{ eos_token }}{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def load_tokenizer(path: str | Path) -> PreTrainedTokenizerBase:
    """Loads an HF tokenizer from a local directory (never from a hub)."""
    from transformers import AutoTokenizer

    directory = Path(path).expanduser()
    if not directory.is_dir():
        raise FileNotFoundError(f"tokenizer directory {str(directory)!r} does not exist")
    if not any((directory / name).is_file() for name in _TOKENIZER_FILES):
        raise FileNotFoundError(
            f"{str(directory)!r} is not an HF tokenizer directory: it has none of "
            f"{', '.join(_TOKENIZER_FILES)}"
        )
    try:
        return AutoTokenizer.from_pretrained(str(directory), local_files_only=True)
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ValueError(f"could not load the tokenizer in {str(directory)!r}: {e}") from e


def build_char_tokenizer(
    out_dir: str | Path,
    chars: str = DEFAULT_CHARS,
    *,
    chat_template: bool = True,
) -> PreTrainedTokenizerBase:
    """Writes a character-level HF tokenizer directory to `out_dir` and loads it back."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors

    unique_chars = list(dict.fromkeys(chars))
    if not unique_chars:
        raise ValueError("a character tokenizer needs at least one character")
    specials = [PAD, BOS, EOS, UNK, *CHAT_MARKERS]
    vocab = {token: i for i, token in enumerate(specials + unique_chars)}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token=UNK))
    # Every character (newline included) is its own pre-token; Fuse joins them back on decode.
    tokenizer.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    tokenizer.decoder = decoders.Fuse()
    tokenizer.add_special_tokens(specials)
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A $B", special_tokens=[(BOS, vocab[BOS])]
    )

    directory = Path(out_dir)
    directory.mkdir(parents=True, exist_ok=True)
    tokenizer.save(str(directory / "tokenizer.json"))
    special_map = {"pad_token": PAD, "bos_token": BOS, "eos_token": EOS, "unk_token": UNK}
    config = {
        # The class name every transformers version (4.x and 5.x) maps to its fast tokenizer.
        "tokenizer_class": "PreTrainedTokenizerFast",
        "model_max_length": 1 << 20,
        "clean_up_tokenization_spaces": False,
        **special_map,
    }
    if chat_template:
        config["chat_template"] = CHAT_TEMPLATE
    (directory / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")
    (directory / "special_tokens_map.json").write_text(json.dumps(special_map, indent=2) + "\n")
    return load_tokenizer(directory)
