"""A tiny offline stand-in for a real model run: a BPE tokenizer with a chat template, a random
HF Qwen2 or Llama checkpoint saved with `save_pretrained`, and GSM8K-format jsonl files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from hf_testing import make_hf_model
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import LlamaConfig, PreTrainedTokenizerFast, Qwen2Config

ROOT = Path(__file__).resolve().parents[2]
# Chat formats of the two families, with the special tokens each needs.
STYLES = {
    "chatml": {  # Qwen2.5 / Qwen3
        "specials": ["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        "tokens": {"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"},
        "template": (
            "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
            "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
        ),
    },
    "llama3": {  # Llama 3.x Instruct (no pad token: padding falls back to eos)
        "specials": ["<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>",
                     "<|eot_id|>"],
        "tokens": {"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>"},
        "template": (
            "{{ bos_token }}{% for m in messages %}<|start_header_id|>{{ m['role'] }}"
            "<|end_header_id|>\n\n{{ m['content'] }}<|eot_id|>{% endfor %}"
            "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n"
            "{% endif %}"
        ),
    },
}

_NAMES = ["Tom", "Ana", "Li", "Sam", "Mia", "Raj"]
_THINGS = ["apples", "books", "coins", "pens", "cards"]


def gsm8k_rows(n: int, seed: int) -> list[dict[str, str]]:
    """n GSM8K-format rows (question, worked answer with calculator marks, `#### N`)."""
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(n):
        a, b = (int(x) for x in rng.integers(1, 20, 2))
        name, thing = rng.choice(_NAMES), rng.choice(_THINGS)
        rows.append({
            "question": f"{name} has {a} {thing} and gets {b} more. How many {thing} now?",
            "answer": f"{a} + {b} = <<{a}+{b}={a + b}>>{a + b}\n#### {a + b}",
        })
    return rows


def write_gsm8k(directory: Path, num_train: int = 32, num_test: int = 8) -> Path:
    """train.jsonl and test.jsonl in `directory` (the task's manual_dir)."""
    directory.mkdir(parents=True, exist_ok=True)
    for split, n, seed in (("train", num_train, 0), ("test", num_test, 1)):
        rows = gsm8k_rows(n, seed)
        (directory / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return directory


def train_bpe_tokenizer(directory: Path, style: str, vocab_size: int = 512):
    """A byte-level BPE tokenizer trained on GSM8K-like text, with the style's chat template."""
    spec = STYLES[style]
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=spec["specials"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    text = [r["question"] + "\n" + r["answer"] for r in gsm8k_rows(400, 7)]
    text.append("Solve the problem step by step. End with '#### <number>'.")
    tokenizer.train_from_iterator(text, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, chat_template=spec["template"],
                                   clean_up_tokenization_spaces=False, **spec["tokens"])
    fast.save_pretrained(directory)
    return fast


def save_tiny_hf_model(directory: Path, family: str, tokenizer, seed: int = 0,
                       logit_std: float = 2.0) -> Path:
    """A random 2-layer HF checkpoint of `family` ("qwen2" or "llama", the latter with llama3
    RoPE scaling) whose vocabulary fits `tokenizer`, saved with its tokenizer.

    The (tied) embedding is scaled so that logits have a standard deviation of about
    `logit_std`: next-token distributions neither uniform nor one-hot, like a real LM's.
    """
    common = dict(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=96,
                  num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                  eos_token_id=tokenizer.eos_token_id, max_position_embeddings=512)
    if family == "qwen2":
        config = Qwen2Config(**common, tie_word_embeddings=True,
                             pad_token_id=tokenizer.pad_token_id)
    elif family == "llama":
        rope = {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 32.0,
                "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                "original_max_position_embeddings": 64}
        config = LlamaConfig(**common, tie_word_embeddings=True, rope_parameters=rope,
                             bos_token_id=tokenizer.bos_token_id)
    else:
        raise ValueError(f"family {family!r}: qwen2 or llama")
    model = make_hf_model(config, seed)
    with torch.no_grad():
        model.get_input_embeddings().weight.mul_(logit_std / config.hidden_size**0.5)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


# configs/gsm8k.py shrunk to seconds: 2 prompts x G = 8, 16 new tokens, 2 steps of 2 updates,
# checkpoints at both steps. Its other settings (bfloat16 compute, TROLL K = 64, rewards, chat
# template) stay.
TINY_OVERRIDES = {
    "data.max_prompt_len": 64,
    "data.prompts_per_step": 2,
    "rollout.max_new_tokens": 16,
    "train.steps": 2,
    "train.minibatches": 2,
    "train.microbatches": 1,
    "train.eval_every": 2,
    "train.eval_examples": 4,
    "train.checkpoint_every": 1,
    "mesh.shape": (1, 1, 1),
    "logging.progress": False,
}


def world_overrides(world: Path, family: str) -> dict[str, object]:
    """TINY_OVERRIDES plus the paths of a world made by `make_world`."""
    return {**TINY_OVERRIDES, "model.path": str(world / family),
            "data.task_options": f"manual_dir={world / 'gsm8k'}",
            "data.data_dir": str(world / "tfds")}


def make_world(root: Path, family: str) -> Path:
    """root/<family> (checkpoint + tokenizer) and root/gsm8k (jsonl), built once."""
    if not (root / family / "config.json").is_file():
        style = "chatml" if family == "qwen2" else "llama3"
        tokenizer = train_bpe_tokenizer(root / f"tokenizer_{style}", style)
        save_tiny_hf_model(root / family, family, tokenizer)
    if not (root / "gsm8k" / "test.jsonl").is_file():
        write_gsm8k(root / "gsm8k")
    return root


def shared_root(tmp_path_factory, worker_id: str) -> Path:
    """A directory every xdist worker of this session sees (the session's own without xdist)."""
    base = tmp_path_factory.getbasetemp()
    return (base if worker_id == "master" else base.parent) / "gsm8k_world"


def facade_run(root: Path):
    """The tiny qwen2 run of configs/gsm8k.py through trlx_jax.train, made once per session:
    a second caller (another xdist worker) resumes the finished run from its checkpoint."""
    from filelock import FileLock

    import trlx_jax

    root.mkdir(parents=True, exist_ok=True)
    with FileLock(str(root / "facade.lock")):
        make_world(root, "qwen2")
        overrides = {k.replace(".", "__"): v for k, v in world_overrides(root, "qwen2").items()}
        return trlx_jax.train(str(ROOT / "configs" / "gsm8k.py:qwen2.5-0.5b"),
                              run_dir=str(root / "facade_run"), **overrides)


def chat_prompt_ids(tokenizer, questions: list[str]) -> list[list[int]]:
    """Token ids of questions in the tokenizer's chat template, ready for generation."""
    texts = [tokenizer.apply_chat_template([{"role": "user", "content": q}], tokenize=False,
                                           add_generation_prompt=True) for q in questions]
    return [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]


def greedy_ours(model_dir: Path, prompt_ids: list[list[int]], max_new_tokens: int):
    """Greedy completions (token ids, the stop token included) by our sampler, float32,
    all prompts in one left-padded batch."""
    import jax

    from trlx_jax.data import load_tokenizer
    from trlx_jax.data.prompts import left_pad, pad_id_of
    from trlx_jax.models import load_hf
    from trlx_jax.rollout import SamplingParams, generate

    tokenizer = load_tokenizer(model_dir)
    model, _ = load_hf(str(model_dir), dtype="float32", param_dtype="float32")
    pad = pad_id_of(tokenizer)
    tokens, mask, _, _ = left_pad(prompt_ids, max(map(len, prompt_ids)), pad)
    rollout = generate(model, tokens, mask, key=jax.random.key(0), max_new_tokens=max_new_tokens,
                       sampling=SamplingParams(temperature=0.0), stop_ids=[tokenizer.eos_token_id],
                       pad_id=pad)
    lengths = np.asarray(rollout.lengths)
    return [row[:n].tolist() for row, n in zip(np.asarray(rollout.tokens), lengths, strict=True)]


def greedy_transformers(model, prompt_ids: list[list[int]], max_new_tokens: int):
    """Greedy completions (token ids) by transformers' `generate`, one unpadded prompt at a
    time, stopping where the model directory's generation config says."""
    out = []
    for ids in prompt_ids:
        with torch.no_grad():
            result = model.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids),
                                    dtype=torch.long), do_sample=False,
                                    max_new_tokens=max_new_tokens)
        out.append(result[0, len(ids):].tolist())
    return out
