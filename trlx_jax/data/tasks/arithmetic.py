"""The embedded default task: integer arithmetic expressions, answered with their exact value."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import tensorflow_datasets as tfds

from trlx_jax.data.expression import evaluate
from trlx_jax.data.tasks.base import SyntheticBuilder, SyntheticConfig

_OPERATORS = "+-*"


@dataclasses.dataclass(eq=False)
class ArithmeticConfig(SyntheticConfig):
    """Operands have up to `digits` digits; `operators` is a subset of '+-*'."""

    digits: int = 2
    operators: str = "+-"
    num_operands: int = 2

    def __post_init__(self) -> None:
        if self.digits < 1 or self.num_operands < 2:
            raise ValueError("arithmetic needs digits >= 1 and num_operands >= 2")
        if not self.operators or set(self.operators) - set(_OPERATORS):
            raise ValueError(f"operators must be a non-empty subset of {_OPERATORS!r}")


class Arithmetic(SyntheticBuilder, skip_registration=True):
    """Integer expressions such as `37+58` or `4*12-7`; the answer is the exact value."""

    name = "arithmetic"
    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release."}
    # The default is small enough for a tiny model to learn on a CPU in minutes.
    BUILDER_CONFIGS = [
        ArithmeticConfig(name="default", description="2-digit addition and subtraction."),
        ArithmeticConfig(
            name="mixed",
            description="Three 2-digit operands with + - *.",
            operators="+-*",
            num_operands=3,
            num_train=20_000,
            num_test=1_000,
        ),
    ]

    def _sample(self, rng: np.random.Generator) -> dict[str, Any]:
        config = self.builder_config
        operands = rng.integers(0, 10**config.digits, size=config.num_operands)
        operators = rng.choice(list(config.operators), size=config.num_operands - 1)
        question = str(operands[0]) + "".join(
            f"{o}{x}" for o, x in zip(operators, operands[1:], strict=True)
        )
        answer = str(int(evaluate(question)))
        return {"question": question, "answer": answer, "solution": answer}
