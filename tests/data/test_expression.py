"""The safe arithmetic evaluator used by task generation and the countdown reward."""

from fractions import Fraction

import pytest

from trlx_jax.data.expression import (
    MAX_EXPRESSION_CHARS,
    ExpressionError,
    evaluate,
    literals,
    parse_expression,
)


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("1+2*3", 7),
        ("(1+2)*3", 9),
        ("7-10", -3),
        ("8/3", Fraction(8, 3)),
        ("-4+1", -3),
        ("2×3÷4", Fraction(3, 2)),
        ("10-(2-3)", 11),
        (" 5 ", 5),
    ],
)
def test_evaluate(text, value):
    assert evaluate(text) == value


@pytest.mark.parametrize(
    "text",
    [
        "__import__('os').system('true')",
        "2**10",
        "x+1",
        "abs(-3)",
        "1.5+1",
        "1 if 1 else 2",
        "[1, 2]",
        "1;2",
        "lambda: 1",
        "(1).real",
        "+3",
        "3 % 2",
        "3 // 2",
        "True+1",
        "",
        "1+",
    ],
)
def test_rejects_anything_but_integer_arithmetic(text):
    with pytest.raises(ExpressionError):
        evaluate(text)


def test_division_by_zero_and_length_limit():
    with pytest.raises(ExpressionError, match="division by zero"):
        evaluate("1/(2-2)")
    with pytest.raises(ExpressionError, match="longer than"):
        evaluate("1+" * MAX_EXPRESSION_CHARS + "1")


def test_negation_can_be_forbidden():
    assert evaluate("-3+5") == 2
    with pytest.raises(ExpressionError):
        parse_expression("-3+5", allow_negation=False)


def test_literals_in_source_order():
    assert literals(parse_expression("(25-5)*3+7")) == [25, 5, 3, 7]
