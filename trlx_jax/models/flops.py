"""Model FLOPs of a decoder's forward and training passes, MaxText's convention.

Counted: the matmuls with weights (q/k/v/o projections, the three SwiGLU matmuls, the LM head)
at 2 FLOPs per multiply-add, and attention's two matmuls (QK^T and PV, 4 x T x S x Dh per
head), halved for causal attention. Not counted: the embedding lookup, norms, softmax,
elementwise work, and recomputation by remat (these are model FLOPs, not hardware FLOPs).
Training = 3 x forward (the backward pass costs two forwards). So for a T-token batch of
length-T rows, train = 6 x matmul_params x tokens + 3 x causal attention.
"""

from __future__ import annotations

from trlx_jax.models.config import ModelConfig


def layer_matmul_params(config: ModelConfig) -> int:
    """Weights one token multiplies in one layer: attention projections + SwiGLU MLP."""
    d, hd = config.hidden_size, config.head_dim
    attention = d * (config.num_heads + 2 * config.num_kv_heads) * hd + config.num_heads * hd * d
    return attention + 3 * d * config.intermediate_size


def attention_flops(config: ModelConfig, batch: int, seq_len: int, causal: bool = True) -> float:
    """Forward FLOPs of QK^T and PV over all layers for `batch` rows of `seq_len` tokens."""
    flops = 4.0 * batch * seq_len**2 * config.num_heads * config.head_dim * config.num_layers
    return flops / 2 if causal else flops


def forward_flops(
    config: ModelConfig, batch: int, seq_len: int, head_tokens: int | None = None,
    causal: bool = True,
) -> float:
    """Forward FLOPs of `batch` rows of `seq_len` tokens, `head_tokens` per row (default all)
    through the LM head (an RL step projects only the response positions)."""
    head_tokens = seq_len if head_tokens is None else head_tokens
    layers = 2.0 * config.num_layers * layer_matmul_params(config) * batch * seq_len
    head = 2.0 * config.hidden_size * config.vocab_size * batch * head_tokens
    return layers + head + attention_flops(config, batch, seq_len, causal)


def train_flops(
    config: ModelConfig, batch: int, seq_len: int, head_tokens: int | None = None,
    causal: bool = True,
) -> float:
    """Forward + backward FLOPs (3 x `forward_flops`) of one pass over the batch."""
    return 3.0 * forward_flops(config, batch, seq_len, head_tokens, causal)
