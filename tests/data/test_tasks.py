"""Task builders: deterministic contents, disjoint splits, reuse of prepared files, GSM8K."""

import os

import pytest

from trlx_jax.data.expression import evaluate
from trlx_jax.data.rewards import countdown_score
from trlx_jax.data.tasks import TASKS, Arithmetic, Countdown, Gsm8k, load_task, prepare_task
from trlx_jax.data.tasks.base import TaskSource


def _all(source: TaskSource) -> list[dict]:
    return [source[i] for i in range(len(source))]


def _files(builder) -> dict[str, int]:
    return {p.name: os.stat(p).st_mtime_ns for p in builder.data_path.iterdir()}


def test_registry_lists_tasks():
    assert TASKS.names() == ["arithmetic", "countdown", "gsm8k"]
    with pytest.raises(KeyError, match="arithmetic"):
        TASKS.get("arithmetc")


def test_arithmetic_contents(arithmetic_train, data_dir, small):
    test = load_task("arithmetic", "test", data_dir=data_dir, **small)
    train, held_out = _all(arithmetic_train), _all(test)
    assert (len(train), len(held_out)) == (small["num_train"], small["num_test"])
    for example in train + held_out:
        assert set(example) == {"question", "answer", "solution"}
        assert int(example["answer"]) == evaluate(example["question"])
        assert all(c in "0123456789+-" for c in example["question"])
    questions = [e["question"] for e in train]
    assert len(set(questions)) == len(questions)
    assert not set(questions) & {e["question"] for e in held_out}


def test_task_source_indexing(arithmetic_train):
    assert arithmetic_train[1:3] == [arithmetic_train[1], arithmetic_train[2]]
    assert arithmetic_train[-1] == arithmetic_train[len(arithmetic_train) - 1]
    with pytest.raises(IndexError):
        arithmetic_train[len(arithmetic_train)]


def test_arithmetic_is_deterministic_from_the_seed(tmp_path, arithmetic_train, small):
    again = load_task("arithmetic", "train", data_dir=tmp_path / "a", **small)
    other_seed = load_task("arithmetic", "train", data_dir=tmp_path / "b", seed=1, **small)
    assert _all(again) == _all(arithmetic_train)
    assert _all(other_seed) != _all(arithmetic_train)


def test_arithmetic_options(tmp_path):
    source = load_task(
        "arithmetic",
        "test",
        data_dir=tmp_path,
        digits=3,
        operators="*",
        num_operands=3,
        num_train=20,
        num_test=10,
    )
    for example in _all(source):
        assert example["question"].count("*") == 2
        assert int(example["answer"]) == evaluate(example["question"])


def test_default_arithmetic_config_is_the_embedded_task(tmp_path):
    builder = prepare_task("arithmetic", data_dir=tmp_path)
    assert builder.builder_config.name == "default"
    assert builder.info.splits["train"].num_examples == 10_000
    assert builder.info.splits["test"].num_examples == 500
    assert builder.version == Arithmetic.VERSION


def test_second_load_reuses_files(tmp_path, monkeypatch, small):
    builder = prepare_task("arithmetic", data_dir=tmp_path, **small)
    before, contents = _files(builder), _all(load_task("arithmetic", data_dir=tmp_path, **small))

    def fail(self, split):
        raise AssertionError("examples were generated again")

    monkeypatch.setattr(Arithmetic, "_generate_examples", fail)
    again = prepare_task("arithmetic", data_dir=tmp_path, **small)
    assert _files(again) == before
    assert _all(load_task("arithmetic", data_dir=tmp_path, **small)) == contents


def test_overrides_are_validated_and_named_by_content(tmp_path, small):
    with pytest.raises(ValueError, match="unknown option"):
        prepare_task("arithmetic", data_dir=tmp_path, digts=3)
    with pytest.raises(ValueError, match="unknown config"):
        prepare_task("arithmetic", data_dir=tmp_path, config="hard")
    with pytest.raises(ValueError, match="operators"):
        prepare_task("arithmetic", data_dir=tmp_path, operators="^")
    custom = prepare_task("arithmetic", data_dir=tmp_path, **small)
    seeded = prepare_task("arithmetic", data_dir=tmp_path, seed=3, **small)
    assert custom.builder_config.name.startswith("custom_")
    assert custom.data_path != seeded.data_path
    # Overrides that equal a predefined config select that config.
    assert prepare_task("arithmetic", data_dir=tmp_path, digits=2).builder_config.name == "default"


