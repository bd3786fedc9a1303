"""Tiny random HF checkpoints of each supported family, and HF reference logits."""

from __future__ import annotations

import numpy as np
import torch
from transformers import AutoModelForCausalLM, LlamaConfig, Qwen2Config, Qwen3Config

_LLAMA3_ROPE = {
    "rope_type": "llama3",
    "rope_theta": 10000.0,
    "factor": 8.0,
    "low_freq_factor": 1.0,
    "high_freq_factor": 4.0,
    # Small on purpose: with head_dim 16 the frequencies fall in all three llama3 regimes
    # (kept, smoothed, divided by `factor`).
    "original_max_position_embeddings": 32,
}
_TINY = dict(vocab_size=128, hidden_size=64, intermediate_size=96, num_hidden_layers=2)

# name -> transformers config; together they cover llama3 RoPE, q/k/v(/o/mlp) biases, tied and
# untied embeddings, kv_heads = 1, q/k norm and head_dim != hidden / heads.
FAMILIES = {
    "llama3": lambda: LlamaConfig(
        **_TINY, num_attention_heads=4, num_key_value_heads=2, rope_parameters=_LLAMA3_ROPE
    ),
    "llama_bias_kv1_tied": lambda: LlamaConfig(
        **_TINY,
        num_attention_heads=4,
        num_key_value_heads=1,
        head_dim=24,
        attention_bias=True,
        mlp_bias=True,
        tie_word_embeddings=True,
    ),
    "qwen2_tied": lambda: Qwen2Config(
        **_TINY, num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True
    ),
    "qwen2_untied_kv1": lambda: Qwen2Config(
        **_TINY, num_attention_heads=4, num_key_value_heads=1, tie_word_embeddings=False
    ),
    "qwen3": lambda: Qwen3Config(
        **_TINY, num_attention_heads=4, num_key_value_heads=2, head_dim=24
    ),
    "qwen3_kv1_tied_bias": lambda: Qwen3Config(
        **_TINY,
        num_attention_heads=4,
        num_key_value_heads=1,
        head_dim=16,
        attention_bias=True,
        tie_word_embeddings=True,
    ),
}


def make_hf_model(hf_config, seed: int = 0) -> torch.nn.Module:
    """A float32 HF model with O(1) random weights: norms near 1, random biases.

    HF's own init (std 0.02, unit norms, zero biases) makes logits so small that many wrong
    mappings would still pass a 1e-4 test; these weights make every tensor matter.
    """
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(hf_config, dtype=torch.float32).eval()
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=gen)
            if name.endswith("norm.weight"):
                p.copy_(1.0 + 0.3 * noise)
            elif name.endswith("bias"):
                p.copy_(0.3 * noise)
            elif "embed_tokens" in name:
                p.copy_(noise)
            else:
                p.copy_(noise / p.shape[-1] ** 0.5)
    return model


def padded_batch(vocab: int, batch: int = 3, length: int = 12, seed: int = 0):
    """(tokens, attention_mask, positions) numpy [B, T], rows left-padded by 0, 3, 8, ..."""
    rng = np.random.default_rng(seed)
    tokens = rng.integers(0, vocab, (batch, length)).astype(np.int32)
    mask = np.ones((batch, length), bool)
    for row, pad in enumerate([0, 3, 8, 5, 1, 0, 7, 2][:batch]):
        mask[row, :pad] = False
    positions = np.maximum(np.cumsum(mask, axis=1) - 1, 0).astype(np.int32)
    return tokens, mask, positions


def hf_logits(model: torch.nn.Module, tokens, mask, positions) -> np.ndarray:
    """HF logits [B, T, V] float32 for a padded batch with explicit position ids."""
    with torch.no_grad():
        out = model(
            input_ids=torch.tensor(tokens, dtype=torch.long),
            attention_mask=torch.tensor(mask, dtype=torch.long),
            position_ids=torch.tensor(positions, dtype=torch.long),
        )
    return out.logits.float().numpy()
