"""A bounded comparison of huge positive numbers written in LaTeX, for when exact arithmetic would
not finish: 10^{10^{10}} against 100^{5\\cdot 10^9}, or 100000000! against 100000000 \\cdot 99999999!.
Nothing is evaluated as code and no huge integer is ever built. An expression of integers and
decimals, ^, \\cdot / \\times / *, ! and brackets becomes a `Huge`: a normal form (an exact
coefficient times powers and factorials, each rewritten only by exact identities) and the float
log10 of its value. Anything else (a sum, a variable) is out of reach.

The verdict is three-valued and never turns unequal into equal:
- equal only when the two normal forms are the same (compared exactly, exponents and arguments
  recursively), which proves the values equal;
- unequal when the normal forms differ only in their coefficient, when two powers of one base or two
  factorials differ in an exponent or argument that is proved unequal, or when the logs differ by far
  more than a float's error;
- undecided otherwise: 2 \\cdot 10^{10^{13}} and 10^{10^{13}} have logs a relative 3e-14 apart, which a
  float comparison would call equal, but their coefficients tell them apart.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from fractions import Fraction

# A value whose log10 is at most this is computed exactly (an integer of up to 1,000 digits).
EXACT_LOG10 = 1000.0
# Logs this far apart, relatively, are unequal whatever the float error of computing them.
UNEQUAL_RELATIVE = 1e-9
_TOKEN = re.compile(r"\s*(\d+(?:\.\d+)?|\\cdot|\\times|\*|\^|!|\{|\}|\(|\)|\\left|\\right)")


@dataclass(frozen=True)
class Huge:
    """coefficient × Π factors, with each factor ("pow", base, exponent) or ("fact", argument); base,
    exponent and argument are `Huge` too. No factors: the value is the coefficient, exactly."""

    coefficient: Fraction
    factors: tuple = ()
    log10: float = 0.0  # of the value; inf when beyond a float

    @property
    def exact(self) -> bool:
        return not self.factors

    def key(self) -> tuple:
        """Equal keys, equal values: every rewrite that built the form is an identity."""
        return (self.coefficient, tuple((f[0], *(part.key() for part in f[1:])) for f in self.factors))


def exact(value: Fraction) -> Huge:
    value = Fraction(value)  # log10 of each part: a 1,000-digit integer is beyond a float
    return Huge(value, (), math.log10(value.numerator) - math.log10(value.denominator))


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


def parse_huge(text: str) -> Huge | None:
    """The normal form of the number `text` writes, or None (see the module docstring)."""
    found = tokens(text)
    if not found:
        return None
    parser = _Parser(found)
    try:
        value = parser.product()
    except (ValueError, OverflowError, IndexError, ZeroDivisionError):
        return None
    return value if parser.at == len(found) else None


def huge_numbers_equal(gold: str, answer: str) -> bool | None:
    """Whether two huge numbers are equal: True or False when proved, None when undecided or either is out of reach."""
    a, b = parse_huge(gold), parse_huge(answer)
    return None if a is None or b is None else compare(a, b)


def compare(a: Huge, b: Huge) -> bool | None:
    if a.key() == b.key():
        return True
    if a.exact and b.exact:
        return False
    if a.key()[1] == b.key()[1]:
        return False  # only the coefficients differ, and the factors are positive
    if a.coefficient == b.coefficient and len(a.factors) == len(b.factors) == 1:
        (x,), (y,) = a.factors, b.factors
        if x[0] == y[0] == "fact":  # n! is one-to-one for n >= 2, and a factorial kept symbolic is huge
            return False if compare(x[1], y[1]) is False else None
        if x[0] == y[0] == "pow" and x[1].key() == y[1].key() and x[1].log10 > 0:  # base^e is one-to-one for base > 1
            return False if compare(x[2], y[2]) is False else None
    finite = math.isfinite(a.log10) and math.isfinite(b.log10)
    if finite and abs(a.log10 - b.log10) > UNEQUAL_RELATIVE * max(abs(a.log10), abs(b.log10), 1.0):
        return False
    return None


def multiply(a: Huge, b: Huge) -> Huge:
    coefficient = a.coefficient * b.coefficient
    factors = a.factors + b.factors
    # k * (k-1)! = k!: the one sum-free identity between factorials worth knowing
    for i, factor in enumerate(factors):
        if factor[0] == "fact" and factor[1].exact and coefficient == factor[1].coefficient + 1:
            factors = (*factors[:i], ("fact", exact(coefficient)), *factors[i + 1 :])
            coefficient = Fraction(1)
            break
    return Huge(coefficient, tuple(sorted(factors, key=factor_order)), a.log10 + b.log10)


def factor_order(factor: tuple) -> str:
    return repr((factor[0], *(part.key() for part in factor[1:])))


def power(base: Huge, exponent: Huge) -> Huge:
    try:
        log10 = base.log10 * 10**exponent.log10 if exponent.log10 < 400 else math.inf
    except OverflowError:
        log10 = math.inf
    if base.exact and exponent.exact and exponent.coefficient.denominator == 1 and abs(log10) <= EXACT_LOG10:
        return exact(base.coefficient ** int(exponent.coefficient))
    if base.exact and base.coefficient == 1:
        return exact(Fraction(1))
    if base.exact and base.coefficient.denominator == 1:  # b = r^m with r the smallest root: b^e = r^(m e)
        root, times = smallest_root(int(base.coefficient))
        base, exponent = exact(Fraction(root)), multiply(exact(Fraction(times)), exponent)
    elif not base.exact and base.coefficient == 1 and len(base.factors) == 1 and base.factors[0][0] == "pow":
        _, base, inner = base.factors[0]  # (b^x)^e = b^(x e)
        exponent = multiply(inner, exponent)
    return Huge(Fraction(1), (("pow", base, exponent),), log10)


def factorial(argument: Huge) -> Huge:
    if not math.isfinite(argument.log10) or argument.log10 > 300:
        raise OverflowError("a factorial of a number beyond 10^300")
    n = 10**argument.log10
    if argument.exact and argument.coefficient.denominator != 1:
        raise ValueError("a factorial of a non-integer")
    log10 = math.lgamma(n + 1) / math.log(10)
    if argument.exact and log10 <= EXACT_LOG10:
        return exact(Fraction(math.factorial(int(argument.coefficient))))
    return Huge(Fraction(1), (("fact", argument),), log10)


def smallest_root(n: int) -> tuple[int, int]:
    """(r, m) with r^m = n and r as small as can be (n has at most 1,000 digits)."""
    for m in range(n.bit_length(), 1, -1):
        r = round(n ** (1 / m)) if n.bit_length() < 1000 else _integer_root(n, m)
        for candidate in (r - 1, r, r + 1):
            if candidate > 1 and candidate**m == n:
                return candidate, m
    return n, 1


def _integer_root(n: int, m: int) -> int:
    low, high = 1, 1 << (n.bit_length() // m + 1)
    while low < high:
        mid = (low + high + 1) // 2
        low, high = (mid, high) if mid**m <= n else (low, mid - 1)
    return low


class _Parser:
    """product := power (('\\cdot' | '\\times' | '*') power)*;  power := factorial ('^' power)?;
    factorial := atom '!'*;  atom := number | '{' product '}' | '(' product ')'."""

    def __init__(self, found: list[str]):
        self.found, self.at = found, 0

    def peek(self) -> str | None:
        return self.found[self.at] if self.at < len(self.found) else None

    def take(self) -> str:
        self.at += 1
        return self.found[self.at - 1]

    def product(self) -> Huge:
        value = self.power()
        while self.peek() in (r"\cdot", r"\times", "*"):
            self.take()
            value = multiply(value, self.power())
        return value

    def power(self) -> Huge:
        base = self.factorial()
        if self.peek() != "^":
            return base
        self.take()
        return power(base, self.power())

    def factorial(self) -> Huge:
        value = self.atom()
        while self.peek() == "!":
            self.take()
            value = factorial(value)
        return value

    def atom(self) -> Huge:
        token = self.take()
        if token in ("{", "("):
            value = self.product()
            if self.take() != ("}" if token == "{" else ")"):
                raise ValueError("unbalanced brackets")
            return value
        number = Fraction(token)
        if number <= 0:
            raise ValueError("only positive numbers have a log")
        return exact(number)
