"""Peak memory of the RL train step against sequence length, per attention kernel; a table.

    PYTHONPATH=. python bench/attention_memory.py                       # 1k, 2k, 4k, 8k
    PYTHONPATH=. python bench/attention_memory.py --seq_lens 1024 2048 --kernels dense blockwise \
        --remat none full

Nothing runs: each step (`make_rl_train_step`, clip loss, AdamW, chunked log-probs) is lowered
on abstract batches of `--batch` rows of `--prompt_len` prompt + (L - prompt_len) response
tokens and compiled, and the figure is XLA's buffer assignment of that executable
(`memory_analysis()`: arguments + outputs + temporaries - aliased, as `bench/train_step.py`).
The model is small so that compiles stay quick: a random Qwen3-architecture decoder, float32.

`--time` instead times the attention op alone, forward + backward (the gradient of a random
projection of its output w.r.t. q, k, v), for `--batch` rows of each length with the model's
heads, every key valid, per kernel: median of 3 calls after a compiling call. This is what
`model.attention="auto"` was chosen from on the CPU (docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import dataclasses
import shlex
import statistics
import sys
import time

import jax
import jax.numpy as jnp
from flax import nnx
from train_step import MIB, memory_bytes, optimizer_config

from trlx_jax.models import ModelConfig, init_model, make_mesh
from trlx_jax.models import attention as attn
from trlx_jax.objectives.config import get_default_config
from trlx_jax.trainer.batch import LogProbSpec, PolicyRecord, TrainBatch
from trlx_jax.trainer.state import create_state, make_optimizer
from trlx_jax.trainer.step import UpdateSchedule, make_rl_train_step


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--seq_lens", type=int, nargs="+", default=[1024, 2048, 4096, 8192])
    p.add_argument("--kernels", nargs="+", default=["dense", "blockwise"],
                   help="model.attention values (dense, blockwise, ...)")
    p.add_argument("--remat", nargs="+", default=["none"], help="model.remat policies")
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--prompt_len", type=int, default=128)
    p.add_argument("--vocab", type=int, default=1024)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--kv_heads", type=int, default=2)
    p.add_argument("--head_dim", type=int, default=64)
    p.add_argument("--mlp", type=int, default=768)
    p.add_argument("--block_q", type=int, default=512)
    p.add_argument("--block_kv", type=int, default=512)
    p.add_argument("--chunk_size", type=int, default=1024, help="LogProbSpec.chunk_size")
    p.add_argument("--time", action="store_true", help="time the attention op alone instead")
    a = p.parse_args()
    if not a.time and min(a.seq_lens) <= a.prompt_len:
        p.error(f"every --seq_lens must exceed --prompt_len {a.prompt_len}")
    return a


def abstract_batch(n: int, length: int, response: int) -> TrainBatch:
    """Shapes and dtypes of a clip-loss batch (no top-K record): all a compile needs."""
    s = jax.ShapeDtypeStruct
    return TrainBatch(
        tokens=s((n, length), jnp.int32), attention_mask=s((n, length), jnp.bool_),
        response_mask=s((n, response), jnp.bool_), advantages=s((n,), jnp.float32),
        old=PolicyRecord(s((n, response), jnp.float32)),
    )


def step_memory(a: argparse.Namespace, config: ModelConfig, length: int) -> tuple[int, float]:
    """(peak bytes, compile seconds) of the train step at sequence `length`."""
    graphdef, params = nnx.split(init_model(config, seed=0))
    mesh = make_mesh((1, 1, 1))
    tx, schedule = make_optimizer(optimizer_config(), 1000)
    state, shardings = create_state(params, tx, jax.random.key(1), mesh)
    batch = abstract_batch(a.batch, length, length - a.prompt_len)
    step = make_rl_train_step(
        graphdef=graphdef, tx=tx, schedule=schedule, loss_name="clip",
        loss_cfg=get_default_config(), logprob_spec=LogProbSpec(1.0, chunk_size=a.chunk_size),
        vocab_size=a.vocab, updates=UpdateSchedule(1, 1, 1), mesh=mesh,
        state_shardings=shardings, batch_example=batch,
    )
    start = time.perf_counter()
    with jax.set_mesh(mesh):
        compiled = step.lower(state, batch).compile()
    return memory_bytes(compiled)[0], time.perf_counter() - start


def attention_seconds(a: argparse.Namespace, config: ModelConfig, length: int) -> float:
    """Median seconds of one forward + backward of the attention op at `length` tokens."""
    keys = jax.random.split(jax.random.key(0), 4)
    q = jax.random.normal(keys[0], (a.batch, length, a.heads, a.head_dim))
    k, v = (jax.random.normal(key, (a.batch, a.kv_heads, length, a.head_dim)) for key in keys[1:3])
    w = jax.random.normal(keys[3], q.shape)
    valid = jnp.ones((a.batch, length), bool)
    impl = attn.resolve(config, length, length, cached=False)
    mask = attn.AttentionMask(valid, 0, attn.dense_mask(valid, length) if impl == "dense"
                              else None)
    # Arrays as arguments, not closed-over constants (XLA would constant-fold them).
    grad = jax.jit(jax.grad(
        lambda q, k, v, w, mask: jnp.sum(attn.attend(q, k, v, mask, impl, config) * w),
        argnums=(0, 1, 2)))
    jax.block_until_ready(grad(q, k, v, w, mask))
    times = []
    for _ in range(3):
        start = time.perf_counter()
        jax.block_until_ready(grad(q, k, v, w, mask))
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    a = parse_args()
    device = jax.devices()[0]
    base = ModelConfig(
        model_type="qwen3", vocab_size=a.vocab, hidden_size=a.hidden, intermediate_size=a.mlp,
        num_layers=a.layers, num_heads=a.heads, num_kv_heads=a.kv_heads, head_dim=a.head_dim,
        qk_norm=True, max_position_embeddings=max(a.seq_lens),
        attention_block_q=a.block_q, attention_block_kv=a.block_kv,
    )
    print(f"device: {device.device_kind} ({device.platform}), jax {jax.__version__}")
    print(f"command: PYTHONPATH=. python {shlex.join(sys.argv)}")
    print(f"model: qwen3, V={a.vocab}, hidden {a.hidden}, {a.layers} layers, {a.heads} heads / "
          f"{a.kv_heads} kv, head dim {a.head_dim}, MLP {a.mlp}, float32; batch {a.batch} x L "
          f"tokens ({a.prompt_len} prompt); blocks {a.block_q} x {a.block_kv}; clip loss, AdamW",
          flush=True)
    if a.time:
        print("| L | " + " | ".join(f"{k} s (fwd + bwd)" for k in a.kernels) + " |")
        print("|---|" + "---|" * len(a.kernels))
        for length in a.seq_lens:
            cells = [f"{attention_seconds(a, dataclasses.replace(base, attention=k), length):.3f}"
                     for k in a.kernels]
            print(f"| {length:,} | " + " | ".join(cells) + " |", flush=True)
        return
    variants = [(k, r) for k in a.kernels for r in a.remat]
    names = [f"{k}, remat {r}" for k, r in variants]
    print("| L | " + " | ".join(f"{n} MiB | x prev" for n in names) + " | compile s |")
    print("|---|" + "---|---|" * len(variants) + "---|")
    previous: dict[int, int] = {}
    for length in a.seq_lens:
        cells, seconds = [], []
        for i, (kernel, remat) in enumerate(variants):
            config = dataclasses.replace(base, attention=kernel, remat=remat)
            peak, sec = step_memory(a, config, length)
            growth = f"{peak / previous[i]:.2f}x" if i in previous else "-"
            previous[i] = peak
            cells += [f"{peak / MIB:,.0f}", growth]
            seconds.append(f"{sec:.0f}")
        print(f"| {length:,} | " + " | ".join(cells) + f" | {' / '.join(seconds)} |", flush=True)


if __name__ == "__main__":
    main()
