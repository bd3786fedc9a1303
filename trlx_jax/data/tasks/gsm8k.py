"""GSM8K from local jsonl files in the public format (`question`, `answer` ending `#### N`)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import tensorflow_datasets as tfds

from trlx_jax.data.answers import gsm8k_gold
from trlx_jax.data.tasks.base import SPLITS, TaskBuilder

# Calculator annotations such as `<<48/2=24>>` are tool-use markup, not reasoning text.
_CALCULATOR = re.compile(r"<<[^>]*>>")


def clean_solution(answer: str) -> str:
    """A GSM8K worked solution without calculator annotations, ending in `#### N`."""
    reasoning, _, _ = answer.rpartition("####")
    return f"{_CALCULATOR.sub('', reasoning).rstrip()}\n#### {gsm8k_gold(answer)}"


def read_gsm8k(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    """Yields (key, example) from one GSM8K jsonl file, with the gold number extracted."""
    with open(path, encoding="utf-8") as f:
        for line_number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                example = {
                    "question": row["question"].strip(),
                    "answer": gsm8k_gold(row["answer"]),
                    "solution": clean_solution(row["answer"]),
                }
            except (json.JSONDecodeError, KeyError, ValueError, AttributeError) as e:
                raise ValueError(f"{path}:{line_number}: not a GSM8K record: {e}") from e
            yield f"{line_number:08d}", example


class Gsm8k(TaskBuilder, skip_registration=True):
    """Grade-school math word problems; the answer is the gold number after `####`."""

    name = "gsm8k"
    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release."}
    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        "Put train.jsonl and test.jsonl from github.com/openai/grade-school-math "
        "(grade_school_math/data/) in the manual directory, e.g. "
        "prepare_task('gsm8k', manual_dir='/path/to/data')."
    )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager) -> dict[str, Any]:
        manual_dir = Path(dl_manager.manual_dir)
        paths = {split: manual_dir / f"{split}.jsonl" for split in SPLITS}
        missing = [str(p) for p in paths.values() if not p.is_file()]
        if missing:
            raise FileNotFoundError(
                f"GSM8K files not found: {', '.join(missing)}. {self.MANUAL_DOWNLOAD_INSTRUCTIONS}"
            )
        return {split: self._generate_examples(path) for split, path in paths.items()}

    def _generate_examples(self, path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
        yield from read_gsm8k(path)
