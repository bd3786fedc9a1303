"""Fixtures of the trainer tests: a tiny random model and a rollout batch of it."""

import jax
import jax.numpy as jnp
import pytest
from flax import nnx
from trainer_testing import K, tiny_model_config

from trlx_jax.models import init_model
from trlx_jax.objectives import advantage_estimator
from trlx_jax.rollout import SamplingParams, generate
from trlx_jax.trainer.batch import train_batch


@pytest.fixture(scope="module")
def tiny_model():
    """(graphdef, params, config) of a random 2-layer model."""
    config = tiny_model_config()
    graphdef, params = nnx.split(init_model(config, seed=0))
    return graphdef, params, config


@pytest.fixture(scope="module")
def rollout_batch(tiny_model):
    """(rollout, TrainBatch) of 16 rows: 4 prompts x G = 4, top-8 recorded, ragged stops."""
    graphdef, params, _ = tiny_model
    prompts = jnp.array([[0, 5, 6, 7], [3, 4, 5, 6], [0, 0, 9, 10], [11, 12, 13, 14]])
    mask = prompts > 0
    rollout = generate((graphdef, params), prompts, mask, key=jax.random.key(0),
                       max_new_tokens=8, num_samples=4, stop_ids=[1],
                       sampling=SamplingParams(temperature=1.0, record_top_k=K))
    rewards = (rollout.tokens[:, 0] % 3).astype(jnp.float32)
    advantages = advantage_estimator("grpo")(rewards, group_size=4)
    return rollout, train_batch(rollout, advantages)
