"""Reward functions, their checks (errors name the function and the sample) and combinations."""

import sys

import numpy as np
import pytest

from trlx_jax.data.rewards import (
    REWARDS,
    RewardError,
    call_reward,
    combine_rewards,
    countdown_score,
)


def _call(name, outputs, **metadata):
    """Calls a registered reward the way the trainer does, with trlx arguments."""
    prompts = [f"p{i}" for i in range(len(outputs))]
    samples = [p + o for p, o in zip(prompts, outputs, strict=True)]
    return REWARDS.get(name)(samples, prompts, outputs, **metadata)


def test_registry_names():
    assert {"exact_match", "numeric_match", "countdown", "format", "math_verify"} <= set(
        REWARDS.names()
    )


def test_exact_match():
    outputs = ["46", " 46\n", "#### 46", "\\boxed{46}", "45", "46 apples", "-46"]
    assert _call("exact_match", outputs, answer=["46"] * 7) == [1, 1, 1, 1, 0, 0, 0]
    assert _call("exact_match", ["-5"], answer=["-5"], question=["ignored"]) == [1.0]


def test_numeric_match():
    outputs = [
        "so 1,200 * 1,000 = 1,200,000\n#### 1,200,000",
        "The answer is $1200000.",
        "\\boxed{1200000.0}",
        "#### 1200001",
        "I don't know",
        "#### 5.0",
        "She ends at -5 degrees.",
    ]
    answers = ["1200000"] * 5 + ["5", "-5"]
    assert _call("numeric_match", outputs, answer=answers) == [1, 1, 1, 0, 0, 1, 1]


def test_numeric_match_rejects_non_numeric_gold():
    with pytest.raises(ValueError, match="not a number"):
        _call("numeric_match", ["1"], answer=["many"])


@pytest.mark.parametrize(
    ("output", "score"),
    [
        ("(25-5)*3", 1.0),
        ("3*(25-5)", 1.0),
        ("(25-5)*3 = 60", 1.0),
        ("Let me think.\n<answer>3*(25-5)</answer>", 1.0),
        ("First line\n(25 - 5) × 3\n", 1.0),
        ("(25-5)*3*1", 0.0),  # 1 is not given
        ("25*3-5", 0.0),  # wrong value
        ("(25+5)*2", 0.0),  # wrong numbers
        ("25-5", 0.0),  # 3 unused
        ("-(5-25)*3", 0.0),  # negation is not an allowed operation
        ("__import__('os').getcwd()", 0.0),
        ("(25-5)**3", 0.0),
        ("", 0.0),
    ],
)
def test_countdown(output, score):
    assert countdown_score(output, [25, 5, 3], 60) == score
    assert _call("countdown", [output], numbers=[[25, 5, 3]], target=[60]) == [score]


def test_countdown_repeated_numbers_used_exactly_as_given():
    assert countdown_score("4*4+2", [4, 4, 2], 18) == 1.0
    assert countdown_score("4*4+2", [4, 2, 2], 18) == 0.0


def test_format_reward():
    outputs = ["#### 5", "x \\boxed{5}", "<answer>5</answer>", "5", "####", "<answer>5"]
    assert _call("format", outputs) == [1, 1, 1, 0, 0, 0]


def test_math_verify_equivalence():
    # math-verify is an optional extra of the package and part of the test extra, so this runs.
    outputs = [
        "The result is \\boxed{\\frac{1}{2}}",
        "so the answer is $0.5$",
        "\\boxed{\\frac{1}{3}}",
        "\\boxed{2\\sqrt{2}}",
    ]
    answers = ["0.5", "\\frac{1}{2}", "0.5", "\\sqrt{8}"]
    assert _call("math_verify", outputs, answer=answers) == [1, 1, 0, 1]


def test_math_verify_missing_package_is_explained(monkeypatch):
    monkeypatch.setitem(sys.modules, "math_verify", None)
    with pytest.raises(ImportError, match="pip install"):
        _call("math_verify", ["1"], answer=["1"])


def _broken_on_third(samples, prompts, outputs, **metadata):
    return [float(1 / (len(o) - 3)) for o in outputs]


def test_raising_reward_names_function_and_offending_sample():
    outputs = ["ab", "abcd", "abc", "a"]
    with pytest.raises(RewardError) as info:
        call_reward(_broken_on_third, outputs, outputs, outputs, {"answer": ["w", "x", "y", "z"]})
    message = str(info.value)
    assert "'_broken_on_third' raised ZeroDivisionError" in message
    assert "sample 2: output='abc'" in message and "'answer': 'y'" in message


def test_wrong_length_reward():
    with pytest.raises(RewardError, match=r"'short' returned shape \(1,\) for 2 samples"):
        call_reward(lambda s, p, o, **m: [1.0], ["a", "b"], ["a", "b"], ["a", "b"], name="short")


def test_non_finite_reward_shows_sample():
    def nan_on_b(samples, prompts, outputs, **metadata):
        return [float("nan") if o == "b" else 1.0 for o in outputs]

    with pytest.raises(
        RewardError, match="'nan_on_b' returned non-finite value nan for sample 1: output='b'"
    ):
        call_reward(nan_on_b, ["a", "b"], ["", ""], ["a", "b"])
    with pytest.raises(RewardError, match="non-finite value inf"):
        call_reward(lambda s, p, o, **m: [np.inf], ["a"], [""], ["a"])


def test_non_numeric_reward():
    with pytest.raises(RewardError, match="not floats"):
        call_reward(lambda s, p, o, **m: ["good"], ["a"], [""], ["a"], name="words")


def test_missing_metadata_is_reported():
    with pytest.raises(RewardError, match="'exact_match' raised TypeError.*answer"):
        call_reward(REWARDS.get("exact_match"), ["a"], [""], ["a"], name="exact_match")


def test_combined_reward_weights_and_components():
    reward = combine_rewards({"numeric_match": 1.0, "format": 0.1})
    outputs = ["#### 7", "7", "#### 8", "nothing"]
    samples = outputs
    assert reward(samples, samples, outputs, answer=["7"] * 4) == pytest.approx(
        [1.1, 1.0, 0.1, 0.0]
    )
    components = reward.components(samples, samples, outputs, answer=["7"] * 4)
    np.testing.assert_array_equal(components["format"], [1, 0, 1, 0])
    assert reward.__name__ == "1*numeric_match + 0.1*format"
    # Any example field may be metadata, even one named like a parameter.
    assert reward(["#### 7"], [""], ["#### 7"], answer=["7"], name=["x"], fn=["y"]) == [1.1]


def test_combined_reward_accepts_callables_and_checks_them():
    def always_half(samples, prompts, outputs, **metadata):
        return [0.5] * len(outputs)

    reward = combine_rewards([("exact_match", 2.0), (always_half, -1.0)])
    assert reward(["1", "2"], ["", ""], ["1", "2"], answer=["1", "1"]) == [1.5, -0.5]
    broken = combine_rewards([(lambda s, p, o, **m: [None] * len(o), 1.0)])
    with pytest.raises(RewardError, match="non-finite"):
        broken(["1"], [""], ["1"])


def test_combined_reward_validation():
    with pytest.raises(KeyError, match="Valid names"):
        combine_rewards({"exact": 1.0})
    with pytest.raises(ValueError, match="at least one"):
        combine_rewards({})
    with pytest.raises(ValueError, match="finite"):
        combine_rewards({"format": float("nan")})
    with pytest.raises(ValueError, match="unique"):
        combine_rewards([("format", 1.0), ("format", 2.0)])
