"""A bounded comparison of huge positive numbers written in LaTeX, on a log scale, for when exact
arithmetic would not finish: 10^{10^{10}} against 100^{5\\cdot 10^9}, or 100000000! against
100000000 \\cdot 99999999!. Nothing is evaluated as code and no big integer is ever built: an
expression of integers and decimals, ^, \\cdot / \\times / *, ! and brackets becomes the float
log10 of its value, or None when it has anything else (a sum, a variable, a value too large even
for its log). Two logs within a relative 1e-12 count as equal, as any float comparison would.
"""

from __future__ import annotations

import math
import re

RELATIVE = 1e-12
MAX_LOG10 = 300.0  # a base, exponent or factorial argument beyond 10^300 is not worth a guess
_TOKEN = re.compile(r"\s*(\d+(?:\.\d+)?|\\cdot|\\times|\*|\^|!|\{|\}|\(|\)|\\left|\\right)")


def tokens(text: str) -> list[str] | None:
    out, at = [], 0
    text = text.strip().strip("$")
    while at < len(text):
        match = _TOKEN.match(text, at)
        if match is None:
            return None if text[at:].strip() else out
        if match.group(1) not in (r"\left", r"\right"):
            out.append(match.group(1))
        at = match.end()
    return out


def log10_value(text: str) -> float | None:
    """log10 of the number `text` writes, or None (see the module docstring)."""
    found = tokens(text)
    if not found:
        return None
    parser = _Parser(found)
    try:
        value = parser.product()
    except (ValueError, OverflowError, IndexError):
        return None
    return value if parser.at == len(found) else None


def log_scale_equal(gold: str, answer: str) -> bool | None:
    """Whether two huge numbers are equal on a log scale; None when either is out of reach."""
    a, b = log10_value(gold), log10_value(answer)
    if a is None or b is None:
        return None
    return math.isclose(a, b, rel_tol=RELATIVE, abs_tol=RELATIVE)


class _Parser:
    """product := power (('\\cdot' | '\\times' | '*') power)*;  power := factorial ('^' power)?;
    factorial := atom '!'*;  atom := number | '{' product '}' | '(' product ')'. Values are log10s."""

    def __init__(self, found: list[str]):
        self.found, self.at = found, 0

    def peek(self) -> str | None:
        return self.found[self.at] if self.at < len(self.found) else None

    def take(self) -> str:
        self.at += 1
        return self.found[self.at - 1]

    def product(self) -> float:
        value = self.power()
        while self.peek() in (r"\cdot", r"\times", "*"):
            self.take()
            value += self.power()
        return value

    def power(self) -> float:
        base = self.factorial()
        if self.peek() != "^":
            return base
        self.take()
        exponent = self.power()
        if exponent > MAX_LOG10:
            raise OverflowError("an exponent beyond 10^300")
        return base * 10**exponent

    def factorial(self) -> float:
        value = self.atom()
        while self.peek() == "!":
            self.take()
            if value > MAX_LOG10:
                raise OverflowError("a factorial of a number beyond 10^300")
            n = 10**value
            if abs(n - round(n)) > 1e-9 * max(n, 1):
                raise ValueError("a factorial of a non-integer")
            value = math.lgamma(round(n) + 1) / math.log(10)
        return value

    def atom(self) -> float:
        token = self.take()
        if token in ("{", "("):
            value = self.product()
            if self.take() != ("}" if token == "{" else ")"):
                raise ValueError("unbalanced brackets")
            return value
        number = float(token)
        if number <= 0:
            raise ValueError("only positive numbers have a log")
        return math.log10(number)
