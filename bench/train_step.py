"""The whole RL train step (`make_rl_train_step`) for several policy losses; prints a table.

    PYTHONPATH=. python bench/train_step.py                 # reference config, all six losses
    PYTHONPATH=. python bench/train_step.py --losses clip,troll --repeats 5

Reference config (the defaults): a random Qwen3-architecture model (qk-norm, untied head),
V = 32,768, hidden 512, 8 layers, 8 heads, 4 kv heads, head dim 64, MLP 1,536, float32;
16 sequences of 128 prompt + 384 response tokens per step; one epoch, one minibatch, one
micro-batch (`--minibatches`, `--microbatches`, `--epochs`); AdamW with global-norm clipping.

The step is the real one: forward of the policy, chunked log-probs (`--chunk_size`) with what
the loss needs, the loss, backward, optimizer update, state donated. Per loss the LogProbSpec
and the behaviour record are what a run of that loss uses: `troll` computes the current top-K
(top_k = troll_k = `--k`), `dppo_topk_*` gather the current log-probs at the behaviour top-K
ids, the others (`clip`, `dppo_binary_*`) neither, and their batch carries no top-K record.

The synthetic batch: random tokens, every position valid, N(0, 1) advantages per sequence; the
behaviour record (sampled-token log-prob and top-K ids / log-probs) is computed once from the
initial model with `policy_record`, then its sampled-token log-probs are moved by N(0,
`--logp_noise`^2) so that ratios are off 1 and the trust regions act.

Measured per loss:
- compile s: `step.lower(state, batch).compile()` (trace + XLA compile), timed once;
- s/step: median of `--repeats` steps of that executable after one untimed warm-up step, each
  call waited on with `jax.block_until_ready`; the losses are timed round-robin (every loss's
  rep 1, then every loss's rep 2, ...), so that drift of a shared host hits each of them;
- tokens/s: response tokens trained per step (N x T x epochs) / s/step;
- peak MiB: XLA's buffer assignment of the compiled step (`memory_analysis()`): arguments +
  outputs + temporaries - aliased (the donated state is counted once), plus the same four
  host-side sizes (0 unless XLA offloads to the host). XLA's own `peak_memory_in_bytes` is
  printed after the table where the backend fills it in (on CPU it leaves temporaries out).
"""

from __future__ import annotations

import argparse
import shlex
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx

from trlx_jax.models import ModelConfig, init_model, make_mesh
from trlx_jax.objectives.config import get_default_config
from trlx_jax.trainer.batch import LogProbSpec, PolicyRecord, TrainBatch
from trlx_jax.trainer.build import DPPO_TOPK_LOSSES, TROLL_LOSSES
from trlx_jax.trainer.phases import policy_record
from trlx_jax.trainer.state import create_state, make_optimizer
from trlx_jax.trainer.step import UpdateSchedule, make_rl_train_step

MIB = 2**20
LOSSES = "clip,dppo_binary_tv,dppo_binary_kl,dppo_topk_tv,dppo_topk_kl,troll"


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--vocab", type=int, default=32_768)
    p.add_argument("--hidden", type=int, default=512)
    p.add_argument("--layers", type=int, default=8)
    p.add_argument("--heads", type=int, default=8)
    p.add_argument("--kv_heads", type=int, default=4)
    p.add_argument("--head_dim", type=int, default=64)
    p.add_argument("--mlp", type=int, default=1536, help="MLP intermediate size")
    p.add_argument("--prompt_len", type=int, default=128)
    p.add_argument("--response_len", type=int, default=384)
    p.add_argument("--batch", type=int, default=16, help="sequences per step (N)")
    p.add_argument("--losses", default=LOSSES, help="comma-separated policy losses")
    p.add_argument("--k", type=int, default=64, help="top-K of troll / dppo_topk_* (troll_k)")
    p.add_argument("--repeats", type=int, default=3, help="timed steps per loss")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--minibatches", type=int, default=1)
    p.add_argument("--microbatches", type=int, default=1)
    p.add_argument("--chunk_size", type=int, default=1024, help="LogProbSpec.chunk_size")
    p.add_argument("--logp_noise", type=float, default=0.1,
                   help="std of the noise added to the behaviour log-probs")
    a = p.parse_args()
    a.losses = [name.strip() for name in a.losses.split(",") if name.strip()]
    if a.repeats < 1:
        p.error("--repeats must be >= 1")
    if a.batch % (a.minibatches * a.microbatches):
        p.error(f"--batch {a.batch} does not split into {a.minibatches} minibatches x "
                f"{a.microbatches} microbatches")
    return a


