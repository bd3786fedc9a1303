"""Sampling with ZeRO-3 (fsdp-sharded) weights vs weights gathered once per rollout.

Compiles the sampler (`generate`'s program) on a simulated mesh for both `rollout.weights`
layouts and reads the compiled HLO: the all-gathers inside the decode loops (executed at every
decoded token) and the bytes they move per token, against the all-gathers outside them. With
--time it also times both on the simulated devices (CPU threads: an indication, not a
measurement of a real interconnect). Prints a markdown table:

    XLA_FLAGS=--xla_force_host_platform_device_count=8 python bench/sampler_layout.py
    XLA_FLAGS=--xla_force_host_platform_device_count=8 python bench/sampler_layout.py \\
        --mesh 1 8 1 --time
"""

from __future__ import annotations

import argparse
import re
import time

import jax
import numpy as np
from flax import nnx

from trlx_jax.models import ModelConfig, init_model, make_mesh, shard_model
from trlx_jax.models.sharding import SAMPLING_RULES, state_shardings
from trlx_jax.rollout import SamplingParams
from trlx_jax.rollout.sampler import _generate, _Static, bucket_length

_DTYPE_BYTES = {"f32": 4, "bf16": 2, "f16": 2, "s32": 4, "u32": 4, "pred": 1, "s8": 1, "u8": 1}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--mesh", type=int, nargs=3, default=[1, 8, 1], help="data fsdp tensor")
    p.add_argument("--batch", type=int, default=16, help="rows (prompts x samples)")
    p.add_argument("--prompt_len", type=int, default=128)
    p.add_argument("--new_tokens", type=int, default=384)
    p.add_argument("--hidden", type=int, default=512)
    p.add_argument("--layers", type=int, default=8)
    p.add_argument("--heads", type=int, default=8)
    p.add_argument("--kv_heads", type=int, default=8)
    p.add_argument("--head_dim", type=int, default=64)
    p.add_argument("--intermediate", type=int, default=1536)
    p.add_argument("--vocab", type=int, default=32768)
    p.add_argument("--record_top_k", type=int, default=64)
    p.add_argument("--time", action="store_true", help="also time both layouts")
    return p.parse_args(argv)


def _computations(hlo: str) -> dict[str, str]:
    """Computation name -> its text, from a compiled module's HLO text."""
    out, name, lines = {}, None, []
    for line in hlo.splitlines():
        header = re.match(r"^(?:ENTRY )?%?([\w.\-]+) .*\{$", line)
        if header and not line.startswith(" "):
            name, lines = header.group(1), []
        elif line.startswith("}") and name is not None:
            out[name] = "\n".join(lines)
            name = None
        elif name is not None:
            lines.append(line)
    return out


def _gather_bytes(line: str) -> int:
    """Bytes of an all-gather's result, from its HLO line."""
    shape = re.search(r"=\s*(\w+)\[([\d,]*)\]", line)
    if not shape:
        return 0
    dims = [int(d) for d in shape.group(2).split(",") if d]
    return _DTYPE_BYTES.get(shape.group(1), 4) * int(np.prod(dims or [1]))


def _cost(comps: dict[str, str], name: str, memo: dict[str, tuple[int, int]]) -> tuple[int, int]:
    """(all-gathers, bytes) executed by one run of computation `name`: nested loops count
    their known trip count times, other called computations once."""
    if name in memo:
        return memo[name]
    count = size = 0
    for line in comps.get(name, "").splitlines():
        if re.search(r"\ball-gather(-start)?\(", line):
            count, size = count + 1, size + _gather_bytes(line)
        body = re.search(r"body=%?([\w.\-]+)", line)
        if body:
            trip = re.search(r'known_trip_count":\{"n":"(\d+)"', line)
            c, b = _cost(comps, body.group(1), memo)
            n = int(trip.group(1)) if trip else 1
            count, size = count + n * c, size + n * b
            continue
        for callee in re.findall(r"(?:calls|to_apply)=%?([\w.\-]+)", line):
            c, b = _cost(comps, callee, memo)
            count, size = count + c, size + b
    memo[name] = (count, size)
    return count, size


def all_gathers(hlo: str) -> dict[str, int]:
    """All-gathers (count, bytes) of one decode step (a body of the decode loops: the loops
    without a static trip count, whose copies are identical) and of the rest of the program."""
    comps = _computations(hlo)
    memo: dict[str, tuple[int, int]] = {}
    decode = [m.group(1) for line in hlo.splitlines()
              if " while(" in line and "known_trip_count" not in line
              and (m := re.search(r"body=%?([\w.\-]+)", line))]
    step = _cost(comps, decode[0], memo) if decode else (0, 0)
    entry = re.search(r"^ENTRY %?([\w.\-]+)", hlo, re.M).group(1)
    total = _cost(comps, entry, memo)
    return {"step_count": step[0], "step_bytes": step[1],
            "other_count": total[0] - len(decode) * step[0],
            "other_bytes": total[1] - len(decode) * step[1]}


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    mesh = make_mesh(tuple(args.mesh))
    config = ModelConfig(model_type="qwen3", vocab_size=args.vocab, hidden_size=args.hidden,
                         intermediate_size=args.intermediate, num_layers=args.layers,
                         num_heads=args.heads, num_kv_heads=args.kv_heads,
                         head_dim=args.head_dim, qk_norm=True, tie_word_embeddings=True)
    model = init_model(config, seed=0)
    shard_model(model, mesh)
    graphdef, training = nnx.split(model)
    gathered = jax.device_put(training, state_shardings(training, mesh, SAMPLING_RULES))
    sampling = SamplingParams(temperature=1.0, record_top_k=args.record_top_k)
    static = _Static(graphdef, config, sampling, bucket_length(args.new_tokens), (), 0, 1)
    p = bucket_length(args.prompt_len)
    rng = np.random.default_rng(0)
    tokens = rng.integers(1, args.vocab, (args.batch, p)).astype(np.int32)
    mask = np.ones((args.batch, p), bool)
    key = jax.random.key(0)
    new = np.int32(args.new_tokens)
    param_mb = sum(x.nbytes for x in jax.tree.leaves(training)) / 2**20
    print(f"mesh {dict(mesh.shape)}, {param_mb:.0f} MiB of float32 weights, batch {args.batch}, "
          f"prompt {p}, {args.new_tokens} new tokens, devices: {jax.devices()[0].device_kind}")
    print("\n| weights | all-gathers per decoded token | MiB gathered per decoded token "
          "| all-gathers outside the decode loop | MiB of weights per device |" +
          (" seconds per rollout |" if args.time else ""))
    print("|---|---|---|---|---|" + ("---|" if args.time else ""))
    for name, state in (("training (ZeRO-3)", training), ("gathered", gathered)):
        with jax.set_mesh(mesh):
            compiled = _generate.lower(static, state, tokens, mask, key, new).compile()
        g = all_gathers(compiled.as_text())
        per_device = sum(s.data.nbytes for x in jax.tree.leaves(state)
                         for s in x.addressable_shards[:1]) / 2**20
        row = (f"| {name} | {g['step_count']} | {g['step_bytes'] / 2**20:.2f} | "
               f"{g['other_count']} | {per_device:.1f} |")
        if args.time:
            with jax.set_mesh(mesh):
                jax.block_until_ready(compiled(state, tokens, mask, key, new))
                start = time.perf_counter()
                jax.block_until_ready(compiled(state, tokens, mask, key, new))
            row += f" {time.perf_counter() - start:.2f} |"
        print(row)


if __name__ == "__main__":
    main()
