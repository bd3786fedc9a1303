"""Countdown: combine the given numbers with + - * / to reach a target (verified by evaluation)."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import tensorflow_datasets as tfds

from trlx_jax.data.expression import evaluate
from trlx_jax.data.tasks.base import SyntheticBuilder, SyntheticConfig

_OPERATORS = "+-*/"
_PRECEDENCE = {"+": 1, "-": 1, "*": 2, "/": 2}
_ATOM = 3
# Draws of numbers allowed per example before the config is declared unsatisfiable.
_MAX_DRAWS = 1000


@dataclasses.dataclass(eq=False)
class CountdownConfig(SyntheticConfig):
    """`num_numbers` numbers in [1, max_number]; a target in [1, max_target] reachable with them."""

    num_numbers: int = 3
    max_number: int = 25
    max_target: int = 100
    operators: str = _OPERATORS

    def __post_init__(self) -> None:
        if self.num_numbers < 2 or self.max_number < 1 or self.max_target < 1:
            raise ValueError("countdown needs num_numbers >= 2, max_number >= 1, max_target >= 1")
        if not self.operators or set(self.operators) - set(_OPERATORS):
            raise ValueError(f"operators must be a non-empty subset of {_OPERATORS!r}")


def _combine(left: tuple[int, str, int], right: tuple[int, str, int], op: str) -> tuple | None:
    """(value, text, precedence) of `left op right`, or None unless a positive integer."""
    (a, a_text, a_prec), (b, b_text, b_prec) = left, right
    if op == "/" and (b == 0 or a % b):
        return None
    value = {"+": a + b, "-": a - b, "*": a * b, "/": a // max(b, 1)}[op]
    if value <= 0:
        return None
    prec = _PRECEDENCE[op]
    # Parenthesize only where precedence or non-associativity (a-(b-c), a/(b*c)) demands it.
    a_text = f"({a_text})" if a_prec < prec else a_text
    b_text = f"({b_text})" if b_prec < prec or (b_prec == prec and op in "-/") else b_text
    return value, f"{a_text}{op}{b_text}", prec


class Countdown(SyntheticBuilder, skip_registration=True):
    """Reach `target` using each given number exactly once; any correct equation scores."""

    name = "countdown"
    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release."}
    BUILDER_CONFIGS = [
        CountdownConfig(name="default", description="3 numbers up to 25, targets up to 100."),
        CountdownConfig(
            name="four",
            description="4 numbers up to 100, targets up to 1000 (TinyZero-style).",
            num_numbers=4,
            max_number=100,
            max_target=1000,
            num_train=50_000,
            num_test=1_000,
        ),
    ]

    def _extra_features(self) -> dict[str, Any]:
        return {"numbers": tfds.features.Sequence(np.int64), "target": np.int64}

    def _sample(self, rng: np.random.Generator) -> dict[str, Any]:
        config = self.builder_config
        for _ in range(_MAX_DRAWS):
            numbers = [int(x) for x in rng.integers(1, config.max_number + 1, config.num_numbers)]
            solved = self._random_solution(rng, numbers)
            if solved is not None and solved[0] <= config.max_target:
                break
        else:
            raise ValueError(
                f"no countdown puzzle with a target <= {config.max_target} in {_MAX_DRAWS} draws; "
                "raise max_target or allow more operators"
            )
        target, solution = solved
        # The generator and the reward share one evaluator, so every stored solution verifies.
        assert evaluate(solution) == target, (solution, target)
        listed = ", ".join(map(str, numbers))
        return {
            "question": f"Using the numbers [{listed}], create an equation that equals {target}.",
            "answer": solution,
            "solution": solution,
            "numbers": numbers,
            "target": target,
        }

    def _random_solution(self, rng: np.random.Generator, numbers: list[int]) -> tuple | None:
        """Combines random pairs with random operators until one expression uses every number."""
        items = [(n, str(n), _ATOM) for n in numbers]
        while len(items) > 1:
            i, j = rng.choice(len(items), size=2, replace=False)
            merged = _combine(
                items[i], items[j], str(rng.choice(list(self.builder_config.operators)))
            )
            if merged is None:
                return None
            items = [x for k, x in enumerate(items) if k not in (i, j)] + [merged]
        return items[0][0], items[0][1]
