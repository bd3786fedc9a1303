"""Safe evaluation of integer arithmetic expressions (+ - * / and parentheses), no `eval`."""

from __future__ import annotations

import ast
from fractions import Fraction

# Bounds the parser's recursion and the size of intermediate values for untrusted model output.
MAX_EXPRESSION_CHARS = 200

_BINARY = {
    ast.Add: lambda a, b: a + b,
    ast.Sub: lambda a, b: a - b,
    ast.Mult: lambda a, b: a * b,
    ast.Div: lambda a, b: a / b,
}
_UNICODE_OPERATORS = str.maketrans({"×": "*", "÷": "/", "−": "-", "–": "-"})


class ExpressionError(ValueError):
    """The text is not an allowed arithmetic expression or cannot be evaluated."""


def parse_expression(text: str, *, allow_negation: bool = True) -> ast.expr:
    """Parses `text` into an AST that holds only integer literals and + - * / (and unary -)."""
    text = text.translate(_UNICODE_OPERATORS).strip()
    if not text:
        raise ExpressionError("empty expression")
    if len(text) > MAX_EXPRESSION_CHARS:
        raise ExpressionError(f"expression longer than {MAX_EXPRESSION_CHARS} characters")
    try:
        tree = ast.parse(text, mode="eval").body
    except (SyntaxError, ValueError) as e:
        raise ExpressionError(f"not an arithmetic expression: {text!r}") from e
    for node in ast.walk(tree):
        if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
            continue
        if allow_negation and isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            continue
        if isinstance(node, ast.Constant) and type(node.value) is int:
            continue
        if isinstance(node, ast.operator | ast.unaryop):
            continue
        raise ExpressionError(f"{type(node).__name__} is not allowed in {text!r}")
    return tree


def evaluate(tree: ast.expr | str, *, allow_negation: bool = True) -> Fraction:
    """Exact value of an expression (text or a tree from `parse_expression`)."""
    if isinstance(tree, str):
        tree = parse_expression(tree, allow_negation=allow_negation)
    if isinstance(tree, ast.Constant):
        return Fraction(tree.value)
    if isinstance(tree, ast.UnaryOp):
        return -evaluate(tree.operand)
    left, right = evaluate(tree.left), evaluate(tree.right)
    if isinstance(tree.op, ast.Div) and right == 0:
        raise ExpressionError("division by zero")
    return _BINARY[type(tree.op)](left, right)


def literals(tree: ast.expr) -> list[int]:
    """The integer literals of an expression tree, in source order."""
    nodes = [n for n in ast.walk(tree) if isinstance(n, ast.Constant)]
    return [n.value for n in sorted(nodes, key=lambda n: (n.lineno, n.col_offset))]
