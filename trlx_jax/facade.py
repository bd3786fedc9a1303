"""`trlx_jax.train`: the trlx-style facade, a reward function and prompts in, a policy out.

    import trlx_jax
    trainer = trlx_jax.train(reward_fn=fn, prompts=["..."], train__steps=100, sft__steps=0)
    trainer.generate(["..."]); trainer.evaluate(); trainer.save_hf("policy/")

Overrides are keyword arguments whose double underscores stand for the dots of config keys
(`optimizer__lr=1e-6` sets `optimizer.lr`); an unknown key raises ConfigError naming the
closest valid keys, as `--config.KEY=VALUE` does on the command line.

`reward_fn(samples, prompts, outputs, **metadata) -> list[float]` and `metric_fn(samples,
prompts, outputs, **metadata) -> dict[str, list[float]]` are called with keyword arguments, as
trlx calls them (so `def reward_fn(samples, **kwargs)` works too). `prompts` are strings, or
dicts with a "prompt" text whose other fields reach both functions as lists in **metadata;
without prompts the config's task supplies them (and its fields: answer, question, ...).
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import ml_collections
import numpy as np

from trlx_jax.config import ConfigError, flat_keys, load_config, unknown_key_message

DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "configs" / "default.py"
# What a run directory's facade.json records: the data and functions the config does not name.
FACADE_FILE = "facade.json"

Prompt = str | Mapping[str, Any]


def resolve_config(
    config: ml_collections.ConfigDict | str | os.PathLike | None, overrides: Mapping[str, Any]
) -> ml_collections.ConfigDict:
    """The config (a ConfigDict, a file `path.py[:arg]`, or None for configs/default.py) with
    `overrides` (`section__key=value`) applied; a locked copy, the caller's left unchanged."""
    if config is None:
        if not DEFAULT_CONFIG.is_file():
            raise ConfigError(f"the default config {DEFAULT_CONFIG} is not there (trlx_jax was "
                              "installed without its configs/); pass config=PATH.py")
        config = str(DEFAULT_CONFIG)
    if isinstance(config, str | os.PathLike):
        resolved = load_config(str(config))
    elif isinstance(config, ml_collections.ConfigDict):
        resolved = copy.deepcopy(config)
        resolved.lock()
    else:
        raise ConfigError(f"config must be a ConfigDict, a config file path or None, got "
                          f"{type(config).__name__}")
    keys = set(flat_keys(resolved))
    for name, value in overrides.items():
        key = name.replace("__", ".")
        if key not in keys:
            raise ConfigError(unknown_key_message(resolved, key).replace(
                "Run with --help_config to list all keys.",
                "Write overrides as section__key=value (optimizer__lr=1e-6)."))
        *parents, leaf = key.split(".")
        node = resolved
        for part in parents:
            node = node[part]
        try:
            node[leaf] = value
        except (TypeError, ValueError) as e:
            raise ConfigError(f"override {name}={value!r}: {e}") from None
    return resolved


def prompt_examples(prompts: Sequence[Prompt], argument: str) -> list[dict[str, Any]]:
    """Prompts as task examples: {"question": text, **metadata}, the same fields in every row."""
    if isinstance(prompts, str | Mapping) or not isinstance(prompts, Sequence):
        raise ValueError(f"{argument} must be a list of strings or dicts, got "
                         f"{type(prompts).__name__}")
    if not prompts:
        raise ValueError(f"{argument} is empty")
    examples = []
    for i, prompt in enumerate(prompts):
        if isinstance(prompt, str):
            examples.append({"question": prompt})
        elif isinstance(prompt, Mapping) and isinstance(prompt.get("prompt"), str):
            metadata = {k: v for k, v in prompt.items() if k != "prompt"}
            if "question" in metadata:
                raise ValueError(f"{argument}[{i}] has a 'question' field; it is the name of the "
                                 "prompt text in **metadata, rename it")
            examples.append({"question": prompt["prompt"], **metadata})
        else:
            raise ValueError(f"{argument}[{i}] must be a string or a dict with a 'prompt' string, "
                             f"got {prompt!r:.200}")
    fields = set(examples[0])
    for i, example in enumerate(examples):
        if set(example) != fields:
            raise ValueError(
                f"{argument}[{i}] has the fields {sorted(set(example) - {'question'})}, "
                f"{argument}[0] {sorted(fields - {'question'})}: every prompt needs the same "
                "metadata fields (they reach reward_fn as lists)"
            )
    return examples


def _function_name(fn: Callable, default: str) -> str:
    name = getattr(fn, "__name__", "")
    return name if name.isidentifier() else default


