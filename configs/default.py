"""The embedded default experiment: a tiny model on the synthetic arithmetic task, on a CPU.

A supervised warm-up on a small labelled subset, then TROLL RL on prompts with the verifier
only. Run it with `python -m trlx_jax.cli.train --config=configs/default.py`; every key can be
overridden, e.g. `--config.loss.troll_eps=0.1`. `configs/arithmetic.py:<loss>` runs the same
experiment with another policy loss.
"""

import ml_collections

from trlx_jax.objectives.config import get_default_config as loss_config


def get_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.run_dir = "runs/default"

    # Policy model: an HF directory (config.json + safetensors), or "" for a random tiny model of
    # the family below (the CPU default; its vocabulary is the tokenizer's).
    c.model = ml_collections.ConfigDict()
    c.model.path = ""
    c.model.family = "qwen3"
    c.model.hidden_size = 64
    c.model.num_layers = 2
    c.model.num_heads = 4
    c.model.num_kv_heads = 2
    c.model.head_dim = 16
    c.model.intermediate_size = 128
    c.model.tie_word_embeddings = True
    c.model.dtype = "float32"
    c.model.param_dtype = "float32"
    # Per-layer rematerialization policy: none | full | dots_saveable |
    # dots_with_no_batch_dims_saveable | save_attention_out. Attention kernel: auto | dense |
    # blockwise | cudnn (GPU) | splash (TPU); "auto" keeps dense while the sequence fits in one
    # key block (here always), then takes cudnn / splash / blockwise (trlx_jax/models/attention.py).
    c.model.remat = "none"
    c.model.attention = "auto"
    c.model.attention_block_q = 512
    c.model.attention_block_kv = 512

    # Task, tokenizer and prompt formatting. tokenizer "" means the model directory's tokenizer,
    # or the character-level tokenizer for a random model. task_options: comma-separated
    # builder options (e.g. "digits=3,num_train=2000"); data_dir "" is TFDS's default.
    c.data = ml_collections.ConfigDict()
    c.data.task = "arithmetic"
    c.data.task_options = ""
    c.data.data_dir = ""
    c.data.tokenizer = ""
    c.data.use_chat_template = False
    c.data.max_prompt_len = 16
    c.data.on_long_prompt = "error"
    c.data.prompts_per_step = 32
    # Reward terms as "name:weight,..." ("" = the task's default rewards). Accuracy is always
    # the task's first default reward (its correctness check).
    c.data.rewards = ""

    # Sampler: G completions per prompt, sampling parameters, and the top-K recorded per token
    # (the anchor of DPPO top-K and TROLL; must equal loss.troll_k for TROLL).
    c.rollout = ml_collections.ConfigDict()
    c.rollout.num_samples = 8
    c.rollout.max_new_tokens = 5
    c.rollout.temperature = 1.0
    c.rollout.top_p = 1.0
    c.rollout.top_k = 0
    c.rollout.record_top_k = 64
    # Weights while sampling: "gathered" over the fsdp axis once per rollout (decoding reads
    # every weight at every token), or "training" (the ZeRO-3 layout as is: less memory, one
    # all-gather per layer and token). No difference without an fsdp axis.
    c.rollout.weights = "gathered"

    c.advantage = ml_collections.ConfigDict()
    c.advantage.estimator = "grpo"
    c.advantage.std_eps = 1e-6

    c.loss_name = "troll"
    c.loss = loss_config()

    c.optimizer = ml_collections.ConfigDict()
    c.optimizer.lr = 2e-4
    c.optimizer.b1 = 0.9
    c.optimizer.b2 = 0.999
    c.optimizer.weight_decay = 0.0
    c.optimizer.grad_clip = 1.0
    c.optimizer.warmup_steps = 40
    # constant | cosine (cosine decays to 0 over all optimizer updates of the run).
    c.optimizer.schedule = "constant"

    # Mesh (data, fsdp, tensor); -1 in one axis takes the remaining devices.
    c.mesh = ml_collections.ConfigDict()
    c.mesh.shape = (-1, 1, 1)

    # RL: `steps` rollout batches; each is split into `minibatches` optimizer updates per epoch
    # (several updates per batch, so the trust region acts), each accumulated over
    # `microbatches`. Greedy evaluation every `eval_every` steps on `eval_examples` test
    # problems (pass@k with `eval_pass_k` samples when > 0).
    c.train = ml_collections.ConfigDict()
    # "rl", or "sft": the steps continue supervised training on the warm-up's labelled
    # problems instead (the no-RL baseline of a comparison, same evaluation and files).
    c.train.algorithm = "rl"
    c.train.steps = 1000
    c.train.epochs_per_batch = 1
    c.train.minibatches = 4
    c.train.microbatches = 1
    c.train.logprob_chunk_size = 1024
    c.train.eval_every = 50
    c.train.eval_examples = 500
    c.train.eval_pass_k = 0
    c.train.eval_samples_logged = 4
    # Checkpoints (run_dir/checkpoints, orbax, async) every `checkpoint_every` steps and at the
    # end, the last `keep_checkpoints` kept; a run restarted in its directory resumes exactly.
    # Resuming with a changed config is refused unless allow_config_change (then only the
    # keys that are safe to change may differ: steps, evaluation, checkpointing, logging,
    # the mesh shape).
    # After `max_bad_steps` consecutive steps with a non-finite loss or gradient (those
    # updates are skipped) the run stops.
    c.train.checkpoint_every = 100
    c.train.keep_checkpoints = 2
    c.train.allow_config_change = False
    c.train.max_bad_steps = 10

    # Supervised warm-up on `num_examples` labelled training problems (0 steps = none); the
    # result is cached under cache_dir by a hash of the sections it depends on.
    c.sft = ml_collections.ConfigDict()
    c.sft.steps = 900
    c.sft.num_examples = 2000
    c.sft.batch_size = 128
    c.sft.lr = 3e-3
    c.sft.warmup_steps = 100
    c.sft.max_completion_len = 6
    c.sft.cache_dir = "runs/sft_cache"

    c.logging = ml_collections.ConfigDict()
    c.logging.tensorboard = True
    c.logging.progress = True
    c.logging.wandb = False
    c.logging.wandb_project = "trlx_jax"
    c.logging.wandb_mode = "online"
    return c
