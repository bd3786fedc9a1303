"""A run's policy as an HF model directory: `python -m trlx_jax.cli.export --run_dir=R --out=D`.

Writes config.json, safetensors, generation_config.json and the run's tokenizer, loadable by
`transformers.AutoModelForCausalLM.from_pretrained(D)` / `AutoTokenizer.from_pretrained(D)`.
The parameters are those of the latest checkpoint in R/checkpoints (`--step=N`: that one),
in their training dtype unless `--dtype=bfloat16`.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from collections.abc import Sequence
from typing import Any

import ml_collections

from trlx_jax.config import ConfigError

_GENERATION_CONFIG = "generation_config.json"


def checkpoint_directory(run_dir: str) -> str:
    """RUN_DIR/checkpoints; ConfigError when the run has none."""
    from trlx_jax.trainer.checkpoint import CHECKPOINT_DIR

    directory = os.path.join(run_dir, CHECKPOINT_DIR)
    if not os.path.isdir(directory):
        raise ConfigError(f"{run_dir} has no {CHECKPOINT_DIR}/ directory: train it first "
                          "(python -m trlx_jax.cli.train), or give the run directory it wrote")
    return directory


def restore_params(
    config: ml_collections.ConfigDict, run_dir: str, params: Any, mesh: Any,
    step: int | None = None,
) -> tuple[int, Any]:
    """(step, params) of the run's checkpoint `step` (None: the latest readable one), placed
    like `params` (the config's model, its shapes and shardings); ConfigError without one."""
    import jax

    from trlx_jax.trainer.checkpoint import Checkpointer
    from trlx_jax.trainer.state import create_state, make_optimizer

    directory = checkpoint_directory(run_dir)
    # The checkpoint holds the whole train state; its optimizer part gives the restore shapes.
    tx, _ = make_optimizer(config.optimizer, 1)
    state, shardings = create_state(params, tx, jax.random.key(0), mesh)
    checkpointer = Checkpointer(run_dir, keep=config.train.keep_checkpoints)
    try:
        steps = checkpointer.steps()
        if step is not None and step not in steps:
            raise ConfigError(f"{directory} has no checkpoint of step {step}; it has "
                              f"{steps or 'none'}")
        restored = checkpointer.restore_latest(state, shardings, only_step=step)
    finally:
        checkpointer.close()
    if restored is None:
        raise ConfigError(f"{directory} holds no readable checkpoint")
    found, state, _ = restored
    return found, state.params


def restore_policy(
    config: ml_collections.ConfigDict, run_dir: str, step: int | None = None
) -> tuple[int, Any, Any, Any]:
    """(step, params, model_config, tokenizer) of a run's checkpoint, without its task data."""
    import jax

    from trlx_jax.models import make_mesh
    from trlx_jax.trainer.build import build_model, build_tokenizer, resolve_mesh_shape

    checkpoint_directory(run_dir)
    mesh = make_mesh(resolve_mesh_shape(config.mesh.shape, jax.device_count()))
    tokenizer = build_tokenizer(config, run_dir)
    model_config, _, params = build_model(config, len(tokenizer), mesh)
    found, params = restore_params(config, run_dir, params, mesh, step)
    return found, params, model_config, tokenizer


def load_run_config(run_dir: str) -> ml_collections.ConfigDict:
    """The config a run directory was trained with (its config.json)."""
    from trlx_jax.config import CONFIG_FILE_NAME, load_saved_config

    if not os.path.isfile(os.path.join(run_dir, CONFIG_FILE_NAME)):
        raise ConfigError(f"{run_dir} has no {CONFIG_FILE_NAME}: it is not a run directory")
    return load_saved_config(run_dir)


def write_hf(params: Any, model_config: Any, tokenizer: Any, out: str, *,
             source: str = "", dtype: str | None = None) -> str:
    """Writes `params` as an HF directory `out` with the tokenizer and a generation config
    (the source model's, else eos/pad/bos from the tokenizer); `dtype` casts the weights."""
    import dataclasses

    import jax
    from transformers import GenerationConfig

    from trlx_jax.data.prompts import pad_id_of
    from trlx_jax.models import save_hf

    if dtype is not None and dtype != model_config.param_dtype:
        params = jax.tree.map(lambda x: x.astype(dtype), params)
        model_config = dataclasses.replace(model_config, param_dtype=dtype)
    save_hf(params, model_config, out)
    if jax.process_index() != 0:
        return out
    tokenizer.save_pretrained(out)
    source_generation = os.path.join(source, _GENERATION_CONFIG) if source else ""
    if source_generation and os.path.isfile(source_generation):
        shutil.copyfile(source_generation, os.path.join(out, _GENERATION_CONFIG))
    else:
        GenerationConfig(eos_token_id=tokenizer.eos_token_id, pad_token_id=pad_id_of(tokenizer),
                         bos_token_id=tokenizer.bos_token_id).save_pretrained(out)
    return out


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    """This command's options."""
    parser = argparse.ArgumentParser(
        prog="python -m trlx_jax.cli.export",
        description="Write a run's policy (a checkpoint) as an HF model directory.")
    parser.add_argument("--run_dir", required=True, help="the run directory (its config.json "
                        "and checkpoints/)")
    parser.add_argument("--out", required=True, help="the HF directory to write")
    parser.add_argument("--step", type=int, default=None, help="checkpoint step (default: the "
                        "latest)")
    parser.add_argument("--dtype", choices=("float32", "bfloat16"), default=None,
                        help="weight dtype (default: the training param dtype)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit code (2: no such run, checkpoint or a bad argument)."""
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        config = load_run_config(args.run_dir)
        step, params, model_config, tokenizer = restore_policy(config, args.run_dir,
                                                               args.step)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    write_hf(params, model_config, tokenizer, args.out, source=config.model.path,
             dtype=args.dtype)
    print(f"wrote the policy of {args.run_dir} at step {step} to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