def test_too_small_space_fails_clearly(tmp_path):
    with pytest.raises(ValueError, match="distinct examples"):
        prepare_task("arithmetic", data_dir=tmp_path, digits=1, operators="+", num_train=200)


def test_countdown_contents_verify(tmp_path):
    options = {"num_train": 60, "num_test": 20}
    train = _all(load_task("countdown", "train", data_dir=tmp_path, **options))
    test = _all(load_task("countdown", "test", data_dir=tmp_path, **options))
    assert (len(train), len(test)) == (60, 20)
    for example in train + test:
        assert len(example["numbers"]) == 3
        assert all(1 <= n <= 25 for n in example["numbers"])
        assert 1 <= example["target"] <= 100
        assert str(example["target"]) in example["question"]
        assert countdown_score(example["answer"], example["numbers"], example["target"]) == 1.0
    assert not {e["question"] for e in train} & {e["question"] for e in test}
    again = load_task("countdown", "train", data_dir=tmp_path / "again", **options)
    assert _all(again) == train
    assert Countdown.VERSION == prepare_task("countdown", data_dir=tmp_path, **options).version


def test_countdown_unsatisfiable_config(tmp_path):
    with pytest.raises(ValueError, match="no countdown puzzle"):
        prepare_task("countdown", data_dir=tmp_path, operators="+", max_target=2, num_test=1)


def test_task_specs_give_prompt_configs():
    config = TASKS.get("arithmetic").prompt_config(max_length=16)
    assert config.template.format(instruction=config.instruction, question="1+2") == "1+2="
    assert config.max_length == 16
    assert "####" in TASKS.get("gsm8k").prompt_config().instruction
    assert set(TASKS.get("countdown").rewards) == {"countdown"}


def test_gsm8k_from_manual_dir(data_dir, gsm8k_manual_dir, gsm8k_rows):
    gsm8k_train, gsm8k_test = gsm8k_rows
    train = _all(load_task("gsm8k", "train", data_dir=data_dir, manual_dir=gsm8k_manual_dir))
    test = _all(load_task("gsm8k", "test", data_dir=data_dir, manual_dir=gsm8k_manual_dir))
    assert len(train) == len(gsm8k_train) and len(test) == len(gsm8k_test)
    by_question = {e["question"]: e for e in train + test}
    assert by_question[gsm8k_train[0]["question"]]["answer"] == "72"
    assert by_question[gsm8k_train[1]["question"]]["answer"] == "1200000"
    assert by_question[gsm8k_train[2]["question"]]["answer"] == "-5"
    assert by_question[gsm8k_test[1]["question"]]["answer"] == "2.5"
    solution = by_question[gsm8k_train[0]["question"]]["solution"]
    assert "<<" not in solution and solution.endswith("#### 72")
    assert solution.startswith("Natalia sold 48/2 = 24 clips in May.")


def test_gsm8k_second_load_needs_no_manual_dir(tmp_path, gsm8k_manual_dir, gsm8k_rows, monkeypatch):
    prepare_task("gsm8k", data_dir=tmp_path, manual_dir=gsm8k_manual_dir)
    monkeypatch.setattr(Gsm8k, "_generate_examples", lambda self, path: 1 / 0)
    assert len(load_task("gsm8k", "test", data_dir=tmp_path)) == len(gsm8k_rows[1])


def test_gsm8k_missing_files(tmp_path):
    (tmp_path / "manual").mkdir()
    (tmp_path / "manual" / "train.jsonl").write_text("")
    with pytest.raises(FileNotFoundError, match="test.jsonl"):
        prepare_task("gsm8k", data_dir=tmp_path / "data", manual_dir=tmp_path / "manual")


def test_gsm8k_bad_record_names_the_line(tmp_path, gsm8k_rows, write_jsonl):
    gsm8k_train, gsm8k_test = gsm8k_rows
    manual = tmp_path / "manual"
    manual.mkdir()
    write_jsonl(manual / "train.jsonl", gsm8k_train + [{"question": "q", "answer": "no marker"}])
    write_jsonl(manual / "test.jsonl", gsm8k_test)
    with pytest.raises(ValueError, match=r"train.jsonl:4"):
        prepare_task("gsm8k", data_dir=tmp_path / "data", manual_dir=manual)


def test_gsm8k_takes_no_options(tmp_path):
    with pytest.raises(ValueError, match="takes no config"):
        prepare_task("gsm8k", data_dir=tmp_path, seed=1)
