"""The embedded default experiment: a tiny model on the synthetic arithmetic task, on a CPU.

Every other config starts from this one and changes what it needs, e.g.
`python -m trlx_jax.cli.config --config=configs/default.py --config.loss.eps_high=0.28`.
"""

import ml_collections

from trlx_jax.objectives.config import get_default_config as loss_config


def get_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.run_dir = "runs/default"

    # Policy model: an HF directory (config.json + safetensors), or "" for a random tiny model of
    # the family below (the CPU default).
    c.model = ml_collections.ConfigDict()
    c.model.path = ""
    c.model.family = "qwen3"
    c.model.hidden_size = 64
    c.model.num_layers = 2
    c.model.num_heads = 4
    c.model.num_kv_heads = 2
    c.model.intermediate_size = 128
    c.model.dtype = "float32"
    c.model.param_dtype = "float32"

    # Task, tokenizer and prompt formatting. tokenizer "" builds the character-level tokenizer.
    c.data = ml_collections.ConfigDict()
    c.data.task = "arithmetic"
    c.data.tokenizer = ""
    c.data.template = "plain"
    c.data.instruction = ""
    c.data.max_prompt_len = 32
    c.data.on_long_prompt = "error"
    c.data.prompts_per_step = 16
    c.data.reward = "exact_match"

    # Sampler: G completions per prompt, sampling parameters, and the top-K recorded per token
    # (the anchor of DPPO top-K and TROLL).
    c.rollout = ml_collections.ConfigDict()
    c.rollout.num_samples = 8
    c.rollout.max_new_tokens = 16
    c.rollout.temperature = 1.0
    c.rollout.top_p = 1.0
    c.rollout.top_k = 0
    c.rollout.record_top_k = 64

    c.advantage = ml_collections.ConfigDict()
    c.advantage.estimator = "grpo"
    c.advantage.std_eps = 1e-6

    c.loss_name = "troll"
    c.loss = loss_config()

    c.optimizer = ml_collections.ConfigDict()
    c.optimizer.lr = 1e-3
    c.optimizer.b1 = 0.9
    c.optimizer.b2 = 0.999
    c.optimizer.weight_decay = 0.0
    c.optimizer.grad_clip = 1.0
    c.optimizer.warmup_steps = 0

    # Mesh (data, fsdp, tensor); -1 in one axis takes the remaining devices.
    c.mesh = ml_collections.ConfigDict()
    c.mesh.shape = (-1, 1, 1)

    c.train = ml_collections.ConfigDict()
    c.train.steps = 200
    c.train.epochs_per_batch = 1
    c.train.minibatches = 1
    c.train.eval_every = 50
    c.train.checkpoint_every = 50
    return c
