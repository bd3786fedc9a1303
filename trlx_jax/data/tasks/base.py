"""Shared machinery of task builders: array_record TFDS builders, seeded generation, decoding."""

from __future__ import annotations

import abc
import dataclasses
import functools
import hashlib
import inspect
import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

SPLITS = ("train", "test")
# Every task example carries these text fields; tasks add the metadata their reward needs.
TEXT_FIELDS = ("question", "answer", "solution")


class TaskBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """A TFDS builder that writes array_record files, readable without TensorFlow."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("file_format", "array_record")
        super().__init__(**kwargs)

    @tfds.core.utils.classproperty
    @classmethod
    def code_path(cls) -> epath.Path | None:
        """The builder's source file (tfds's own lookup needs `importlib_resources` on py>=3.9)."""
        try:
            return epath.Path(inspect.getfile(cls))
        except (TypeError, OSError):  # defined in a notebook or an interactive session
            return None

    def _info(self) -> tfds.core.DatasetInfo:
        features = {name: tfds.features.Text() for name in TEXT_FIELDS}
        features.update(self._extra_features())
        # Built directly: `dataset_info_from_configs` would look for metadata files on disk.
        return tfds.core.DatasetInfo(
            builder=self,
            description=(self.__doc__ or "").strip(),
            features=tfds.features.FeaturesDict(features),
        )

    def _extra_features(self) -> dict[str, Any]:
        """Task-specific metadata features (added to question/answer/solution)."""
        return {}


@dataclasses.dataclass(eq=False)
class SyntheticConfig(tfds.core.BuilderConfig):
    """Sizes and seed shared by every generated task."""

    num_train: int = 10_000
    num_test: int = 500
    seed: int = 0


class SyntheticBuilder(TaskBuilder, skip_registration=True):
    """A task generated from its config: splits are disjoint and fixed by the seed."""

    builder_config: SyntheticConfig

    @abc.abstractmethod
    def _sample(self, rng: np.random.Generator) -> dict[str, Any]:
        """Draws one random example; examples with equal questions count as duplicates."""

    @functools.cached_property
    def _examples(self) -> dict[str, list[dict[str, Any]]]:
        config = self.builder_config
        return generate_unique(
            self._sample, {"test": config.num_test, "train": config.num_train}, config.seed
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager) -> dict[str, Any]:
        return {split: self._generate_examples(split) for split in SPLITS}

    def _generate_examples(self, split: str) -> Iterator[tuple[int, dict[str, Any]]]:
        yield from enumerate(self._examples[split])


def generate_unique(
    sample: Callable[[np.random.Generator], dict[str, Any]],
    sizes: Mapping[str, int],
    seed: int,
    max_tries_per_example: int = 50,
) -> dict[str, list[dict[str, Any]]]:
    """Fills each split (in order) with examples whose questions appear in no other split."""
    rng = np.random.default_rng(seed)
    seen: set[str] = set()
    out: dict[str, list[dict[str, Any]]] = {}
    budget = max_tries_per_example * sum(sizes.values())
    for split, size in sizes.items():
        examples = out[split] = []
        while len(examples) < size:
            if budget == 0:
                raise ValueError(
                    f"could not draw {sum(sizes.values())} distinct examples: the task's space is "
                    "too small for the requested sizes; raise the difficulty or lower num_train"
                )
            budget -= 1
            example = sample(rng)
            if example["question"] not in seen:
                seen.add(example["question"])
                examples.append(example)
    return out


def config_with_overrides(
    builder_cls: type[tfds.core.DatasetBuilder], base: str | None, overrides: Mapping[str, Any]
) -> tfds.core.BuilderConfig:
    """A builder config: `base` (a predefined name) with `overrides`, named after its contents."""
    configs = builder_cls.builder_configs
    name = base or builder_cls.BUILDER_CONFIGS[0].name
    if name not in configs:
        raise ValueError(f"unknown config {name!r} of {builder_cls.name}; valid: {sorted(configs)}")
    config = configs[name]
    if not overrides:
        return config
    fields = {f.name for f in dataclasses.fields(config)} - {"name", "description"}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise ValueError(
            f"unknown option(s) {unknown} for {builder_cls.name}; valid: {sorted(fields)}"
        )
    candidate = dataclasses.replace(config, **overrides)
    for predefined in configs.values():
        if _params(predefined) == _params(candidate):
            return predefined
    # The directory name encodes the parameters, so prepared data never mixes two settings.
    digest = hashlib.sha1(json.dumps(_params(candidate), sort_keys=True).encode()).hexdigest()
    return dataclasses.replace(candidate, name=f"custom_{digest[:12]}", description=str(overrides))


def _params(config: tfds.core.BuilderConfig) -> dict[str, Any]:
    skip = {"name", "description", "release_notes", "supported_versions", "tags", "version"}
    return {
        f.name: getattr(config, f.name) for f in dataclasses.fields(config) if f.name not in skip
    }


def to_python(value: Any) -> Any:
    """Decoded TFDS values as plain Python: bytes -> str, numpy scalars/arrays -> int/float/list."""
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if isinstance(value, np.ndarray):
        return [to_python(v) for v in value.tolist()] if value.ndim else value.item()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, list | tuple):
        return [to_python(v) for v in value]
    if isinstance(value, dict):
        return {k: to_python(v) for k, v in value.items()}
    return value


class TaskSource(Sequence[dict[str, Any]]):
    """Random access to one split of a prepared task, as plain-Python example dicts."""

    def __init__(self, data_source: Sequence[Any], name: str, split: str) -> None:
        self._source = data_source
        self.name = name
        self.split = split

    def __len__(self) -> int:
        return len(self._source)

    def __getitem__(self, index: int | slice) -> Any:
        if isinstance(index, slice):
            return self.__getitems__(range(len(self))[index])
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {self.name}/{self.split}")
        return to_python(self._source[index % len(self)])

    def __getitems__(self, indices: Sequence[int]) -> list[dict[str, Any]]:
        """Reads several examples in one call (array_record batches the reads)."""
        return [to_python(x) for x in self._source.__getitems__([int(i) for i in indices])]

    def __repr__(self) -> str:
        return f"TaskSource({self.name!r}, split={self.split!r}, n={len(self)})"
