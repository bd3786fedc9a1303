"""trlx_jax: reinforcement-learning fine-tuning of language models in JAX with trust regions.

`trlx_jax.train(config, reward_fn=..., prompts=..., **overrides)` is the trlx-style facade
(`trlx_jax/facade.py`). Importing the package is cheap: subpackages and the facade (which pull
in jax, flax, transformers) load on first attribute access.
"""

import importlib
from typing import Any

__version__ = "0.1.0"

_SUBPACKAGES = ("models", "ops", "objectives", "rollout", "data", "trainer", "config")
# Public names defined in a submodule -> that submodule.
_EXPORTS = {"train": "facade", "TrainedPolicy": "facade"}

__all__ = ["__version__", *_EXPORTS, *_SUBPACKAGES]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"trlx_jax.{_EXPORTS[name]}"), name)
    if name in _SUBPACKAGES:
        return importlib.import_module(f"trlx_jax.{name}")
    raise AttributeError(f"module 'trlx_jax' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
