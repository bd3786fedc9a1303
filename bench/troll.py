"""Cost of TROLL: the projection solver alone, the loss, and the full pipeline next to `clip`.

    python bench/troll.py                          # solver + loss + full pipeline (Qwen2.5 head)
    python bench/troll.py --skip-full              # solver and loss only (seconds)
    python bench/troll.py --time-tokens 8192 --repeats 5   # on an accelerator

Three tables, all forward + backward:
1. solver: `kl_projection` alone on [tokens, 2K + 2] float32 slot arrays built by
   `sparse_support` from LLM-like top-K (one step of drift between the policies);
2. loss: on precomputed log-probs (the loss batch), `troll` (support + projection + loss) vs
   `clip`, gradients with respect to every differentiable input;
3. full: hidden states and LM head -> chunked log-probs (`token_logprobs`) -> loss, gradients
   with respect to hidden states and head. `clip` needs only the sampled token's log-prob;
   `troll` rides on the same chunked pass extended with the current top-K and the log-probs at
   the rollout's top-K ids; `extraction+clip` is that extended pass (its top-K and gathered
   outputs given cotangents, so that they are not dead code) with the clip loss, so troll vs
   extraction+clip is what the support, projection and regression term add.

Memory comes from XLA's buffer assignment of each step compiled for `--tokens` tokens
(arguments + outputs + temporaries - aliased). Time is the fastest of `--repeats` runs after a
warm-up, the variants of a table timed in turn, round by round; the full pipeline is timed at
`--time-tokens` tokens (a CPU host is slow at V = 151,936).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from trlx_jax.objectives import policy_loss
from trlx_jax.objectives.config import get_default_config
from trlx_jax.ops.logprobs import token_logprobs
from trlx_jax.ops.projection import kl_projection
from trlx_jax.ops.sparse_support import sparse_support

MIB = 2**20


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--tokens", type=int, default=8192, help="B*T tokens (solver, loss, memory)")
    p.add_argument("--time-tokens", type=int, default=4096, help="B*T tokens, full-pipeline time")
    p.add_argument("--batch", type=int, default=8, help="sequences (T = tokens / batch)")
    p.add_argument("--vocab", type=int, default=151_936)
    p.add_argument("--dim", type=int, default=896)
    p.add_argument("--k", type=int, default=64, help="troll_k (slots S = 2K + 2)")
    p.add_argument("--eps", type=float, default=0.05)
    p.add_argument("--chunk-size", type=int, default=1024)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--skip-full", action="store_true", help="only the solver and loss tables")
    p.add_argument("--only-full", action="store_true", help="only the full-pipeline table")
    return p.parse_args()


def allocated_mib(compiled) -> float:
    """Arguments + outputs + temporaries - aliased of a compiled step, MiB."""
    s = compiled.memory_analysis()
    total = (
        s.argument_size_in_bytes
        + s.output_size_in_bytes
        + s.temp_size_in_bytes
        - s.alias_size_in_bytes
    )
    return total / MIB


def wall_times(steps: list[Callable], args: list[tuple], repeats: int) -> list[float]:
    """Fastest of `repeats` runs of each step (after a warm-up), round by round, seconds."""
    for step, a in zip(steps, args, strict=True):
        jax.block_until_ready(step(*a))
    best = [float("inf")] * len(steps)
    for _ in range(repeats):
        for i, (step, a) in enumerate(zip(steps, args, strict=True)):
            start = time.perf_counter()
            jax.block_until_ready(step(*a))
            best[i] = min(best[i], time.perf_counter() - start)
    return best


def loss_batch(a: argparse.Namespace, tokens: int, seed: int = 0) -> dict[str, jax.Array]:
    """A loss batch of LLM-like log-probs: a Zipf-shaped old policy and a drifted new one.

    The top-K come from a 4,096-token slice of the vocabulary (the mass outside it is below
    the floor), so that building the batch stays cheap at any V.
    """
    rng = np.random.default_rng(seed)
    length = tokens // a.batch
    shape = (a.batch, length)
    sub = 4096
    base = -1.1 * np.log(np.arange(1, sub + 1)) + rng.gumbel(size=(*shape, sub)) * 1.5
    old = jax.nn.log_softmax(jnp.asarray(base, jnp.float32), axis=-1)
    new = jax.nn.log_softmax(old + jnp.asarray(rng.normal(0, 0.7, (*shape, sub)), jnp.float32))
    sampled = jax.random.categorical(jax.random.key(seed), new).astype(jnp.int32)
    topk_logp, topk_ids = jax.lax.top_k(new, a.k)
    old_topk_logp, old_topk_ids = jax.lax.top_k(old, a.k)
    at = lambda x, i: jnp.take_along_axis(x, i[..., None], axis=-1)[..., 0]
    return {
        "logp": at(new, sampled),
        "old_logp": at(old, sampled),
        "advantages": jnp.asarray(rng.normal(size=a.batch), jnp.float32),
        "response_mask": jnp.ones(shape, bool),
        "sampled_ids": sampled,
        "topk_ids": topk_ids.astype(jnp.int32),
        "topk_logp": topk_logp,
        "old_topk_ids": old_topk_ids.astype(jnp.int32),
        "old_topk_logp": old_topk_logp,
        "logp_at_old_topk": jnp.take_along_axis(new, old_topk_ids, axis=-1),
        "vocab_size": jnp.int32(a.vocab),
    }


def loss_config(a: argparse.Namespace):
    cfg = get_default_config()
    cfg.troll_k, cfg.troll_eps = a.k, a.eps
    return cfg


def solver_table(a: argparse.Namespace) -> None:
    batch = loss_batch(a, a.tokens)
    support = sparse_support(
        batch["topk_ids"],
        batch["topk_logp"],
        batch["old_topk_ids"],
        batch["old_topk_logp"],
        batch["sampled_ids"],
        batch["logp"],
        batch["old_logp"],
        a.vocab,
        k=a.k,
    )
    slots = [x.reshape(-1, x.shape[-1]) for x in support[:3]]
    g = jax.random.normal(jax.random.key(1), slots[0].shape)

    @jax.jit
    def forward(a_, b_, valid):
        logp, info = kl_projection(a_, b_, valid, a.eps)
        return logp, info

    @jax.jit
    def forward_backward(a_, b_, valid):
        out, vjp = jax.vjp(lambda x: kl_projection(x, b_, valid, a.eps), a_)
        return out, vjp((g, jax.tree.map(jnp.zeros_like, out[1])))[0]

    steps = [forward.lower(*slots).compile(), forward_backward.lower(*slots).compile()]
    seconds = wall_times(steps, [slots] * 2, a.repeats)
    _, info = forward(*slots)
    tokens = slots[0].shape[0]
    print(
        f"\n1. solver alone: {tokens} tokens x S = {slots[0].shape[1]} slots, float32, "
        f"eps={a.eps}; projected {float(info.active.mean()):.1%} of the tokens, mean eta "
        f"{float(jnp.where(info.active, info.eta, 0).sum() / info.active.sum()):.2f}, "
        f"max violation {float(info.violation.max()):.1e}"
    )
    print("| pass | time ms | ns / token | memory MiB |")
    print("|---|---|---|---|")
    for name, step, sec in zip(("forward", "forward+backward"), steps, seconds, strict=True):
        print(
            f"| {name} | {sec * 1e3:.1f} | {sec / tokens * 1e9:,.0f} | {allocated_mib(step):,.0f} |"
        )


def loss_table(a: argparse.Namespace) -> None:
    batch = loss_batch(a, a.tokens)
    cfg = loss_config(a)
    diff = ("logp", "topk_logp", "logp_at_old_topk")

    def step(name: str):
        def objective(x, rest):
            s, d, _ = policy_loss(name)({**rest, **x}, cfg)
            return s / d

        return jax.jit(jax.value_and_grad(objective))

    x = {k: batch[k] for k in diff}
    rest = {k: v for k, v in batch.items() if k not in diff}
    names = ("clip", "troll")
    steps = [step(n).lower(x, rest).compile() for n in names]
    seconds = wall_times(steps, [(x, rest)] * 2, a.repeats)
    print(f"\n2. loss on precomputed log-probs: {a.tokens} tokens, K={a.k}, forward+backward")
    print("| loss | time ms | memory MiB | time / clip |")
    print("|---|---|---|---|")
    for name, compiled, sec in zip(names, steps, seconds, strict=True):
        print(
            f"| {name} | {sec * 1e3:.1f} | {allocated_mib(compiled):,.0f} | "
            f"{sec / seconds[0]:.2f}x |"
        )


def full_table(a: argparse.Namespace) -> None:
    cfg = loss_config(a)

    def make(loss: str, extended: bool):
        def objective(hidden, head, batch):
            out = token_logprobs(
                hidden,
                head,
                batch["sampled_ids"],
                top_k=a.k if extended else 0,
                gather_ids=batch["old_topk_ids"] if extended else None,
                entropy=False,
                chunk_size=a.chunk_size,
            )
            fresh = {"logp": out.logp}
            if extended:
                fresh.update(
                    topk_ids=out.topk_ids,
                    topk_logp=out.topk_logp,
                    logp_at_old_topk=out.gathered_logp,
                )
            s, d, _ = policy_loss(loss)({**batch, **fresh}, cfg)
            if extended and loss == "clip":
                # The extended outputs must receive cotangents, as under troll; otherwise XLA
                # drops their extraction (top-K, gathers and their backward) as dead code.
                s = s + 1e-3 * (jnp.sum(out.topk_logp) + jnp.sum(out.gathered_logp))
            return s / d

        return jax.jit(jax.value_and_grad(objective, argnums=(0, 1)))

    def inputs(tokens: int):
        keys = jax.random.split(jax.random.key(2), 2)
        hidden = jax.random.normal(keys[0], (a.batch, tokens // a.batch, a.dim))
        head = jax.random.normal(keys[1], (a.dim, a.vocab)) * a.dim**-0.5
        return hidden, head, loss_batch(a, tokens)

    variants = (
        ("clip", "clip", False),
        ("extraction+clip", "clip", True),
        ("troll", "troll", True),
    )
    memory = [
        allocated_mib(make(loss, ext).lower(*inputs(a.tokens)).compile())
        for _, loss, ext in variants
    ]
    args = inputs(a.time_tokens)
    steps = [make(loss, ext).lower(*args).compile() for _, loss, ext in variants]
    seconds = wall_times(steps, [args] * len(steps), a.repeats)
    print(
        f"\n3. full pipeline: V={a.vocab}, D={a.dim}, K={a.k}, chunk {a.chunk_size}, "
        f"float32, forward+backward (grads wrt hidden and head); memory at {a.tokens} tokens, "
        f"time at {a.time_tokens} tokens"
    )
    print("| variant | time s | memory MiB | time / extraction+clip | time / clip |")
    print("|---|---|---|---|---|")
    for (name, _, _), mib, sec in zip(variants, memory, seconds, strict=True):
        print(
            f"| {name} | {sec:.2f} | {mib:,.0f} | {sec / seconds[1]:.3f}x | "
            f"{sec / seconds[0]:.3f}x |"
        )


def main() -> None:
    a = parse_args()
    device = jax.devices()[0]
    print(f"device: {device.device_kind} ({device.platform}), jax {jax.__version__}")
    if not a.only_full:
        solver_table(a)
        loss_table(a)
    if not a.skip_full:
        full_table(a)


if __name__ == "__main__":
    main()