class KeywordReward:
    """A trlx reward function as this package's reward function: called by keyword."""

    def __init__(self, fn: Callable[..., Sequence[float]]) -> None:
        if not callable(fn):
            raise TypeError(f"reward_fn must be callable, got {type(fn).__name__}")
        self.fn = fn
        self.__name__ = _function_name(fn, "reward_fn")

    def __call__(self, samples, prompts, outputs, /, **metadata) -> Sequence[float]:
        return self.fn(samples=samples, prompts=prompts, outputs=outputs, **metadata)


class KeywordMetrics:
    """A trlx metric function, checked: -> {name: float64 [N]} per evaluated completion."""

    def __init__(self, fn: Callable[..., Mapping[str, Sequence[float]]]) -> None:
        if not callable(fn):
            raise TypeError(f"metric_fn must be callable, got {type(fn).__name__}")
        self.fn = fn
        self.__name__ = _function_name(fn, "metric_fn")

    def __call__(self, samples, prompts, outputs, /, **metadata) -> dict[str, np.ndarray]:
        result = self.fn(samples=samples, prompts=prompts, outputs=outputs, **metadata)
        if not isinstance(result, Mapping):
            raise ValueError(f"metric_fn must return a dict of name -> list of floats, got "
                             f"{type(result).__name__}")
        out = {}
        for name, values in result.items():
            array = np.asarray(values, dtype=np.float64)
            if array.shape != (len(outputs),) or not np.isfinite(array).all():
                raise ValueError(f"metric_fn returned {name!r} = {values!r:.200}: expected "
                                 f"{len(outputs)} finite floats, one per completion")
            out[str(name)] = array
        return out


def _fingerprint(examples: list | None, eval_examples: list | None, reward_fn: Callable | None,
                 metric_fn: Callable | None) -> dict[str, str | None]:
    def digest(rows: list | None) -> str | None:
        if rows is None:
            return None
        text = json.dumps(rows, sort_keys=True, default=repr)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    return {"prompts": digest(examples), "eval_prompts": digest(eval_examples),
            "reward_fn": None if reward_fn is None else _function_name(reward_fn, "reward_fn"),
            "metric_fn": None if metric_fn is None else _function_name(metric_fn, "metric_fn")}


def check_fingerprint(run_dir: str, fingerprint: dict[str, str | None]) -> None:
    """Refuses to resume a run directory that was trained on other prompts or functions
    (a directory without facade.json holds a run of the config alone); records them."""
    from trlx_jax.config import CONFIG_FILE_NAME

    path = os.path.join(run_dir, FACADE_FILE)
    if os.path.isfile(os.path.join(run_dir, CONFIG_FILE_NAME)):
        saved = dict.fromkeys(fingerprint)
        if os.path.isfile(path):
            with open(path) as f:
                saved = json.load(f)
        differing = sorted(k for k in fingerprint if saved.get(k) != fingerprint[k])
        if differing:
            raise ConfigError(
                f"{run_dir} holds a run with other {', '.join(differing)} (see {path}); "
                "pass run_dir=<another directory> to start a new run"
            )
    import jax

    if jax.process_index() == 0:
        os.makedirs(run_dir, exist_ok=True)
        with open(path, "w") as f:
            json.dump(fingerprint, f, indent=2)


def _user_parts(parts, config: ml_collections.ConfigDict, examples, eval_examples, reward_fn,
                metric_fn):
    """The run's components with the user's prompts, reward and metric function swapped in."""
    from trlx_jax.data import combine_rewards

    changes: dict[str, Any] = {}
    if metric_fn is not None:
        changes["metric_fn"] = KeywordMetrics(metric_fn)
    if reward_fn is not None:
        reward = KeywordReward(reward_fn)
        changes["reward"] = combine_rewards([(reward, 1.0)])
        if examples is not None:
            # User prompts carry no gold answer: "accuracy" is the mean reward of reward_fn.
            changes["accuracy_reward"] = reward.__name__
    if examples is not None:
        changes["formatter"] = prompt_formatter(parts.tokenizer, config.data)
        changes["train_source"] = examples
        changes["test_source"] = eval_examples if eval_examples is not None else examples
    return dataclasses.replace(parts, **changes)


def prompt_formatter(tokenizer: Any, data: ml_collections.ConfigDict) -> Any:
    """The formatter of user prompts: used as written, wrapped in the chat template with
    data.use_chat_template, never with the task's instruction."""
    from trlx_jax.data import PromptConfig, PromptFormatter

    return PromptFormatter(tokenizer, PromptConfig(
        template="{question}", use_chat_template=data.use_chat_template,
        max_length=data.max_prompt_len, on_too_long=data.on_long_prompt))


