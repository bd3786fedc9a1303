"""Reward functions `fn(samples, prompts, outputs, **metadata) -> list[float]`; checks, sums."""

from __future__ import annotations

import math
import re
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from trlx_jax.data.answers import extract_final_answer, extract_number, parse_number
from trlx_jax.data.expression import ExpressionError, evaluate, literals, parse_expression
from trlx_jax.registry import Registry

RewardFn = Callable[..., Sequence[float]]
REWARDS: Registry[RewardFn] = Registry("reward function")


class RewardError(RuntimeError):
    """A reward function failed, returned the wrong number of values or a non-finite value."""


def _text_answer(output: str) -> str:
    marked = extract_final_answer(output)
    return (marked if marked is not None else output).strip()


@REWARDS.register("exact_match")
def exact_match(
    samples: Sequence[str],
    prompts: Sequence[str],
    outputs: Sequence[str],
    *,
    answer: Sequence[str],
    **metadata: Any,
) -> list[float]:
    """1.0 where the output's final answer (marked, else the whole output) equals the gold text."""
    return [float(_text_answer(o) == str(a).strip()) for o, a in zip(outputs, answer, strict=True)]


@REWARDS.register("numeric_match")
def numeric_match(
    samples: Sequence[str],
    prompts: Sequence[str],
    outputs: Sequence[str],
    *,
    answer: Sequence[str],
    **metadata: Any,
) -> list[float]:
    """1.0 where the output's final number (`#### N`, `\\boxed{N}`, else last) equals the gold."""
    rewards = []
    for output, gold in zip(outputs, answer, strict=True):
        gold_value = parse_number(str(gold))
        if gold_value is None:
            raise ValueError(f"gold answer {gold!r} is not a number")
        rewards.append(float(extract_number(output) == gold_value))
    return rewards


def countdown_score(output: str, numbers: Sequence[int], target: int) -> float:
    """1.0 if the output's equation uses each number exactly once and evaluates to the target."""
    candidate = extract_final_answer(output)
    if candidate is None:
        lines = [line for line in output.strip().splitlines() if line.strip()]
        candidate = lines[-1] if lines else ""
    # `expr = target` is a common way to write the equation; only the left side is checked.
    candidate = candidate.split("=", 1)[0]
    try:
        tree = parse_expression(candidate, allow_negation=False)
        correct = sorted(literals(tree)) == sorted(numbers) and evaluate(tree) == target
    except (ExpressionError, OverflowError, RecursionError):
        return 0.0
    return float(correct)


@REWARDS.register("countdown")
def countdown(
    samples: Sequence[str],
    prompts: Sequence[str],
    outputs: Sequence[str],
    *,
    numbers: Sequence[Sequence[int]],
    target: Sequence[int],
    **metadata: Any,
) -> list[float]:
    """Countdown check: the equation uses each given number once and reaches the target."""
    return [countdown_score(o, n, t) for o, n, t in zip(outputs, numbers, target, strict=True)]


_FORMAT = re.compile(r"(####\s*\S)|(\\boxed\{)|(<answer>.*</answer>)", re.DOTALL)


@REWARDS.register("format")
def format_reward(
    samples: Sequence[str], prompts: Sequence[str], outputs: Sequence[str], **metadata: Any
) -> list[float]:
    """1.0 where the output marks a final answer (`#### ...`, `\\boxed{...}`, `<answer>` tags)."""
    return [float(_FORMAT.search(o) is not None) for o in outputs]


_MATH_VERIFY_TIMEOUT_S = 5


