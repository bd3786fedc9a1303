"""trlx_jax: reinforcement-learning fine-tuning of language models in JAX with trust regions.

Importing the package is cheap: subpackages (which pull in jax, flax, transformers) load on
first attribute access.
"""

import importlib
from typing import Any

__version__ = "0.1.0"

_SUBPACKAGES = ("models", "ops", "objectives", "rollout", "data", "trainer", "config")


def __getattr__(name: str) -> Any:
    if name in _SUBPACKAGES:
        return importlib.import_module(f"trlx_jax.{name}")
    raise AttributeError(f"module 'trlx_jax' has no attribute {name!r}")
