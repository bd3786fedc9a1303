"""Shared fixtures for the data tests: a character tokenizer and small prepared tasks."""

import json

import pytest

from trlx_jax.data.tasks import load_task
from trlx_jax.data.tokenizer import build_char_tokenizer

SMALL = {"num_train": 120, "num_test": 30}

GSM8K_TRAIN = [
    {
        "question": "Natalia sold clips to 48 of her friends in April, and then she sold half as "
        "many clips in May. How many clips did Natalia sell altogether in April and May?",
        "answer": "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\nNatalia sold 48+24 = "
        "<<48+24=72>>72 clips altogether in April and May.\n#### 72",
    },
    {
        "question": "A company earns $1,200 a day for 1,000 days. How much does it earn?",
        "answer": "It earns 1,200 * 1,000 = $<<1200*1000=1200000>>1,200,000.\n#### 1,200,000",
    },
    {
        "question": "The temperature is 3 degrees and drops by 8. What is it now?",
        "answer": "3 - 8 = <<3-8=-5>>-5\n#### -5",
    },
]
GSM8K_TEST = [
    {
        "question": "Weng earns $12 an hour for babysitting. Yesterday, she just did 50 minutes "
        "of babysitting. How much did she earn?",
        "answer": "Weng earns 12/60 = $<<12/60=0.2>>0.2 per minute.\nWorking 50 minutes, she "
        "earned 0.2 x 50 = $<<0.2*50=10>>10.\n#### 10",
    },
    {
        "question": "Half of 5 apples?",
        "answer": "5 / 2 = <<5/2=2.5>>2.5\n#### 2.5",
    },
]


def _write_jsonl(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))


@pytest.fixture(scope="session")
def write_jsonl():
    """Writes rows in the public GSM8K jsonl format."""
    return _write_jsonl


@pytest.fixture(scope="session")
def gsm8k_rows():
    """The (train, test) rows of the tiny GSM8K-format data set."""
    return GSM8K_TRAIN, GSM8K_TEST


@pytest.fixture(scope="session")
def small():
    """Options that make a synthetic task tiny."""
    return dict(SMALL)


@pytest.fixture(scope="session")
def char_tokenizer(tmp_path_factory):
    return build_char_tokenizer(tmp_path_factory.mktemp("char_tokenizer"))


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("tfds")


@pytest.fixture(scope="session")
def gsm8k_manual_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("gsm8k_manual")
    _write_jsonl(directory / "train.jsonl", GSM8K_TRAIN)
    _write_jsonl(directory / "test.jsonl", GSM8K_TEST)
    return directory


@pytest.fixture(scope="session")
def arithmetic_train(data_dir):
    return load_task("arithmetic", "train", data_dir=data_dir, **SMALL)