def model_config(a: argparse.Namespace) -> ModelConfig:
    return ModelConfig(
        model_type="qwen3", vocab_size=a.vocab, hidden_size=a.hidden, intermediate_size=a.mlp,
        num_layers=a.layers, num_heads=a.heads, num_kv_heads=a.kv_heads, head_dim=a.head_dim,
        qk_norm=True, tie_word_embeddings=False, rope_theta=1_000_000.0,
        max_position_embeddings=max(2048, a.prompt_len + a.response_len),
        dtype="float32", param_dtype="float32",
    )


def optimizer_config() -> ml_collections.ConfigDict:
    # A tiny lr keeps the policy near the behaviour record over the timed steps.
    return ml_collections.ConfigDict(dict(lr=1e-6, b1=0.9, b2=0.999, weight_decay=0.0,
                                          grad_clip=1.0, warmup_steps=0, schedule="constant"))


def logprob_spec(loss: str, a: argparse.Namespace, cfg: ml_collections.ConfigDict) -> LogProbSpec:
    """What the current policy's pass computes for `loss`, as `trainer.build.logprob_spec`."""
    if loss in TROLL_LOSSES:
        return LogProbSpec(1.0, top_k=a.k, gather_old_topk=bool(cfg.troll_new_logp_on_union),
                           chunk_size=a.chunk_size)
    if loss in DPPO_TOPK_LOSSES:
        return LogProbSpec(1.0, gather_old_topk=True, chunk_size=a.chunk_size)
    return LogProbSpec(1.0, chunk_size=a.chunk_size)


def synthetic_batch(a: argparse.Namespace, graphdef, params, mesh) -> TrainBatch:
    """Random tokens and advantages; the behaviour record of the initial model, its sampled-token
    log-probs perturbed."""
    keys = jax.random.split(jax.random.key(0), 3)
    n, length = a.batch, a.prompt_len + a.response_len
    tokens = jax.random.randint(keys[0], (n, length), 0, a.vocab, jnp.int32)
    batch = TrainBatch(
        tokens=tokens,
        attention_mask=jnp.ones((n, length), bool),
        response_mask=jnp.ones((n, a.response_len), bool),
        advantages=jax.random.normal(keys[1], (n,), jnp.float32),
        old=PolicyRecord(jnp.zeros((n, a.response_len), jnp.float32)),
    )
    spec = LogProbSpec(1.0, top_k=a.k, chunk_size=a.chunk_size)
    with jax.set_mesh(mesh):
        record = policy_record(graphdef, params, batch, spec)
    noise = a.logp_noise * jax.random.normal(keys[2], record.logp.shape)
    return batch._replace(old=record._replace(logp=record.logp + noise))


def memory_bytes(compiled) -> tuple[int, int]:
    """(arguments + outputs + temporaries - aliased, device and host; XLA's peak or 0)."""
    s = compiled.memory_analysis()
    total = 0
    for prefix in ("", "host_"):
        total += (
            getattr(s, f"{prefix}argument_size_in_bytes", 0)
            + getattr(s, f"{prefix}output_size_in_bytes", 0)
            + getattr(s, f"{prefix}temp_size_in_bytes", 0)
            - getattr(s, f"{prefix}alias_size_in_bytes", 0)
        )
    return total, int(getattr(s, "peak_memory_in_bytes", 0) or 0)


