"""Reduction of per-token loss terms to (sum, denominator), exact under accumulation.

Every mode is written as `loss = sum / denominator` where both the sum and the denominator are
sums over sequences of per-sequence quantities. Summing them over micro-batches and devices and
dividing once therefore gives exactly the value of the whole global batch.

Modes (L_b = number of response tokens of sequence b, "non-empty" = L_b > 0):
- token-mean:              sum_b,t x / sum_b L_b
- seq-mean-token-sum:      sum_b (sum_t x) / #non-empty sequences
- seq-mean-token-mean:     sum_b (sum_t x / L_b) / #non-empty sequences
- seq-mean-token-sum-norm: sum_b (sum_t x / norm_length) / #non-empty sequences (Dr.GRPO; a
                           constant divisor, `norm_length = 0` means the padded length T)
Sequences without response tokens (batch padding) count in no denominator.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from trlx_jax.checks import Domain, check_rank, check_shape, check_value

MODES = ("token-mean", "seq-mean-token-sum", "seq-mean-token-mean", "seq-mean-token-sum-norm")


def aggregate(
    per_token: jax.Array, mask: jax.Array, mode: str, norm_length: int = 0
) -> tuple[jax.Array, jax.Array]:
    """[B, T] terms and [B, T] response mask -> (loss_sum, denominator) scalars (>= float32)."""
    if mode not in MODES:
        raise ValueError(f"unknown aggregation mode {mode!r}; valid modes: {', '.join(MODES)}")
    shape = check_rank("per_token", per_token, 2, "[B, T]")
    check_shape("mask", mask, shape, "[B, T]", "as per_token")
    check_value("norm_length", norm_length, Domain(0, integer=True))
    valid = mask.astype(bool)
    # `where`, not a product: padding positions may hold inf/NaN and must not leak into the sum.
    dtype = jnp.promote_types(per_token.dtype, jnp.float32)
    terms = jnp.where(valid, per_token, 0.0).astype(dtype)
    lengths = valid.sum(axis=-1).astype(dtype)
    seq_sums = terms.sum(axis=-1)
    if mode == "token-mean":
        return seq_sums.sum(), lengths.sum()
    num_sequences = (lengths > 0).sum().astype(dtype)
    if mode == "seq-mean-token-sum":
        return seq_sums.sum(), num_sequences
    if mode == "seq-mean-token-mean":
        return (seq_sums / jnp.maximum(lengths, 1.0)).sum(), num_sequences
    divisor = float(norm_length if norm_length > 0 else per_token.shape[-1])
    return seq_sums.sum() / divisor, num_sequences


def finalize(loss_sum: jax.Array, denominator: jax.Array) -> jax.Array:
    """(sum, denominator) -> the mean; 0 when the denominator is 0 (no response tokens)."""
    nonzero = denominator > 0
    return jnp.where(nonzero, loss_sum / jnp.where(nonzero, denominator, 1), 0.0)