@REWARDS.register("math_verify")
def math_verify_reward(
    samples: Sequence[str],
    prompts: Sequence[str],
    outputs: Sequence[str],
    *,
    answer: Sequence[str],
    **metadata: Any,
) -> list[float]:
    """1.0 where math-verify finds the output's answer equivalent to the gold (LaTeX aware)."""
    try:
        from math_verify import parse, verify
    except ImportError as e:
        raise ImportError(
            "the 'math_verify' reward needs the math-verify package: "
            "pip install 'trlx_jax[math]' (or pip install math-verify)"
        ) from e
    # math-verify's timeouts use SIGALRM, which only the main thread may set.
    timeout = (
        _MATH_VERIFY_TIMEOUT_S if threading.current_thread() is threading.main_thread() else None
    )
    rewards = []
    for output, gold in zip(outputs, answer, strict=True):
        gold_text = str(gold) if "$" in str(gold) or "\\boxed" in str(gold) else f"${gold}$"
        gold_parsed = parse(gold_text, parsing_timeout=timeout)
        predicted = parse(output, parsing_timeout=timeout)
        rewards.append(float(verify(gold_parsed, predicted, timeout_seconds=timeout)))
    return rewards


def _per_sample(value: Any) -> bool:
    """Whether a metadata value is a per-sample list (strings and scalars are shared)."""
    if isinstance(value, np.ndarray):
        return value.ndim > 0
    return isinstance(value, Sequence) and not isinstance(value, str | bytes)


def _sample_slice(metadata: Mapping[str, Any], i: int) -> dict[str, Any]:
    return {k: [v[i]] if _per_sample(v) else v for k, v in metadata.items()}


def _check_inputs(
    name: str, samples: Sequence[str], prompts: Sequence[str], outputs: Sequence[str],
    metadata: Mapping[str, Any],
) -> None:
    """One text per sample in samples / prompts / outputs, one metadata entry per sample."""
    n = None
    for arg, texts in (("outputs", outputs), ("samples", samples), ("prompts", prompts)):
        if isinstance(texts, str | bytes) or not isinstance(texts, Sequence):
            raise RewardError(f"reward function {name!r}: {arg} must be a list of strings, one "
                              f"per sample, got {type(texts).__name__}")
        n = len(texts) if n is None else n
        if len(texts) != n:
            raise RewardError(f"reward function {name!r}: {arg} has {len(texts)} entries but "
                              f"outputs has {n}; give one per sample")
    for key, value in metadata.items():
        if _per_sample(value) and len(value) != n:
            raise RewardError(
                f"reward function {name!r}: metadata {key!r} has {len(value)} entries for {n} "
                "samples; metadata needs one entry per sample: with G samples per prompt, "
                "repeat each prompt's entry G times (e.g. [m for m in values for _ in range(G)])"
            )


def _describe(i: int, samples: Sequence[str], outputs: Sequence[str], metadata: Mapping) -> str:
    if not 0 <= i < len(outputs):
        return "(no sample)"
    # This sample's entry of each per-sample list; values shared by all samples as they are.
    fields = {k: v[i] if _per_sample(v) else v for k, v in metadata.items()}
    fields = {k: v[:100] if isinstance(v, str) else v for k, v in fields.items()}
    return (
        f"sample {i}: output={outputs[i][:300]!r}, sample={samples[i][:300]!r}, metadata={fields}"
    )


