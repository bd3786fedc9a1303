"""The whole RL train step (`make_rl_train_step`) for several policy losses; prints a table.

    PYTHONPATH=. python bench/train_step.py                 # reference config, all six losses
    PYTHONPATH=. python bench/train_step.py --losses clip,troll --repeats 5
    PYTHONPATH=. python bench/train_step.py --losses clip --rollout     # + the rollout phase
    PYTHONPATH=. python bench/train_step.py --losses '' --rollout       # the rollout phase only

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
  best s: the fastest of them; every step's time is printed after the table;
- time vs the first loss (`clip`): the median over rounds of the two steps' ratio in that
  round (paired, so that a slow spell of the host cancels out);
- tokens/s: response tokens trained per step (N x T x epochs) / s/step;
- peak MiB: XLA's buffer assignment of the compiled step (`memory_analysis()`): arguments +
  outputs + temporaries - aliased (the donated state is counted once), plus the same four
  host-side sizes (0 unless XLA offloads to the host). XLA's own `peak_memory_in_bytes` is
  printed after the table where the backend fills it in (on CPU it leaves temporaries out);
- model GFLOP/step: `trlx_jax.models.flops.train_flops` (MaxText: 6 x matmul params x tokens
  + causal attention, the LM head on the response positions) x epochs; GFLOP/s = that / s/step;
- % matmul: that rate over the FLOP/s of a jitted [N x (P + T), hidden] x [hidden, MLP] matmul
  in the compute dtype, timed in the same rounds on the same device (3 calls per round,
  median); % peak (GPUs in `PEAK_BF16` only): over the device's dense bf16 peak.

`--rollout` also times the RL rollout phase at the reference shapes (N prompts of P random
tokens, T new tokens sampled at temperature 1 over the full vocabulary, the top-K recorded, no
stop token): the trainer's phase (`trainer.phases.sample` + `check_rollout`, waited on, as the
loop's "rollout" timer) against `bench/sampler.py`'s call of `generate` alone on the same
weights and prompts, best of `--repeats` each after a compiling call.
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
import numpy as np
from flax import nnx
from sampler import timed

from trlx_jax.data import RLBatch
from trlx_jax.data.prompts import PromptBatch
from trlx_jax.models import ModelConfig, init_model, make_mesh
from trlx_jax.models.flops import train_flops
from trlx_jax.objectives.config import get_default_config
from trlx_jax.rollout import SamplingParams, generate
from trlx_jax.trainer import phases
from trlx_jax.trainer.batch import LogProbSpec, PolicyRecord, TrainBatch
from trlx_jax.trainer.build import DPPO_TOPK_LOSSES, TROLL_LOSSES, Components
from trlx_jax.trainer.phases import policy_record
from trlx_jax.trainer.state import create_state, make_optimizer
from trlx_jax.trainer.step import UpdateSchedule, make_rl_train_step

MIB = 2**20
LOSSES = "clip,dppo_binary_tv,dppo_binary_kl,dppo_topk_tv,dppo_topk_kl,troll"
# Dense (no sparsity) bf16 tensor-core peaks, FLOP/s, by a substring of `device_kind`; the
# first match wins (H100 PCIe before the SXM H100).
PEAK_BF16 = (("H200", 989e12), ("H100 PCIe", 756e12), ("H100", 989e12), ("A100", 312e12))


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
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"],
                   help="compute dtype (model.dtype)")
    p.add_argument("--param_dtype", default="float32", choices=["float32", "bfloat16"])
    p.add_argument("--attention", default="auto", help="model.attention")
    p.add_argument("--block_q", type=int, default=512, help="model.attention_block_q")
    p.add_argument("--block_kv", type=int, default=512, help="model.attention_block_kv")
    p.add_argument("--remat", default="none", help="model.remat")
    p.add_argument("--rollout", action="store_true",
                   help="also time the rollout phase against the sampler alone")
    a = p.parse_args()
    a.losses = [name.strip() for name in a.losses.split(",") if name.strip()]
    if a.repeats < 1:
        p.error("--repeats must be >= 1")
    if not a.losses and not a.rollout:
        p.error("nothing to measure: give --losses or --rollout")
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
        dtype=a.dtype, param_dtype=a.param_dtype, attention=a.attention,
        attention_block_q=a.block_q, attention_block_kv=a.block_kv, remat=a.remat,
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


def peak_flops(device: jax.Device) -> float | None:
    """The device's dense bf16 peak FLOP/s from `PEAK_BF16`, None if unknown (CPUs)."""
    if device.platform != "gpu":
        return None
    return next((peak for name, peak in PEAK_BF16 if name in device.device_kind), None)