def main() -> None:
    a = parse_args()
    device = jax.devices()[0]
    graphdef, params = nnx.split(init_model(model_config(a), seed=0))
    mesh = make_mesh((1, 1, 1))
    cfg = get_default_config()
    cfg.troll_k = a.k
    full = synthetic_batch(a, graphdef, params, mesh)
    updates = UpdateSchedule(a.epochs, a.minibatches, a.microbatches)
    tx, schedule = make_optimizer(optimizer_config(), 1000)
    n_params = sum(x.size for x in jax.tree.leaves(params))
    tokens = a.batch * a.response_len * a.epochs
    print(f"device: {device.device_kind} ({device.platform}), jax {jax.__version__}")
    print(f"command: PYTHONPATH=. python {shlex.join(sys.argv)}")
    print(
        f"model: qwen3, {n_params / 1e6:.1f}M params, V={a.vocab}, hidden {a.hidden}, "
        f"{a.layers} layers, {a.heads} heads / {a.kv_heads} kv, head dim {a.head_dim}, "
        f"MLP {a.mlp}, float32; batch {a.batch} x ({a.prompt_len} prompt + {a.response_len} "
        f"response), {tokens} trained tokens/step; epochs {a.epochs}, minibatches "
        f"{a.minibatches}, microbatches {a.microbatches}; K={a.k}, chunk {a.chunk_size}; "
        f"median of {a.repeats} steps, round-robin",
        flush=True,
    )

    steps, states, batches, compile_s, memory = {}, {}, {}, {}, {}
    for loss in a.losses:
        spec = logprob_spec(loss, a, cfg)
        needs_topk = loss in TROLL_LOSSES + DPPO_TOPK_LOSSES
        batch = full if needs_topk else full._replace(old=PolicyRecord(full.old.logp))
        # The step donates its state: each loss gets its own, fed back from its last step.
        state, shardings = create_state(params, tx, jax.random.key(1), mesh)
        step = make_rl_train_step(
            graphdef=graphdef, tx=tx, schedule=schedule, loss_name=loss, loss_cfg=cfg,
            logprob_spec=spec, vocab_size=a.vocab, updates=updates, mesh=mesh,
            state_shardings=shardings, batch_example=batch,
        )
        with jax.set_mesh(mesh):
            start = time.perf_counter()
            steps[loss] = step.lower(state, batch).compile()
            compile_s[loss] = time.perf_counter() - start
            states[loss], _ = jax.block_until_ready(steps[loss](state, batch))  # warm-up
        batches[loss], memory[loss] = batch, memory_bytes(steps[loss])

    seconds: dict[str, list[float]] = {loss: [] for loss in a.losses}
    last: dict[str, dict] = {}
    with jax.set_mesh(mesh):
        for _ in range(a.repeats):
            for loss in a.losses:
                start = time.perf_counter()
                states[loss], last[loss] = jax.block_until_ready(
                    steps[loss](states[loss], batches[loss])
                )
                seconds[loss].append(time.perf_counter() - start)

    base = "clip" if "clip" in a.losses else a.losses[0]
    base_s = statistics.median(seconds[base])
    print(f"| loss | compile s | s/step | tokens/s | peak MiB | time vs {base} | "
          f"memory vs {base} |")
    print("|---|---|---|---|---|---|---|")
    for loss in a.losses:
        sec = statistics.median(seconds[loss])
        peak = memory[loss][0]
        print(
            f"| {loss} | {compile_s[loss]:.1f} | {sec:.3f} | {tokens / sec:,.0f} | "
            f"{peak / MIB:,.0f} | {sec / base_s:.2f}x | {peak / memory[base][0]:.2f}x |"
        )
    if any(m[1] for m in memory.values()):
        print("XLA peak_memory_in_bytes, MiB: " + ", ".join(
            f"{loss} {memory[loss][1] / MIB:,.0f}" for loss in a.losses))
    print("mean abs log-ratio to the behaviour record, last step before its update: " + ", ".join(
        f"{loss} {float(last[loss]['mismatch/abs_log_ratio_mean']):.3f}" for loss in a.losses))
    for loss in a.losses:
        if not jnp.isfinite(last[loss]["loss"]):
            print(f"warning: {loss} returned a non-finite loss")


if __name__ == "__main__":
    main()
