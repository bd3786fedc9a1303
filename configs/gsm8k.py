"""GSM8K RL on a pretrained instruct model with the TROLL paper's settings:
`configs/gsm8k.py:<model>` for `qwen2.5-0.5b` (default), `qwen3-0.6b`, `llama3.2-1b`.

    python -m trlx_jax.cli.train --config=configs/gsm8k.py:qwen2.5-0.5b \
        --config.model.path=/models/Qwen2.5-0.5B-Instruct \
        --config.data.task_options=manual_dir=/data/gsm8k

`model.path` is a local HF directory (config.json, *.safetensors, the tokenizer) and
`data.task_options=manual_dir=...` the directory holding GSM8K's train.jsonl and test.jsonl;
docs/real_models.md says how to get both onto a machine and what to expect.

Settings (Becker et al., TROLL, ICLR 2026): AdamW at a constant 1e-6 with gradient clipping at
1, G = 8 samples per prompt, GRPO advantages, TROLL with K = 64 and eps = 0.05, prompts up to
512 tokens and responses up to 1024, greedy validation on the test split. Reward: the GSM8K
numeric check (the final number against the gold answer) plus 0.1 for marking a final answer.
Compute is bfloat16 with float32 master weights; log-probs, the projection and the loss are
float32 (trlx_jax.ops.logprobs casts the hidden states and the LM head up).
"""

import importlib.util
import os

import ml_collections

_DEFAULT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "default.py")

# name -> (HF repository the weights come from, model.path default: a local directory).
MODELS = {
    "qwen2.5-0.5b": ("Qwen/Qwen2.5-0.5B-Instruct", "models/Qwen2.5-0.5B-Instruct"),
    "qwen3-0.6b": ("Qwen/Qwen3-0.6B", "models/Qwen3-0.6B"),
    "llama3.2-1b": ("meta-llama/Llama-3.2-1B-Instruct", "models/Llama-3.2-1B-Instruct"),
}


def _default_config() -> ml_collections.ConfigDict:
    spec = importlib.util.spec_from_file_location("trlx_jax_default_config", _DEFAULT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config()


def get_config(model: str = "qwen2.5-0.5b") -> ml_collections.ConfigDict:
    if model not in MODELS:
        raise ValueError(f"unknown model {model!r} for configs/gsm8k.py; "
                         f"valid: {', '.join(MODELS)}")
    c = _default_config()
    c.run_dir = f"runs/gsm8k_{model}"

    # The architecture comes from model.path's config.json; the tiny-model keys are unused.
    c.model.path = MODELS[model][1]
    c.model.dtype = "bfloat16"
    c.model.param_dtype = "float32"
    c.model.remat = "full"

    c.data.task = "gsm8k"
    c.data.task_options = "manual_dir=data/gsm8k"
    c.data.use_chat_template = True
    c.data.max_prompt_len = 512
    # The paper samples 256 prompts per step; 32 x G = 8 keeps the sampler's KV cache within one
    # 80 GB accelerator for every model here (docs/real_models.md); raise it with more devices.
    c.data.prompts_per_step = 32
    c.data.rewards = "numeric_match:1.0,format:0.1"

    c.rollout.num_samples = 8
    c.rollout.max_new_tokens = 1024
    c.rollout.temperature = 1.0
    c.rollout.record_top_k = 64

    c.loss_name = "troll"
    c.loss.troll_k = 64
    c.loss.troll_eps = 0.05

    c.optimizer.lr = 1e-6
    c.optimizer.warmup_steps = 0
    c.optimizer.schedule = "constant"
    c.optimizer.grad_clip = 1.0
    c.optimizer.weight_decay = 0.0

    # 256 rollout rows per step in 8 optimizer updates of 32 rows, each accumulated over 4
    # micro-batches of 8 sequences (about 1.5k tokens each).
    c.train.steps = 500
    c.train.minibatches = 8
    c.train.microbatches = 4
    c.train.eval_every = 25
    # Evaluation samples all its prompts in one batch: 256 rows cost the rollout's memory. The
    # whole test split (1,319 problems): python -m trlx_jax.cli.evaluate (in batches).
    c.train.eval_examples = 256
    c.train.eval_samples_logged = 8
    c.train.checkpoint_every = 25
    c.train.keep_checkpoints = 3

    # A pretrained model needs no supervised warm-up.
    c.sft.steps = 0
    return c
