"""Sampler throughput: trlx_jax's KV-cache `generate` vs a cache-free JAX loop vs HF PyTorch.

All three decode greedily by default (no stop token, so every row generates exactly
--new_tokens) from the same random weights of a small Qwen3-architecture model. With
--temperature > 0 ours and PyTorch sample (full vocabulary, no top-k/top-p; the cache-free
column is skipped) and --record_top_k makes ours also record the top-K log-probs, as an RL
rollout does. Prints a markdown table:

    python bench/sampler.py                         # CPU defaults
    python bench/sampler.py --batch_sizes 8 32 --new_tokens 256 --skip_torch
    python bench/sampler.py --batch_sizes 32 --temperature 1 --record_top_k 64

Figures: compile time (first call minus a steady call), prefill time, decode tokens/s =
batch * new_tokens / (steady call - prefill), best of --repeats.
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np

from trlx_jax.models import init_cache, load_hf, positions_from_mask
from trlx_jax.models.transformer import forward
from trlx_jax.rollout import SamplingParams, generate


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batch_sizes", type=int, nargs="+", default=[1, 8, 32])
    p.add_argument("--prompt_len", type=int, default=64)
    p.add_argument("--new_tokens", type=int, default=256)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--heads", type=int, default=8)
    p.add_argument("--kv_heads", type=int, default=2)
    p.add_argument("--head_dim", type=int, default=32)
    p.add_argument("--intermediate", type=int, default=768)
    p.add_argument("--vocab", type=int, default=32768)
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    p.add_argument("--record_top_k", type=int, default=0, help="top-K recorded per token (ours)")
    p.add_argument("--skip_torch", action="store_true", help="skip the HF PyTorch column")
    p.add_argument("--skip_cache_free", action="store_true", help="skip the cache-free column")
    return p.parse_args(argv)


def build_checkpoint(args: argparse.Namespace, path: str):
    """Saves a random HF Qwen3 model to `path` and returns it (PyTorch, eval mode)."""
    import torch
    from transformers import AutoModelForCausalLM, Qwen3Config

    torch.manual_seed(0)
    config = Qwen3Config(
        vocab_size=args.vocab, hidden_size=args.hidden, intermediate_size=args.intermediate,
        num_hidden_layers=args.layers, num_attention_heads=args.heads,
        num_key_value_heads=args.kv_heads, head_dim=args.head_dim, tie_word_embeddings=True,
        max_position_embeddings=4096,
    )
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32).eval()
    model.save_pretrained(path)
    return model


def timed(fn, repeats: int) -> tuple[float, float]:
    """(first call seconds, best of `repeats` later calls), blocking on results."""
    t0 = time.perf_counter()
    jax.block_until_ready(fn())
    first = time.perf_counter() - t0
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn())
        best = min(best, time.perf_counter() - t0)
    return first, best


@functools.partial(jax.jit, static_argnums=(0, 4))
def _prefill(graphdef, state, tokens, mask, total_len):
    cache = init_cache(nnx_config(graphdef, state), tokens.shape[0], total_len)
    hidden, cache = forward(graphdef, state, tokens, positions_from_mask(mask), mask, cache)
    return hidden[:, -1], cache


def nnx_config(graphdef, state):
    from flax import nnx

    return nnx.merge(graphdef, state).config


@functools.partial(jax.jit, static_argnums=(0, 4))
def _cache_free_greedy(graphdef, state, tokens, mask, new_tokens):
    """Greedy decoding that re-runs the full forward over a fixed [B, P + new] buffer per step."""
    from flax import nnx

    b, p = tokens.shape
    buf = jnp.concatenate([tokens, jnp.zeros((b, new_tokens), tokens.dtype)], 1)
    buf_mask = jnp.concatenate([mask, jnp.zeros((b, new_tokens), bool)], 1)
    model = nnx.merge(graphdef, state)

    def step(carry, t):
        buf, buf_mask = carry
        hidden, _ = model(buf, positions_from_mask(buf_mask), buf_mask)
        last = jax.lax.dynamic_index_in_dim(hidden, p - 1 + t, axis=1)
        nxt = jnp.argmax(model.logits(last)[:, 0], -1).astype(buf.dtype)
        buf = jax.lax.dynamic_update_index_in_dim(buf, nxt, p + t, axis=1)
        buf_mask = jax.lax.dynamic_update_index_in_dim(
            buf_mask, jnp.ones((b,), bool), p + t, axis=1)
        return (buf, buf_mask), None

    (buf, _), _ = jax.lax.scan(step, (buf, buf_mask), jnp.arange(new_tokens))
    return buf[:, p:]


def bench_torch(
    hf_model, tokens: np.ndarray, new_tokens: int, repeats: int, temperature: float
) -> float:
    """Best wall seconds of HF generate of exactly `new_tokens` tokens (greedy when T = 0)."""
    import torch

    ids = torch.tensor(tokens, dtype=torch.long)
    # top_k=0 / top_p=1 switch off the generation config's default truncation (top_k=50).
    mode = ({"do_sample": False} if temperature == 0 else
            {"do_sample": True, "temperature": temperature, "top_k": 0, "top_p": 1.0})
    best = float("inf")
    with torch.no_grad():
        hf_model.generate(input_ids=ids, max_new_tokens=2, pad_token_id=0, **mode)
        for _ in range(repeats):
            t0 = time.perf_counter()
            hf_model.generate(input_ids=ids, attention_mask=torch.ones_like(ids),
                              max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                              pad_token_id=0, **mode)
            best = min(best, time.perf_counter() - t0)
    return best


def bench_row(args: argparse.Namespace, graphdef, state, hf_model, tokens: np.ndarray) -> list[str]:
    """One table row for the prompt batch `tokens` [B, P]."""
    batch = tokens.shape[0]
    mask = np.ones_like(tokens, bool)
    sampling = SamplingParams(temperature=args.temperature, record_top_k=args.record_top_k)

    def ours_call():
        return generate((graphdef, state), tokens, mask, key=jax.random.key(0),
                        max_new_tokens=args.new_tokens, sampling=sampling).tokens

    def prefill_call():
        total = args.prompt_len + args.new_tokens
        return _prefill(graphdef, state, jnp.asarray(tokens), jnp.asarray(mask), total)

    def cache_free_call():
        return _cache_free_greedy(graphdef, state, jnp.asarray(tokens), jnp.asarray(mask),
                                  args.new_tokens)

    first, steady = timed(ours_call, args.repeats)
    _, prefill = timed(prefill_call, args.repeats)
    generated = batch * args.new_tokens
    ours = generated / max(steady - prefill, 1e-9)
    row = [str(batch), f"{first - steady:.1f}", f"{prefill * 1e3:.1f}", f"{ours:,.0f}"]
    if args.skip_cache_free or args.temperature > 0:
        row += ["-", "-"]
    else:
        _, free = timed(cache_free_call, 1)
        row += [f"{generated / free:,.0f}", f"{ours / (generated / free):.1f}x"]
    if args.skip_torch or args.dtype != "float32":
        row += ["-", "-"]
    else:
        torch_s = bench_torch(hf_model, tokens, args.new_tokens, args.repeats, args.temperature)
        row += [f"{generated / torch_s:,.0f}", f"{torch_s / steady:.1f}x"]
    return row


def main(argv: list[str]) -> None:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory() as path:
        hf_model = build_checkpoint(args, path)
        model, config = load_hf(path, dtype=args.dtype, param_dtype=args.dtype)
    from flax import nnx

    graphdef, state = nnx.split(model)
    n_params = sum(x.size for x in jax.tree.leaves(state))
    device = jax.devices()[0]
    print(f"device: {device.device_kind} ({jax.default_backend()}), jax {jax.__version__}, "
          f"params {n_params / 1e6:.1f}M, {args.dtype}, prompt {args.prompt_len}, "
          f"new tokens {args.new_tokens}, "
          + ("greedy" if args.temperature == 0 else f"sampling T={args.temperature}")
          + f", record_top_k {args.record_top_k}")
    if not args.skip_torch:
        import torch

        print(f"torch {torch.__version__}, threads {torch.get_num_threads()}")
    print()
    print("| batch | compile s | prefill ms | decode tok/s (KV cache) | cache-free tok/s | "
          "speedup vs cache-free | HF PyTorch tok/s | speedup vs PyTorch |")
    print("|---|---|---|---|---|---|---|---|")
    rng = np.random.default_rng(0)
    for batch in args.batch_sizes:
        tokens = rng.integers(1, args.vocab, (batch, args.prompt_len)).astype(np.int32)
        print("| " + " | ".join(bench_row(args, graphdef, state, hf_model, tokens)) + " |",
              flush=True)
    print()
    print("speedup vs PyTorch compares whole generate calls (prefill included on both sides).")
    print("command: python " + " ".join([os.path.relpath(__file__)] + argv))


if __name__ == "__main__":
    main(sys.argv[1:])
