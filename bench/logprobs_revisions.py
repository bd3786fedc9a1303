"""`token_logprobs` (value + gradient) of this tree against an earlier git revision; a table.

    python bench/logprobs_revisions.py --rev 23edf70        # the train step's reference shapes

Both versions of `trlx_jax/ops/logprobs.py` (the revision's read with `git show`) run the same
jitted `value_and_grad` with respect to the hidden states and the LM head on random inputs:
B x T tokens, hidden D, vocabulary V, chunk 1,024, for three output sets: the sampled-token
log-prob and entropy (what clip uses), + the current top-K (troll), + the log-probs gathered at
K given ids (dppo_topk_*). Time: median of `--repeats` calls after a compiling one, all
variants timed round-robin; temp MiB: XLA's temporaries of the compiled program. Also prints
the largest gradient difference between the two versions (relative to the largest entry).
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import jax
import jax.numpy as jnp

from trlx_jax.ops import logprobs as current

MIB = 2**20
OUTPUT_SETS = {"logp, entropy": (0, False), "+ top-K": (1, False), "+ gather at K ids": (0, True)}


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--rev", required=True, help="git revision to compare against")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--length", type=int, default=384)
    p.add_argument("--dim", type=int, default=512)
    p.add_argument("--vocab", type=int, default=32_768)
    p.add_argument("--k", type=int, default=64)
    p.add_argument("--repeats", type=int, default=3)
    return p.parse_args()


def module_at(rev: str):
    """The revision's `trlx_jax/ops/logprobs.py`, imported as a module of its own."""
    shown = subprocess.run(["git", "show", f"{rev}:trlx_jax/ops/logprobs.py"],
                           capture_output=True, text=True)
    if shown.returncode:
        sys.exit(f"--rev {rev}: git cannot show trlx_jax/ops/logprobs.py at that revision "
                 f"({shown.stderr.strip()}); run from the repository with a commit that has it")
    source = shown.stdout
    path = Path(tempfile.mkdtemp()) / "logprobs_at_rev.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("logprobs_at_rev", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main() -> None:
    a = parse_args()
    keys = jax.random.split(jax.random.key(0), 4)
    hidden = jax.random.normal(keys[0], (a.batch, a.length, a.dim))
    head = 0.05 * jax.random.normal(keys[1], (a.dim, a.vocab))
    ids = jax.random.randint(keys[2], (a.batch, a.length), 0, a.vocab)
    gather_ids = jax.random.randint(keys[3], (a.batch, a.length, a.k), 0, a.vocab)

    def program(module, top_k: int, gather: bool):
        def objective(h, w):
            out = module.token_logprobs(h, w, ids, top_k=top_k,
                                        gather_ids=gather_ids if gather else None)
            total = out.logp.sum() + out.entropy.sum()
            if top_k:
                total = total + 0.3 * out.topk_logp.sum()
            if gather:
                total = total + 0.2 * out.gathered_logp.sum()
            return total
        return jax.jit(jax.value_and_grad(objective, argnums=(0, 1)))

    versions = {a.rev: module_at(a.rev), "this tree": current}
    calls, temp, results = {}, {}, {}
    for name, (top_k, gather) in OUTPUT_SETS.items():
        for version, module in versions.items():
            f = program(module, a.k * top_k, gather)
            temp[name, version] = f.lower(hidden, head).compile().memory_analysis()
            results[name, version] = jax.block_until_ready(f(hidden, head))
            calls[name, version] = f
    seconds = {key: [] for key in calls}
    for _ in range(a.repeats):
        for key, f in calls.items():
            start = time.perf_counter()
            jax.block_until_ready(f(hidden, head))
            seconds[key].append(time.perf_counter() - start)

    print(f"device: {jax.devices()[0].device_kind}, jax {jax.__version__}")
    print("command: python " + " ".join(sys.argv))
    print(f"{a.batch} x {a.length} tokens, D = {a.dim}, V = {a.vocab}, K = {a.k}, chunk 1024; "
          f"median of {a.repeats} calls")
    print(f"| outputs | {a.rev} s | {a.rev} temp MiB | this tree s | this tree temp MiB | "
          "grad difference |")
    print("|---|---|---|---|---|---|")
    for name in OUTPUT_SETS:
        row = []
        for version in versions:
            row += [f"{statistics.median(seconds[name, version]):.2f}",
                    f"{temp[name, version].temp_size_in_bytes / MIB:,.0f}"]
        before, after = results[name, a.rev][1], results[name, "this tree"][1]
        diff = max(float(jnp.abs(x - y).max() / jnp.abs(x).max())
                   for x, y in zip(before, after, strict=True))
        print(f"| {name} | " + " | ".join(row) + f" | {diff:.1e} |")


if __name__ == "__main__":
    main()