def matmul_call(a: argparse.Namespace):
    """(a jitted call of an [N x (P + T), hidden] x [hidden, MLP] matmul, its FLOPs)."""
    m, k, n = a.batch * (a.prompt_len + a.response_len), a.hidden, a.mlp
    keys = jax.random.split(jax.random.key(3))
    x = jax.random.normal(keys[0], (m, k), a.dtype)
    w = jax.random.normal(keys[1], (k, n), a.dtype)
    matmul = jax.jit(jnp.matmul)
    jax.block_until_ready(matmul(x, w))  # compile
    return (lambda: jax.block_until_ready(matmul(x, w))), 2.0 * m * k * n


def rollout_comparison(a: argparse.Namespace, graphdef, params, mesh, config: ModelConfig) -> None:
    """Times the trainer's rollout phase and `generate` alone (bench/sampler.py) at N x P + T."""
    rng = np.random.default_rng(0)
    tokens = rng.integers(1, a.vocab, (a.batch, a.prompt_len)).astype(np.int32)
    mask = np.ones_like(tokens, bool)
    sampling = SamplingParams(temperature=1.0, record_top_k=a.k)
    spec = LogProbSpec(1.0, top_k=a.k, chunk_size=a.chunk_size)
    # The rollout phase reads the mesh, the model, the sampling parameters, stop and pad ids;
    # no stop token, so that both sides generate exactly T tokens per row.
    parts = Components(
        mesh=mesh, tokenizer=None, model_config=config, graphdef=graphdef, params=params,
        task=None, train_source=None, test_source=None, formatter=None, reward=None,
        accuracy_reward="", sampling=sampling, stop_ids=(), pad_id=0,
    )
    prompts = PromptBatch(tokens, mask, np.tile(np.arange(a.prompt_len, dtype=np.int32),
                                               (a.batch, 1)),
                          np.full(a.batch, a.prompt_len, np.int32), [""] * a.batch)
    batch = RLBatch(prompts, [""] * a.batch, {}, np.ones(a.batch, bool), np.arange(a.batch))

    def phase_call():
        rollout = phases.sample(parts, params, batch, jax.random.key(0), num_samples=1,
                                max_new_tokens=a.response_len)
        phases.check_rollout(rollout, spec, needs_record=True)
        return jax.block_until_ready(rollout.tokens)

    def sampler_call():  # bench/sampler.py's `ours_call`, at temperature 1 with the record
        return generate((graphdef, params), tokens, mask, key=jax.random.key(0),
                        max_new_tokens=a.response_len, sampling=sampling).tokens

    sampler_first, sampler_s = timed(sampler_call, a.repeats)
    phase_first, phase_s = timed(phase_call, a.repeats)
    generated = a.batch * a.response_len
    print(f"rollout: {a.batch} prompts x {a.prompt_len} tokens, {a.response_len} new tokens "
          f"each, temperature 1, top-{a.k} record; best of {a.repeats} calls after one "
          "compiling call")
    print("| path | first call s | s/batch | generated tok/s | vs sampler alone |")
    print("|---|---|---|---|---|")
    for name, first, sec in (("sampler alone (bench/sampler.py call)", sampler_first, sampler_s),
                             ("trainer rollout phase", phase_first, phase_s)):
        print(f"| {name} | {first:.1f} | {sec:.3f} | {generated / sec:,.0f} | "
              f"{sampler_s / sec:.1%} |")


