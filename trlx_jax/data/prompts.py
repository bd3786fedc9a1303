"""Prompt formatting (plain template or the tokenizer's chat template) and left-padded batches."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal

import numpy as np

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

logger = logging.getLogger(__name__)

OnTooLong = Literal["error", "drop"]


@dataclasses.dataclass(frozen=True)
class PromptConfig:
    """How questions become prompt tokens.

    `template` is a `str.format` pattern over `{instruction}` and `{question}`; with
    `use_chat_template` its result is the user message of the tokenizer's chat template.
    """

    template: str = "{instruction}{question}"
    instruction: str = ""
    use_chat_template: bool = False
    system_prompt: str | None = None
    max_length: int = 256
    on_too_long: OnTooLong = "error"

    def __post_init__(self) -> None:
        if self.on_too_long not in ("error", "drop"):
            raise ValueError(f"on_too_long must be 'error' or 'drop', got {self.on_too_long!r}")
        if isinstance(self.max_length, bool) or not isinstance(self.max_length, int) or (
                self.max_length < 1):
            raise ValueError(f"max_length must be an integer >= 1, got {self.max_length!r}")
        if not isinstance(self.template, str) or "{question}" not in self.template:
            raise ValueError(f"template {self.template!r} has no {{question}} field")


@dataclasses.dataclass
class PromptBatch:
    """Left-padded prompt tokens: every row's last real token sits at column P-1."""

    tokens: np.ndarray  # int32 [B, P]
    mask: np.ndarray  # bool [B, P], True on real tokens
    positions: np.ndarray  # int32 [B, P], 0 at each row's first real token, 0 on padding
    lengths: np.ndarray  # int32 [B]
    texts: list[str]  # the formatted prompt strings

    def __len__(self) -> int:
        return len(self.texts)


class PromptTooLongError(ValueError):
    """A prompt has more tokens than `PromptConfig.max_length`."""


def left_pad(
    token_ids: Sequence[Sequence[int]], length: int, pad_id: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(tokens, mask, positions, lengths) of sequences left-padded to `length` columns."""
    if isinstance(length, bool) or not isinstance(length, int | np.integer) or length < 0:
        raise ValueError(f"length must be an integer >= 0, got {length!r}")
    if isinstance(pad_id, bool) or not isinstance(pad_id, int | np.integer) or pad_id < 0:
        raise ValueError(f"pad_id must be a token id (an integer >= 0), got {pad_id!r}")
    for row, ids in enumerate(token_ids):
        ids = np.asarray(ids)
        if ids.ndim != 1 or (ids.size and not np.issubdtype(ids.dtype, np.integer)):
            raise ValueError(f"token_ids[{row}] must be a list of integer token ids, got "
                             f"{ids.dtype} of shape {ids.shape}")
    batch = len(token_ids)
    tokens = np.full((batch, length), pad_id, dtype=np.int32)
    mask = np.zeros((batch, length), dtype=bool)
    positions = np.zeros((batch, length), dtype=np.int32)
    lengths = np.array([len(ids) for ids in token_ids], dtype=np.int32)
    if batch and lengths.max(initial=0) > length:
        raise PromptTooLongError(f"sequence of {lengths.max()} tokens exceeds {length} columns")
    for row, ids in enumerate(token_ids):
        n = len(ids)
        if n:
            tokens[row, length - n :] = ids
            mask[row, length - n :] = True
            positions[row, length - n :] = np.arange(n, dtype=np.int32)
    return tokens, mask, positions, lengths


def pad_id_of(tokenizer: PreTrainedTokenizerBase) -> int:
    """The id used for padding: pad, else eos (Llama 3 has no pad token), else 0."""
    for token_id in (tokenizer.pad_token_id, tokenizer.eos_token_id):
        if token_id is not None:
            return int(token_id)
    return 0


class PromptFormatter:
    """Formats questions into prompt strings and tokenizes them into fixed-shape batches."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, config: PromptConfig) -> None:
        if config.use_chat_template and not getattr(tokenizer, "chat_template", None):
            raise ValueError(
                f"use_chat_template=True but the tokenizer {tokenizer.name_or_path!r} has no "
                "chat template; use the plain template instead"
            )
        self.tokenizer = tokenizer
        self.config = config
        self.pad_id = pad_id_of(tokenizer)

    def format(self, question: str) -> str:
        """The prompt string for one question."""
        text = self.config.template.format(instruction=self.config.instruction, question=question)
        if not self.config.use_chat_template:
            return text
        messages = [{"role": "user", "content": text}]
        if self.config.system_prompt is not None:
            messages.insert(0, {"role": "system", "content": self.config.system_prompt})
        return self.tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=True
        )

    def encode(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids of formatted prompts (chat templates already contain their special tokens)."""
        if not texts:
            return []
        encoded = self.tokenizer(list(texts), add_special_tokens=not self.config.use_chat_template)[
            "input_ids"
        ]
        return [list(ids) for ids in encoded]

    def batch(self, questions: Sequence[str]) -> tuple[PromptBatch, np.ndarray]:
        """The batch of the questions that fit, and their indices (see `on_too_long`)."""
        if isinstance(questions, str) or not isinstance(questions, Sequence):
            raise ValueError(f"questions must be a list of strings, got "
                             f"{type(questions).__name__} (wrap a single question in a list)")
        texts = [self.format(q) for q in questions]
        ids = self.encode(texts)
        keep = self.check_lengths([len(x) for x in ids], texts)
        tokens, mask, positions, lengths = left_pad(
            [ids[i] for i in keep], self.config.max_length, self.pad_id
        )
        return PromptBatch(tokens, mask, positions, lengths, [texts[i] for i in keep]), keep

    def check_lengths(self, lengths: Sequence[int], texts: Sequence[str]) -> np.ndarray:
        """Indices of prompts within `max_length`; raises or logs on the others per the config."""
        lengths = np.asarray(lengths, dtype=np.int64)
        too_long = np.flatnonzero(lengths > self.config.max_length)
        if too_long.size and self.config.on_too_long == "error":
            i = int(too_long[0])
            raise PromptTooLongError(
                f"{too_long.size} prompt(s) exceed max_length={self.config.max_length}; the first "
                f"has {lengths[i]} tokens: {texts[i][:200]!r}. Raise max_length or set "
                "on_too_long='drop'"
            )
        if too_long.size:
            logger.warning(
                "dropped %d of %d prompts longer than %d tokens",
                too_long.size,
                lengths.size,
                self.config.max_length,
            )
        return np.flatnonzero(lengths <= self.config.max_length)
