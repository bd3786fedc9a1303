"""Seeded, resumable, host-sharded batch iterators: RL prompt batches and supervised batches."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from trlx_jax.data.prompts import PromptBatch, PromptFormatter, PromptTooLongError, left_pad

logger = logging.getLogger(__name__)

# Formatting and tokenizing the whole dataset up front happens in chunks of this many examples.
_SCAN_CHUNK = 1024


class IndexSampler:
    """Which example indices each process reads at each step; the position is a small dict.

    Every epoch is a seeded permutation of all examples (identical on every host); global batch
    `s` is positions [s*G, (s+1)*G) of it and process `p` reads the p-th of `process_count` equal
    slices. With `drop_remainder=False` the last batch is filled by wrapping around, and the
    filler rows are marked invalid.
    """

    def __init__(
        self,
        num_examples: int,
        global_batch_size: int,
        *,
        seed: int = 0,
        shuffle: bool = True,
        drop_remainder: bool = True,
        process_index: int = 0,
        process_count: int = 1,
    ) -> None:
        if process_count < 1 or not 0 <= process_index < process_count:
            raise ValueError(f"bad process_index={process_index} / process_count={process_count}")
        if global_batch_size < 1 or global_batch_size % process_count:
            raise ValueError(
                f"global_batch_size={global_batch_size} must be a positive multiple of "
                f"process_count={process_count}"
            )
        self.num_examples = num_examples
        self.global_batch_size = global_batch_size
        self.local_batch_size = global_batch_size // process_count
        self.seed = seed
        self.shuffle = shuffle
        self.drop_remainder = drop_remainder
        self.process_index = process_index
        if drop_remainder:
            self.steps_per_epoch = num_examples // global_batch_size
        else:
            self.steps_per_epoch = -(-num_examples // global_batch_size)
        if self.steps_per_epoch == 0:
            raise ValueError(
                f"{num_examples} examples are fewer than one global batch of "
                f"{global_batch_size}; use a smaller batch (e.g. data.prompts_per_step or "
                "sft.batch_size) or a larger split"
            )
        self.epoch = 0
        self.step = 0
        self._order_cache: tuple[int, np.ndarray] | None = None

    def _order(self, epoch: int) -> np.ndarray:
        if self._order_cache is None or self._order_cache[0] != epoch:
            if self.shuffle:
                order = np.random.default_rng([self.seed, epoch]).permutation(self.num_examples)
            else:
                order = np.arange(self.num_examples)
            self._order_cache = (epoch, order)
        return self._order_cache[1]

    def next(self) -> tuple[np.ndarray, np.ndarray]:
        """(example indices, valid mask) of this process's slice of the next global batch."""
        order = self._order(self.epoch)
        start = self.step * self.global_batch_size + self.process_index * self.local_batch_size
        positions = np.arange(start, start + self.local_batch_size)
        valid = positions < self.num_examples
        indices = order[positions % self.num_examples]
        self.step += 1
        if self.step == self.steps_per_epoch:
            self.epoch, self.step = self.epoch + 1, 0
        return indices, valid

    def state(self) -> dict[str, int]:
        """JSON-able position: restoring it makes the next batches those that would have come."""
        return {
            "epoch": self.epoch,
            "step": self.step,
            "seed": self.seed,
            "num_examples": self.num_examples,
            "global_batch_size": self.global_batch_size,
        }

    def restore(self, state: dict[str, int]) -> None:
        """Continues from a `state()`; it must come from the same data, seed and batch size."""
        for key in ("seed", "num_examples", "global_batch_size"):
            if int(state[key]) != getattr(self, key):
                raise ValueError(
                    f"cannot restore iterator state: {key}={state[key]} in the checkpoint but "
                    f"{getattr(self, key)} now"
                )
        if not 0 <= int(state["step"]) < self.steps_per_epoch:
            raise ValueError(f"step {state['step']} outside an epoch of {self.steps_per_epoch}")
        self.epoch, self.step = int(state["epoch"]), int(state["step"])


def _read(source: Sequence[dict[str, Any]], indices: Sequence[int]) -> list[dict[str, Any]]:
    if hasattr(source, "__getitems__"):
        return source.__getitems__([int(i) for i in indices])
    return [source[int(i)] for i in indices]


def _columns(examples: Sequence[dict[str, Any]]) -> dict[str, list[Any]]:
    keys = examples[0].keys() if examples else ()
    return {key: [example[key] for example in examples] for key in keys}


@dataclasses.dataclass
class RLBatch:
    """One process's prompts for a rollout, with what the reward functions need."""

    prompts: PromptBatch
    questions: list[str]
    # Every example field (answer, numbers, target, ...) as a list per row: reward **metadata.
    metadata: dict[str, list[Any]]
    valid: np.ndarray  # bool [B]; False on filler rows of a final partial batch
    indices: np.ndarray  # int [B], positions in the source

    @property
    def answers(self) -> list[Any]:
        """The gold answers, one per row."""
        return self.metadata["answer"]


@dataclasses.dataclass
class SupervisedBatch(RLBatch):
    """An RL batch plus target completions, right-padded after the left-padded prompts."""

    completion_tokens: np.ndarray  # int32 [B, C], completion then eos then padding
    completion_mask: np.ndarray  # bool [B, C]
    completions: list[str]


def _default_process(process_index: int | None, process_count: int | None) -> tuple[int, int]:
    if process_index is not None and process_count is not None:
        return process_index, process_count
    import jax

    return (
        jax.process_index() if process_index is None else process_index,
        jax.process_count() if process_count is None else process_count,
    )