def main() -> None:
    a = parse_args()
    device = jax.devices()[0]
    config = model_config(a)
    graphdef, params = nnx.split(init_model(config, seed=0))
    mesh = make_mesh((1, 1, 1))
    n_params = sum(x.size for x in jax.tree.leaves(params))
    tokens = a.batch * a.response_len * a.epochs
    flops = a.epochs * train_flops(config, a.batch, a.prompt_len + a.response_len,
                                   head_tokens=a.response_len)
    print(f"device: {device.device_kind} ({device.platform}), jax {jax.__version__}")
    print(f"command: PYTHONPATH=. python {shlex.join(sys.argv)}")
    print(
        f"model: qwen3, {n_params / 1e6:.1f}M params, V={a.vocab}, hidden {a.hidden}, "
        f"{a.layers} layers, {a.heads} heads / {a.kv_heads} kv, head dim {a.head_dim}, "
        f"MLP {a.mlp}, {a.dtype} compute / {a.param_dtype} params, attention {a.attention}, "
        f"remat {a.remat}; batch {a.batch} x ({a.prompt_len} prompt + {a.response_len} "
        f"response), {tokens} trained tokens/step; epochs {a.epochs}, minibatches "
        f"{a.minibatches}, microbatches {a.microbatches}; K={a.k}, chunk {a.chunk_size}; "
        f"median of {a.repeats} steps, round-robin; model FLOPs {flops / 1e9:,.1f} G/step",
        flush=True,
    )
    if a.losses:
        step_table(a, device, graphdef, params, mesh, tokens, flops)
    if a.rollout:
        rollout_comparison(a, graphdef, params, mesh, config)


def step_table(a: argparse.Namespace, device, graphdef, params, mesh, tokens: int,
               flops: float) -> None:
    """Compiles and times the step of every loss in --losses; prints the table."""
    cfg = get_default_config()
    cfg.troll_k = a.k
    full = synthetic_batch(a, graphdef, params, mesh)
    updates = UpdateSchedule(a.epochs, a.minibatches, a.microbatches)
    tx, schedule = make_optimizer(optimizer_config(), 1000)
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

    matmul, matmul_flops = matmul_call(a)
    seconds: dict[str, list[float]] = {loss: [] for loss in a.losses}
    matmul_s: list[float] = []
    last: dict[str, dict] = {}
    with jax.set_mesh(mesh):
        for _ in range(a.repeats):
            for loss in a.losses:
                start = time.perf_counter()
                states[loss], last[loss] = jax.block_until_ready(
                    steps[loss](states[loss], batches[loss])
                )
                seconds[loss].append(time.perf_counter() - start)
            for _ in range(3):
                start = time.perf_counter()
                matmul()
                matmul_s.append(time.perf_counter() - start)

    matmul_rate = matmul_flops / statistics.median(matmul_s)
    peak = peak_flops(device)
    base = "clip" if "clip" in a.losses else a.losses[0]
    print(f"| loss | compile s | s/step | best s | tokens/s | peak MiB | time vs {base} | "
          f"memory vs {base} | GFLOP/s | % matmul | % peak |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for loss in a.losses:
        sec = statistics.median(seconds[loss])
        # Paired by round: a slow spell of the shared host slows both steps of that round.
        ratio = statistics.median(
            s / b for s, b in zip(seconds[loss], seconds[base], strict=True))
        peak_mib = memory[loss][0]
        rate = flops / sec
        print(
            f"| {loss} | {compile_s[loss]:.1f} | {sec:.3f} | {min(seconds[loss]):.3f} | "
            f"{tokens / sec:,.0f} | {peak_mib / MIB:,.0f} | {ratio:.3f}x | "
            f"{peak_mib / memory[base][0]:.3f}x | "
            f"{rate / 1e9:,.1f} | {rate / matmul_rate:.1%} | "
            f"{'-' if peak is None else f'{rate / peak:.1%}'} |"
        )
    print(f"matmul [{a.batch * (a.prompt_len + a.response_len)} x {a.hidden}] x [{a.hidden} x "
          f"{a.mlp}] {a.dtype}: {matmul_rate / 1e9:,.1f} GFLOP/s (median of {len(matmul_s)})"
          + ("" if peak is None else f"; device bf16 peak {peak / 1e12:,.0f} TFLOP/s"))
    if any(m[1] for m in memory.values()):
        print("XLA peak_memory_in_bytes, MiB: " + ", ".join(
            f"{loss} {memory[loss][1] / MIB:,.0f}" for loss in a.losses))
    print("s/step per round: " + "; ".join(
        f"{loss} " + " ".join(f"{x:.2f}" for x in seconds[loss]) for loss in a.losses))
    print("mean abs log-ratio to the behaviour record, last step before its update: " + ", ".join(
        f"{loss} {float(last[loss]['mismatch/abs_log_ratio_mean']):.3f}" for loss in a.losses))
    for loss in a.losses:
        if not jnp.isfinite(last[loss]["loss"]):
            print(f"warning: {loss} returned a non-finite loss")


if __name__ == "__main__":
    main()
