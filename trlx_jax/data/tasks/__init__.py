"""Task registry: each task is a TFDS builder plus its default reward and prompt instruction."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import tensorflow_datasets as tfds

from trlx_jax.data.prompts import PromptConfig
from trlx_jax.data.tasks.arithmetic import Arithmetic, ArithmeticConfig
from trlx_jax.data.tasks.base import TaskBuilder, TaskSource, config_with_overrides
from trlx_jax.data.tasks.countdown import Countdown, CountdownConfig
from trlx_jax.data.tasks.gsm8k import Gsm8k
from trlx_jax.registry import Registry


@dataclasses.dataclass(frozen=True)
class TaskSpec:
    """A task: its builder, the reward weights that score it and its default prompt wording."""

    builder: type[TaskBuilder]
    rewards: Mapping[str, float]
    instruction: str = ""
    template: str = "{instruction}{question}"

    def prompt_config(self, **overrides: Any) -> PromptConfig:
        """A `PromptConfig` with this task's template and instruction, then `overrides`."""
        return PromptConfig(
            **{"template": self.template, "instruction": self.instruction, **overrides}
        )


TASKS: Registry[TaskSpec] = Registry("task")
TASKS.register("arithmetic")(
    TaskSpec(Arithmetic, {"exact_match": 1.0}, template="{instruction}{question}=")
)
TASKS.register("countdown")(
    TaskSpec(
        Countdown,
        {"countdown": 1.0},
        instruction="Use each number exactly once with + - * / and parentheses. "
        "Reply with the equation only.\n",
    )
)
TASKS.register("gsm8k")(
    TaskSpec(
        Gsm8k,
        {"numeric_match": 1.0},
        instruction="Solve the problem step by step. End with '#### <number>'.\n",
    )
)


def prepare_task(
    name: str,
    *,
    data_dir: str | Path | None = None,
    config: str | None = None,
    manual_dir: str | Path | None = None,
    **overrides: Any,
) -> TaskBuilder:
    """Prepares a task's files once (later calls reuse them) and returns its builder."""
    builder_cls = TASKS.get(name).builder
    builder_config = None
    if builder_cls.BUILDER_CONFIGS:
        builder_config = config_with_overrides(builder_cls, config, overrides)
    elif config is not None or overrides:
        raise ValueError(f"task {name!r} takes no config or options, got {config!r} {overrides}")
    builder = builder_cls(
        data_dir=None if data_dir is None else str(data_dir), config=builder_config
    )
    download_config = tfds.download.DownloadConfig(
        manual_dir=None if manual_dir is None else str(manual_dir)
    )
    builder.download_and_prepare(download_config=download_config)
    return builder


def load_task(name: str, split: str = "train", **kwargs: Any) -> TaskSource:
    """One split of a task as a random-access sequence of example dicts (see `prepare_task`)."""
    builder = prepare_task(name, **kwargs)
    if split not in builder.info.splits:
        raise ValueError(f"split={split!r}: task {name!r} has the splits "
                         f"{', '.join(sorted(builder.info.splits))}")
    return TaskSource(builder.as_data_source(split=split), name, split)


__all__ = [
    "TASKS",
    "Arithmetic",
    "ArithmeticConfig",
    "Countdown",
    "CountdownConfig",
    "Gsm8k",
    "TaskBuilder",
    "TaskSource",
    "TaskSpec",
    "load_task",
    "prepare_task",
]