def call_reward(
    fn: RewardFn,
    samples: Sequence[str],
    prompts: Sequence[str],
    outputs: Sequence[str],
    metadata: Mapping[str, Any] | None = None,
    *,
    name: str | None = None,
) -> np.ndarray:
    """Calls one reward function and checks its result: one finite float per sample (float64).

    Inputs are checked first: one text per sample in each list, and every per-sample metadata
    list (any list or array value) of the same length.
    """
    name = name or getattr(fn, "__name__", repr(fn))
    metadata = metadata or {}
    _check_inputs(name, samples, prompts, outputs, metadata)
    n = len(outputs)
    try:
        raw = fn(samples, prompts, outputs, **metadata)
    except Exception as e:
        culprit = _find_raising_sample(fn, samples, prompts, outputs, metadata)
        raise RewardError(
            f"reward function {name!r} raised {type(e).__name__}: {e}; "
            f"{_describe(culprit, samples, outputs, metadata)}"
        ) from e
    try:
        values = np.asarray(raw, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise RewardError(
            f"reward function {name!r} returned values that are not floats ({e}); "
            f"{_describe(0, samples, outputs, metadata)}"
        ) from e
    if values.shape != (n,):
        raise RewardError(
            f"reward function {name!r} returned shape {values.shape} for {n} samples; "
            f"{_describe(0, samples, outputs, metadata)}"
        )
    bad = np.flatnonzero(~np.isfinite(values))
    if bad.size:
        i = int(bad[0])
        raise RewardError(
            f"reward function {name!r} returned non-finite value {values[i]} for "
            f"{_describe(i, samples, outputs, metadata)}"
        )
    return values


def _find_raising_sample(
    fn: RewardFn,
    samples: Sequence[str],
    prompts: Sequence[str],
    outputs: Sequence[str],
    metadata: Mapping[str, Any],
) -> int:
    """The first sample on which `fn` raises when called alone (0 if none does alone)."""
    for i in range(len(outputs)):
        try:
            fn([samples[i]], [prompts[i]], [outputs[i]], **_sample_slice(metadata, i))
        except Exception:
            return i
    return 0


def resolve_reward(fn: str | RewardFn) -> tuple[str, RewardFn]:
    """(name, function) for a registered name or a callable."""
    if isinstance(fn, str):
        return fn, REWARDS.get(fn)
    if not callable(fn):
        raise TypeError(f"a reward term must be a registered name ({', '.join(REWARDS.names())}) "
                        f"or a callable fn(samples, prompts, outputs, **metadata), got {fn!r}")
    return getattr(fn, "__name__", repr(fn)), fn


class CombinedReward:
    """A weighted sum of reward functions, itself a trlx-style reward function."""

    def __init__(self, weights: Mapping[str, float] | Sequence[tuple[str | RewardFn, float]]):
        items = weights.items() if isinstance(weights, Mapping) else weights
        self.terms: list[tuple[str, RewardFn, float]] = []
        for fn, weight in items:
            if isinstance(weight, bool) or not isinstance(weight, int | float | np.number):
                raise ValueError(f"reward weight for {fn!r} must be a number, got {weight!r}")
            if not math.isfinite(weight):
                raise ValueError(f"reward weight for {fn!r} must be finite, got {weight}")
            name, resolved = resolve_reward(fn)
            self.terms.append((name, resolved, float(weight)))
        if not self.terms:
            raise ValueError("a combined reward needs at least one reward function")
        names = [name for name, _, _ in self.terms]
        if len(set(names)) != len(names):
            raise ValueError(f"reward function names must be unique, got {names}")
        self.__name__ = " + ".join(f"{w:g}*{name}" for name, _, w in self.terms)

    def components(
        self,
        samples: Sequence[str],
        prompts: Sequence[str],
        outputs: Sequence[str],
        /,
        **metadata: Any,
    ) -> dict[str, np.ndarray]:
        """Each term's checked, unweighted rewards, by name (for metrics)."""
        return {
            name: call_reward(fn, samples, prompts, outputs, metadata, name=name)
            for name, fn, _ in self.terms
        }

    def total(self, components: Mapping[str, np.ndarray]) -> np.ndarray:
        """The weighted sum of `components`."""
        return sum(w * components[name] for name, _, w in self.terms)

    def __call__(
        self,
        samples: Sequence[str],
        prompts: Sequence[str],
        outputs: Sequence[str],
        /,
        **metadata: Any,
    ) -> list[float]:
        return self.total(self.components(samples, prompts, outputs, **metadata)).tolist()


def combine_rewards(
    weights: Mapping[str, float] | Sequence[tuple[str | RewardFn, float]],
) -> CombinedReward:
    """A reward function summing the weighted terms, e.g. {'numeric_match': 1, 'format': 0.1}."""
    return CombinedReward(weights)
