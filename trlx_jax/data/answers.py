"""Finding the final answer in model output or gold text: `#### N`, `\\boxed{N}`, tags, numbers."""

from __future__ import annotations

import re
from fractions import Fraction

# A number: optional sign (not after a word character or a closing bracket, so `10-3` reads as
# 10 and 3), digits with optional thousands separators, optional decimals or `/denominator`.
_NUMBER = re.compile(
    r"(?:(?<![\w)\]])-)?(?<![\w.])(?:\d{1,3}(?:,\d{3})+(?!\d)|\d+)(?:\.\d+|/\d+)?(?![\d])"
)
_ANSWER_TAG = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)
_ANSWER_IS = re.compile(r"answer\s*(?:is|:)", re.IGNORECASE)
# Characters that decorate numbers without changing them.
_DECORATION = str.maketrans({"$": "", "\u2212": "-", "\u2013": "-", "\u00a0": " "})
_LATEX_NOISE = re.compile(r"\\[$!,;:% ]|\\text\{[^}]*\}|\\mathrm\{[^}]*\}|\\(?:left|right)\b")
_LATEX_FRAC = re.compile(r"\\[dt]?frac\{\s*(-?\d+)\s*\}\{\s*(\d+)\s*\}")


def _numbers(text: str) -> list[Fraction]:
    """Every number in `text`, in order, with LaTeX and currency decoration removed."""
    cleaned = _LATEX_FRAC.sub(r"\1/\2", _LATEX_NOISE.sub("", text.replace("{,}", ",")))
    values = []
    for match in _NUMBER.finditer(cleaned.translate(_DECORATION)):
        number = match.group().replace(",", "")
        if "/" in number and int(number.split("/")[1]) == 0:
            continue
        values.append(Fraction(number))
    return values


def last_boxed(text: str) -> str | None:
    """Content of the last `\\boxed{...}` (or `\\fbox{...}`) in `text`, nested braces allowed."""
    start = max(text.rfind("\\boxed{"), text.rfind("\\fbox{"))
    if start < 0:
        return None
    i = text.index("{", start) + 1
    depth = 1
    for j in range(i, len(text)):
        depth += {"{": 1, "}": -1}.get(text[j], 0)
        if depth == 0:
            return text[i:j]
    return None


def extract_final_answer(text: str) -> str | None:
    """The explicitly marked final answer: last `\\boxed{}`, `<answer>` tag or text after `####`."""
    boxed = last_boxed(text)
    if boxed is not None:
        return boxed.strip()
    tags = _ANSWER_TAG.findall(text)
    if tags:
        return tags[-1].strip()
    if "####" in text:
        return text.rsplit("####", 1)[1].strip()
    return None


def parse_number(text: str) -> Fraction | None:
    """The first number in `text` as an exact fraction (`$1,234.50` -> 2469/2), or None."""
    numbers = _numbers(text)
    return numbers[0] if numbers else None


def extract_number(text: str) -> Fraction | None:
    """The numeric final answer of free text, from its marked answer or else its last number."""
    marked = extract_final_answer(text)
    if marked is not None:
        return parse_number(marked)
    phrases = list(_ANSWER_IS.finditer(text))
    if phrases:
        value = parse_number(text[phrases[-1].end() :])
        if value is not None:
            return value
    numbers = _numbers(text)
    return numbers[-1] if numbers else None


def format_number(value: Fraction) -> str:
    """Canonical text of a number: `5` for 5.0, `-0.25`, or `1/3` when not a finite decimal."""
    if value.denominator == 1:
        return str(value.numerator)
    denominator = value.denominator
    for p in (2, 5):
        while denominator % p == 0:
            denominator //= p
    if denominator != 1:
        return f"{value.numerator}/{value.denominator}"
    digits = 0
    while (value * 10**digits).denominator != 1:
        digits += 1
    scaled = str(abs((value * 10**digits).numerator)).rjust(digits + 1, "0")
    sign = "-" if value < 0 else ""
    return f"{sign}{scaled[:-digits]}.{scaled[-digits:]}"


def gsm8k_gold(solution: str) -> str:
    """The canonical gold number of a GSM8K `answer` field (the text after `####`)."""
    if "####" not in solution:
        raise ValueError(f"GSM8K answer has no '#### <number>' line: {solution[-80:]!r}")
    value = parse_number(solution.rsplit("####", 1)[1])
    if value is None:
        raise ValueError(f"GSM8K answer has no number after '####': {solution[-80:]!r}")
    return format_number(value)
