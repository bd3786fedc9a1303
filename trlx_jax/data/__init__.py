"""Data: tasks as TFDS builders, tokenizers, prompt formatting, reward functions, iterators."""

from trlx_jax.data.iterator import (
    IndexSampler,
    PromptIterator,
    RLBatch,
    SupervisedBatch,
    SupervisedIterator,
)
from trlx_jax.data.prompts import PromptBatch, PromptConfig, PromptFormatter, PromptTooLongError
from trlx_jax.data.rewards import (
    REWARDS,
    CombinedReward,
    RewardError,
    call_reward,
    combine_rewards,
)
from trlx_jax.data.tasks import TASKS, TaskSource, TaskSpec, load_task, prepare_task
from trlx_jax.data.tokenizer import build_char_tokenizer, load_tokenizer

__all__ = [
    "REWARDS",
    "TASKS",
    "CombinedReward",
    "IndexSampler",
    "PromptBatch",
    "PromptConfig",
    "PromptFormatter",
    "PromptIterator",
    "PromptTooLongError",
    "RLBatch",
    "RewardError",
    "SupervisedBatch",
    "SupervisedIterator",
    "TaskSource",
    "TaskSpec",
    "build_char_tokenizer",
    "call_reward",
    "combine_rewards",
    "load_task",
    "load_tokenizer",
    "prepare_task",
]