class PromptIterator:
    """Endless (or `num_epochs`) RL prompt batches over a source of example dicts.

    Prompts longer than the formatter's `max_length` are found once, up front, over the whole
    source (same answer on every host), then raise or are left out per `on_too_long`.
    """

    def __init__(
        self,
        source: Sequence[dict[str, Any]],
        formatter: PromptFormatter,
        global_batch_size: int,
        *,
        seed: int = 0,
        shuffle: bool = True,
        drop_remainder: bool = True,
        num_epochs: int | None = None,
        process_index: int | None = None,
        process_count: int | None = None,
    ) -> None:
        self.source = source
        self.formatter = formatter
        self.num_epochs = num_epochs
        self.kept = self._scan()
        process_index, process_count = _default_process(process_index, process_count)
        self.sampler = IndexSampler(
            len(self.kept),
            global_batch_size,
            seed=seed,
            shuffle=shuffle,
            drop_remainder=drop_remainder,
            process_index=process_index,
            process_count=process_count,
        )

    def _chunks(self) -> Iterator[list[dict[str, Any]]]:
        for start in range(0, len(self.source), _SCAN_CHUNK):
            yield _read(self.source, range(start, min(start + _SCAN_CHUNK, len(self.source))))

    def _scan(self) -> np.ndarray:
        """Indices of the examples whose prompt fits (one check, one log line, for all)."""
        texts: list[str] = []
        lengths: list[int] = []
        for examples in self._chunks():
            chunk = [self.formatter.format(e["question"]) for e in examples]
            texts += chunk
            lengths += [len(ids) for ids in self.formatter.encode(chunk)]
        return self.formatter.check_lengths(lengths, texts)

    @property
    def steps_per_epoch(self) -> int:
        """Global batches per epoch."""
        return self.sampler.steps_per_epoch

    def state(self) -> dict[str, int]:
        """The iterator's position, for the checkpoint."""
        return self.sampler.state()

    def restore(self, state: dict[str, int]) -> None:
        """Resumes at a position saved by `state()`."""
        self.sampler.restore(state)

    def __iter__(self) -> Iterator[RLBatch]:
        return self

    def __next__(self) -> RLBatch:
        if self.num_epochs is not None and self.sampler.epoch >= self.num_epochs:
            raise StopIteration
        positions, valid = self.sampler.next()
        indices = self.kept[positions]
        examples = _read(self.source, indices)
        return self._make_batch(examples, valid, indices)

    def _make_batch(
        self, examples: list[dict[str, Any]], valid: np.ndarray, indices: np.ndarray
    ) -> RLBatch:
        questions = [e["question"] for e in examples]
        prompts, _ = self.formatter.batch(questions)
        return RLBatch(prompts, questions, _columns(examples), valid, indices)


class SupervisedIterator(PromptIterator):
    """(prompt, target completion) batches for supervised warm-up, same order and sharding.

    The completion is `example[completion_field]` followed by eos, right-padded to
    `max_completion_length`, so a batch has the layout of a rollout: [left-padded prompt |
    completion].
    """

    def __init__(
        self,
        source: Sequence[dict[str, Any]],
        formatter: PromptFormatter,
        global_batch_size: int,
        *,
        max_completion_length: int,
        completion_field: str = "solution",
        **kwargs: Any,
    ) -> None:
        self.max_completion_length = max_completion_length
        self.completion_field = completion_field
        eos = formatter.tokenizer.eos_token_id
        if eos is None:
            raise ValueError("supervised batches need a tokenizer with an eos token")
        self.eos_id = int(eos)
        super().__init__(source, formatter, global_batch_size, **kwargs)

    def _encode_completions(self, examples: Sequence[dict[str, Any]]) -> list[list[int]]:
        texts = [e[self.completion_field] for e in examples]
        encoded = self.formatter.tokenizer(texts, add_special_tokens=False)["input_ids"]
        return [[*ids, self.eos_id] for ids in encoded]

    def _scan(self) -> np.ndarray:
        fits_prompt = super()._scan()
        completions: list[str] = []
        lengths: list[int] = []
        for examples in self._chunks():
            completions += [e[self.completion_field] for e in examples]
            lengths += [len(ids) for ids in self._encode_completions(examples)]
        too_long = np.flatnonzero(np.asarray(lengths) > self.max_completion_length)
        if too_long.size and self.formatter.config.on_too_long == "error":
            i = int(too_long[0])
            raise PromptTooLongError(
                f"{too_long.size} completion(s) exceed max_completion_length="
                f"{self.max_completion_length}; the first has {lengths[i]} tokens: "
                f"{completions[i][:200]!r}"
            )
        if too_long.size:
            logger.warning(
                "dropped %d of %d examples whose completion is longer than %d tokens",
                too_long.size,
                len(lengths),
                self.max_completion_length,
            )
        return np.setdiff1d(fits_prompt, too_long)

    def _make_batch(
        self, examples: list[dict[str, Any]], valid: np.ndarray, indices: np.ndarray
    ) -> SupervisedBatch:
        base = super()._make_batch(examples, valid, indices)
        completion_ids = self._encode_completions(examples)
        # Right padding is left padding of the reversed rows, reversed back.
        tokens, mask, _, _ = left_pad(
            [ids[::-1] for ids in completion_ids], self.max_completion_length, self.formatter.pad_id
        )
        return SupervisedBatch(
            **vars(base),
            completion_tokens=tokens[:, ::-1].copy(),
            completion_mask=mask[:, ::-1].copy(),
            completions=[e[self.completion_field] for e in examples],
        )