def train(
    config: ml_collections.ConfigDict | str | os.PathLike | None = None,
    reward_fn: Callable[..., Sequence[float]] | None = None,
    prompts: Sequence[Prompt] | None = None,
    eval_prompts: Sequence[Prompt] | None = None,
    metric_fn: Callable[..., Mapping[str, Sequence[float]]] | None = None,
    **overrides: Any,
) -> TrainedPolicy:
    """Runs the config's experiment (warm-up, RL, evaluations) on `prompts` with `reward_fn`
    (each defaulting to the config's task and rewards); -> the trained policy.

    `eval_prompts` default to `prompts`. `config` is a ConfigDict, `path.py[:arg]` or None
    (configs/default.py); `overrides` are `section__key=value`. Prompts and functions are
    recorded in RUN_DIR/facade.json, and a run directory of other ones is refused.
    """
    if eval_prompts is not None and prompts is None:
        raise ValueError("eval_prompts needs prompts (without prompts the config's task "
                         "supplies both)")
    if prompts is not None and reward_fn is None:
        raise ValueError("prompts need a reward_fn: the config's rewards read task fields "
                         "(answer, ...) that plain prompts do not have")
    resolved = resolve_config(config, overrides)
    examples = None if prompts is None else prompt_examples(prompts, "prompts")
    eval_examples = None if eval_prompts is None else prompt_examples(eval_prompts,
                                                                      "eval_prompts")
    for fn, name in ((reward_fn, "reward_fn"), (metric_fn, "metric_fn")):
        if fn is not None and not callable(fn):
            raise TypeError(f"{name} must be callable, got {type(fn).__name__}")
    check_fingerprint(resolved.run_dir, _fingerprint(examples, eval_examples, reward_fn,
                                                     metric_fn))
    from trlx_jax.trainer.build import build
    from trlx_jax.trainer.loop import Trainer

    task_parts = build(resolved, resolved.run_dir)
    parts = _user_parts(task_parts, resolved, examples, eval_examples, reward_fn, metric_fn)
    trainer = Trainer(resolved, parts=parts, warmup_parts=task_parts)
    summary = trainer.run()
    return TrainedPolicy(trainer, summary)


class TrainedPolicy:
    """What `train` returns: the trained parameters with their run, to sample, score and save."""

    def __init__(self, trainer: Any, summary: dict[str, Any]) -> None:
        self.trainer = trainer
        self.summary = summary
        self.config: ml_collections.ConfigDict = trainer.config
        self.run_dir: str = trainer.run_dir
        self.parts = trainer.parts
        self.params = trainer.state.params

    @property
    def tokenizer(self) -> Any:
        """The run's HF tokenizer."""
        return self.parts.tokenizer

    def generate(self, texts: Sequence[str], *, max_new_tokens: int | None = None,
                 num_samples: int = 1, seed: int = 0, **sampling: Any) -> list[str]:
        """Completions of `texts` (formatted as `prompts` are), num_samples per text in a row;
        greedy unless `sampling` (SamplingParams fields: temperature, top_k, top_p) says
        otherwise; max_new_tokens defaults to rollout.max_new_tokens."""
        import jax

        from trlx_jax.data import RLBatch
        from trlx_jax.rollout import SamplingParams
        from trlx_jax.trainer import phases

        if isinstance(texts, str):
            raise ValueError("generate takes a list of strings; wrap a single text in a list")
        fields = {f.name for f in dataclasses.fields(SamplingParams)} - {"record_top_k"}
        unknown = sorted(set(sampling) - fields)
        if unknown:
            raise ValueError(f"unknown sampling option(s) {unknown}; valid: {sorted(fields)}")
        params = SamplingParams(**{"temperature": 0.0, **sampling})
        formatter = prompt_formatter(self.tokenizer, self.config.data)
        batch, _ = formatter.batch(list(texts))
        n = len(texts)
        rows = RLBatch(batch, list(texts), {}, np.ones(n, bool), np.arange(n))
        rollout = phases.sample(self.parts, self.params, rows, jax.random.key(seed),
                                num_samples=num_samples,
                                max_new_tokens=max_new_tokens or self.config.rollout.max_new_tokens,
                                sampling=params)
        return phases.decode(self.tokenizer, rollout)

    def evaluate(self) -> dict[str, float]:
        """Greedy accuracy (pass@k with train.eval_pass_k, metric_fn's means) of the trained
        policy on the first train.eval_examples evaluation prompts."""
        from trlx_jax.trainer import phases

        batch = phases.eval_batch(self.parts, self.config.train.eval_examples)
        metrics, _ = self.trainer.evaluate(self.params, batch, self.config.train.steps)
        return metrics

    def save_hf(self, path: str | os.PathLike) -> str:
        """Writes the policy as an HF directory (config.json, safetensors, the tokenizer)."""
        from trlx_jax.cli.export import write_hf

        return write_hf(self.params, self.parts.model_config, self.tokenizer, str(path),
                        source=self.config.model.path)
