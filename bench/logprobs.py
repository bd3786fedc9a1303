"""Peak memory and time of naive vs chunked log-probs, forward + backward; prints a table.

    python bench/logprobs.py                       # Qwen2.5: V=151,936, D=896, 8,192 tokens
    python bench/logprobs.py --time-tokens 8192 --repeats 5   # on an accelerator

Memory comes from XLA's buffer assignment of the step compiled for `--tokens` tokens
(`compiled.memory_analysis()`): arguments + outputs + temporaries - aliased, the bytes the
executable allocates (the CPU backend's own `peak_memory_in_bytes` leaves temporaries out).
Time is the fastest of `--repeats` runs after one warm-up (variants timed in turn, round by
round), measured at `--time-tokens` tokens: the naive step at 8,192 tokens needs ~20 GiB,
more than a small CPU host can spare.
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp

from trlx_jax.ops.logprobs import token_logprobs

MIB = 2**20


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--tokens", type=int, default=8192, help="B*T tokens for the memory figures")
    p.add_argument("--time-tokens", type=int, default=4096, help="B*T tokens for the timings")
    p.add_argument("--batch", type=int, default=8, help="sequences (T = tokens / batch)")
    p.add_argument("--vocab", type=int, default=151_936)
    p.add_argument("--dim", type=int, default=896)
    p.add_argument("--gather-k", type=int, default=20, help="log-probs gathered at given ids")
    p.add_argument("--top-k", type=int, default=0, help="own top-K of the current policy")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    p.add_argument("--chunk-sizes", default="256,512,1024,2048")
    p.add_argument("--repeats", type=int, default=3)
    return p.parse_args()


def make_step(chunk_size: int | None, top_k: int):
    """Jitted (hidden, head, ids, gather_ids, weights) -> (scalar, grads wrt hidden and head)."""

    def objective(hidden, head, ids, gather_ids, weights):
        out = token_logprobs(
            hidden, head, ids, gather_ids=gather_ids, top_k=top_k, chunk_size=chunk_size
        )
        # Random weights give every output its own cotangent, as a real loss would.
        total = jnp.sum(weights[..., 0] * out.logp) + jnp.sum(weights[..., 1] * out.entropy)
        total += jnp.sum(weights[..., 2:3] * out.gathered_logp)
        if top_k:
            total += jnp.sum(weights[..., 3:4] * out.topk_logp)
        return total

    return jax.jit(jax.value_and_grad(objective, argnums=(0, 1)))


def allocated_bytes(compiled) -> tuple[int, int]:
    """(arguments + outputs + temporaries - aliased, temporaries) bytes of a compiled step."""
    stats = compiled.memory_analysis()
    total = (
        stats.argument_size_in_bytes
        + stats.output_size_in_bytes
        + stats.temp_size_in_bytes
        - stats.alias_size_in_bytes
    )
    return total, stats.temp_size_in_bytes


def inputs(a: argparse.Namespace, tokens: int) -> tuple[jax.Array, ...]:
    """Random (hidden, head, ids, gather_ids, weights) for `tokens` tokens."""
    dtype = jnp.dtype(a.dtype)
    length = tokens // a.batch
    keys = jax.random.split(jax.random.key(0), 5)
    return (
        jax.random.normal(keys[0], (a.batch, length, a.dim), dtype),
        (jax.random.normal(keys[1], (a.dim, a.vocab)) * a.dim**-0.5).astype(dtype),
        jax.random.randint(keys[2], (a.batch, length), 0, a.vocab, jnp.int32),
        jax.random.randint(keys[3], (a.batch, length, a.gather_k), 0, a.vocab, jnp.int32),
        jax.random.normal(keys[4], (a.batch, length, 4)),
    )


def wall_times(steps: list, args, repeats: int) -> list[float]:
    """Fastest of `repeats` runs of each step after one warm-up each, in seconds.

    Rounds go over all steps in turn, so a slow phase of a shared host hits every variant.
    """
    for step in steps:
        jax.block_until_ready(step(*args))
    best = [float("inf")] * len(steps)
    for _ in range(repeats):
        for i, step in enumerate(steps):
            start = time.perf_counter()
            jax.block_until_ready(step(*args))
            best[i] = min(best[i], time.perf_counter() - start)
    return best


def main() -> None:
    a = parse_args()
    shapes = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), inputs(a, a.tokens))
    timing_args = inputs(a, a.time_tokens)
    variants = [("naive", None)] + [("chunked", int(c)) for c in a.chunk_sizes.split(",")]
    steps = [make_step(chunk, a.top_k) for _, chunk in variants]
    memory = [allocated_bytes(step.lower(*shapes).compile()) for step in steps]
    seconds = wall_times([s.lower(*timing_args).compile() for s in steps], timing_args, a.repeats)
    rows = [
        (name, chunk, peak, temp, t)
        for (name, chunk), (peak, temp), t in zip(variants, memory, seconds, strict=True)
    ]
    device = jax.devices()[0]
    print(f"device: {device.device_kind} ({device.platform}), jax {jax.__version__}")
    print(
        f"V={a.vocab}, D={a.dim}, dtype={a.dtype}, gather_k={a.gather_k}, top_k={a.top_k}, "
        "forward+backward (grads wrt hidden and head); "
        f"memory at {a.tokens} tokens, time at {a.time_tokens} tokens"
    )
    naive_peak, naive_time = rows[0][2], rows[0][4]
    print("| variant | chunk | peak MiB | temp MiB | time s | peak / naive | time / naive |")
    print("|---|---|---|---|---|---|---|")
    for name, chunk, peak, temp, seconds in rows:
        print(
            f"| {name} | {chunk or '-'} | {peak / MIB:,.0f} | {temp / MIB:,.0f} | {seconds:.2f}"
            f" | {peak / naive_peak:.1%} | {seconds / naive_time:.2f}x |"
        )


if __name__ == "__main__":
    main()
