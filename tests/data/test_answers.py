"""Final-answer extraction from model output and GSM8K gold text."""

from fractions import Fraction

import pytest

from trlx_jax.data.answers import (
    extract_final_answer,
    extract_number,
    format_number,
    gsm8k_gold,
    last_boxed,
)

TRICKY = [
    ("#### 72", "72"),
    ("She sold 48 + 24 = 72 clips.\n#### 72", "72"),
    ("#### 1,200,000", "1200000"),
    ("The answer is $1,234.", "1234"),
    ("#### -5", "-5"),
    ("It drops to −5 degrees, so the answer is −5", "-5"),
    ("\\boxed{42}", "42"),
    ("Therefore the total is \\boxed{\\$18}.", "18"),
    ("\\boxed{18 \\text{ dollars}}", "18"),
    ("\\boxed{1{,}000}", "1000"),
    ("\\boxed{\\frac{1}{2}}", "0.5"),
    ("\\boxed{\\dfrac{3}{4}} and later 7", "0.75"),
    ("So she has 5.0 apples", "5"),
    ("The total is 1,234.50", "1234.5"),
    ("total 72.", "72"),
    ("10-3=7", "7"),
    ("The answer is 12 apples, not 15.", "12"),
    ("Answer: 9 because 4 + 5", "9"),
    ("<answer>17</answer> and then 5", "17"),
    ("#### $ 30", "30"),
    ("She got 50% off, paying 20", "20"),
    ("2,3 and 4", "4"),
    ("x = (-3)", "-3"),
    ("#### 0.25 dollars", "0.25"),
    ("first \\boxed{1} then \\boxed{2}", "2"),
    ("#### 5\n#### 6", "6"),
    ("1,2345", "2345"),
]


@pytest.mark.parametrize(("text", "expected"), TRICKY)
def test_extract_number(text, expected):
    value = extract_number(text)
    assert value is not None, text
    assert format_number(value) == expected


@pytest.mark.parametrize("text", ["no numbers here", "", "#### ", "\\boxed{}", "x = y"])
def test_extract_number_none(text):
    assert extract_number(text) is None


def test_marked_answer_takes_priority_over_later_numbers():
    assert extract_final_answer("\\boxed{3} then 4") == "3"
    assert extract_final_answer("reasoning 1 2 3\n#### 7 apples") == "7 apples"
    assert extract_final_answer("just 5") is None


def test_last_boxed_nested_and_unclosed():
    assert last_boxed("\\boxed{\\frac{a}{b}}") == "\\frac{a}{b}"
    assert last_boxed("\\fbox{2}") == "2"
    assert last_boxed("\\boxed{unclosed") is None


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (Fraction(5), "5"),
        (Fraction(-1, 4), "-0.25"),
        (Fraction(1, 3), "1/3"),
        (Fraction(-1, 20), "-0.05"),
        (Fraction(1234, 100), "12.34"),
        (Fraction(0), "0"),
    ],
)
def test_format_number(value, text):
    assert format_number(value) == text


def test_gsm8k_gold():
    assert gsm8k_gold("48/2 = <<48/2=24>>24\n#### 72") == "72"
    assert gsm8k_gold("#### 1,000") == "1000"
    assert gsm8k_gold("#### -3.50") == "-3.5"
    with pytest.raises(ValueError, match="no '#### <number>'"):
        gsm8k_gold("the answer is 5")
    with pytest.raises(ValueError, match="no number after"):
        gsm8k_gold("#### many")
