"""The built-in testbed task: Countdown with many distinct correct solutions per problem.

A problem gives a few small numbers and a target. A solution is a chain of arithmetic steps, each
`a op b=c`, separated by commas, whose last result is the target:

    prompt      "  8 5 1 7>14:"          numbers (in random order), '>', target, ':'
    completion  "5-1=4,8/4=2,7*2=14"     nothing after the last step (EOS is the model layer's)

Rules: each given number is used at most once (not all must be used), and so is each step's result;
every result except the last must be used by a later step; every value is a positive integer no
larger than `max_value`; division is exact; multiplying or dividing by 1 is not allowed. A value
that is both a given number and an unused result is read as the result. Under these rules
`enumerate_solutions` lists every correct completion of a problem, up to the operand order of +
and * (it writes the larger operand first; the verifier accepts either order).

Two completions are distinct trajectories when their strings differ, and distinct answers when
their canonical expressions differ: the expression tree the steps build, with chains of + and of *
flattened and their operands sorted, e.g. "7+1=8,8+5=13" and "5+1=6,7+6=13" are both "1+5+7".
"""

from __future__ import annotations

import random
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import combinations_with_replacement

from sps.config import option
from sps.tasks.problem import Problem

# Every character a countdown prompt or completion can contain (newline for prompt templates).
ALPHABET = "0123456789+-*/=,>: \n"
OPERATORS = "+-*/"

# Completions longer than this are not parsed: a valid one has a few short steps.
MAX_COMPLETION_CHARS = 1000
# Numbers with more digits are malformed; this keeps int() cheap on garbage.
MAX_DIGITS = 6

_STEP = re.compile(r"([0-9]+)([-+*/])([0-9]+)=([0-9]+)")

# An expression tree: a given number, or (operator, left, right).
Node = int | tuple[str, "Node", "Node"]


@dataclass(frozen=True)
class CountdownConfig:
    """What problems the testbed generates and how they are split."""

    min_numbers: int = option(3, "fewest numbers given in a problem")
    max_numbers: int = option(4, "most numbers given in a problem")
    min_number: int = option(1, "smallest given number")
    max_number: int = option(10, "largest given number")
    max_value: int = option(60, "largest value any step may produce")
    min_target: int = option(10, "smallest target")
    max_target: int = option(60, "largest target")
    min_solutions: int = option(
        3, "a (numbers, target) pair becomes a problem only with at least this many solution strings"
    )
    ops: str = option(OPERATORS, "allowed operators, a subset of '+-*/'")
    test_pairs: int = option(
        2, "number pairs held out for the test split: test problems contain one, training problems none"
    )
    validation_pairs: int = option(1, "number pairs held out for the validation split, disjoint from the test pairs")
    train_size: int | None = option(
        None, "train problems to draw; None takes every (multiset, target) pair of the train multisets"
    )
    validation_size: int = option(300, "validation problems to draw from the validation multisets")
    test_size: int = option(500, "test problems to draw from the test multisets")
    seed: int = option(0, "seed for the hold-out, the sampling of problems and the order of the numbers")

    def __post_init__(self) -> None:
        def require(ok: bool, problem: str) -> None:
            if not ok:
                raise ValueError(f"CountdownConfig: {problem}")

        require(
            2 <= self.min_numbers <= self.max_numbers,
            f"need 2 <= min_numbers <= max_numbers (got {self.min_numbers}, {self.max_numbers})",
        )
        require(
            1 <= self.min_number <= self.max_number <= self.max_value,
            f"need 1 <= min_number <= max_number <= max_value (got {self.min_number}, {self.max_number}, {self.max_value})",
        )
        require(
            1 <= self.min_target <= self.max_target <= self.max_value,
            f"need 1 <= min_target <= max_target <= max_value (got {self.min_target}, {self.max_target}, {self.max_value})",
        )
        require(self.min_solutions >= 1, f"min_solutions must be >= 1 (got {self.min_solutions})")
        require(
            bool(self.ops) and set(self.ops) <= set(OPERATORS) and len(set(self.ops)) == len(self.ops),
            f"ops must be distinct characters from '{OPERATORS}' (got {self.ops!r})",
        )
        distinct_pairs = (self.max_number - self.min_number + 1) * (self.max_number - self.min_number) // 2
        require(
            min(self.test_pairs, self.validation_pairs) >= 1 and self.test_pairs + self.validation_pairs < distinct_pairs,
            f"need test_pairs, validation_pairs >= 1 and fewer than {distinct_pairs} held-out pairs in all "
            f"(got {self.test_pairs}, {self.validation_pairs})",
        )
        require(
            self.train_size is None or self.train_size >= 1,
            f"train_size must be None or >= 1 (got {self.train_size})",
        )
        require(self.validation_size >= 1, f"validation_size must be >= 1 (got {self.validation_size})")
        require(self.test_size >= 1, f"test_size must be >= 1 (got {self.test_size})")


def prompt_width(cfg: CountdownConfig) -> int:
    """Returns the fixed character width of every prompt: the longest numbers, '>', target and ':'."""
    number_width = len(str(cfg.max_number)) + 1  # digits plus a separating space (or '>')
    return cfg.max_numbers * number_width + len(str(cfg.max_target)) + 1


def format_prompt(numbers: Sequence[int], target: int, width: int) -> str:
    """Returns the prompt text, e.g. "  8 5 1 7>14:", left-padded with spaces to `width`."""
    text = f"{' '.join(map(str, numbers))}>{target}:"
    if len(text) > width:
        raise ValueError(f"prompt {text!r} is longer than the width {width}")
    return text.rjust(width)


def _step_result(a: int, op: str, b: int, max_value: int) -> int | str:
    """Returns the value of `a op b`, or a string saying which rule the step breaks."""
    if (op == "*" and 1 in (a, b)) or (op == "/" and b == 1):
        return f"{a}{op}{b}: multiplying or dividing by 1 is not allowed"
    if op == "+":
        value = a + b
    elif op == "-":
        value = a - b
    elif op == "*":
        value = a * b
    else:
        if b == 0 or a % b:
            return f"{a}/{b} is not a whole number"
        value = a // b
    if value <= 0:
        return f"{a}{op}{b} is {value}, not a positive integer"
    if value > max_value:
        return f"{a}{op}{b} is {value}, above the maximum {max_value}"
    return value


def _without(values: tuple[int, ...], value: int) -> tuple[int, ...]:
    """Returns `values` with one occurrence of `value` removed."""
    i = values.index(value)
    return values[:i] + values[i + 1 :]


def enumerate_solutions(numbers: Sequence[int], max_value: int, ops: str = OPERATORS) -> dict[int, list[str]]:
    """Every correct completion reachable from `numbers`, grouped by its final value.

    Returns {final value: sorted solution strings}. Operands of every step are written larger
    first, so each solution appears once (commuted + and * variants are not listed).
    """
    by_value: dict[int, list[str]] = {}

    def extend(givens: tuple[int, ...], results: tuple[int, ...], steps: str) -> None:
        available = sorted(set(givens) | set(results), reverse=True)
        for i, a in enumerate(available):
            for b in available[i:]:
                if a == b and givens.count(a) + results.count(a) < 2:
                    continue
                # A value that is both given and a step's result is taken from the results first,
                # exactly as the verifier does, so unused results are judged the same way.
                rest_givens, rest_results = givens, results
                for operand in (a, b):
                    if operand in rest_results:
                        rest_results = _without(rest_results, operand)
                    else:
                        rest_givens = _without(rest_givens, operand)
                for op in ops:
                    value = _step_result(a, op, b, max_value)
                    if isinstance(value, str):
                        continue
                    new_results = (*rest_results, value)
                    new_steps = f"{steps},{a}{op}{b}={value}" if steps else f"{a}{op}{b}={value}"
                    if len(new_results) == 1:
                        by_value.setdefault(value, []).append(new_steps)
                    if len(rest_givens) + len(new_results) >= 2:
                        extend(rest_givens, new_results, new_steps)

    extend(tuple(numbers), (), "")
    return {value: sorted(solutions) for value, solutions in by_value.items()}


def parse_steps(completion: str) -> list[tuple[int, str, int, int]]:
    """Parses "a op b=c,..." into [(a, op, b, c), ...].

    Raises ValueError saying which step does not parse and why.
    """
    if len(completion) > MAX_COMPLETION_CHARS:
        raise ValueError(
            f"completion has {len(completion)} characters; at most {MAX_COMPLETION_CHARS} are parsed"
        )
    steps = []
    for i, text in enumerate(completion.split(","), 1):
        match = _STEP.fullmatch(text)
        if match is None:
            shown = text if len(text) <= 24 else text[:24] + "..."
            raise ValueError(f"step {i} {shown!r} is not of the form a+b=c")
        numbers = match.group(1, 3, 4)
        for number in numbers:
            if len(number) > MAX_DIGITS:
                raise ValueError(
                    f"step {i}: a number has {len(number)} digits; at most {MAX_DIGITS} are allowed"
                )
            if len(number) > 1 and number[0] == "0":
                raise ValueError(f"step {i}: number {number!r} has a leading zero")
        a, b, result = (int(n) for n in numbers)
        steps.append((a, match.group(2), b, result))
    return steps


class RuleBroken(ValueError):
    """A parsed completion breaks a rule of the task."""


def check_steps(
    steps: list[tuple[int, str, int, int]], numbers: Sequence[int], max_value: int, ops: str
) -> Node:
    """Replays the steps against the rules, recomputing each one.

    Returns the expression tree of the final result; raises RuleBroken naming the step and the rule.
    """
    givens = Counter(numbers)
    # Results not yet used, by value; the most recent one of a value is used first.
    results: dict[int, list[Node]] = {}

    def take(value: int, step: int) -> Node:
        # Results before givens: this leaves the fewest results unused, whatever the completion meant.
        if results.get(value):
            return results[value].pop()
        if givens[value]:
            givens[value] -= 1
            return value
        available = sorted(givens.elements()) + sorted(v for v, nodes in results.items() for _ in nodes)
        raise RuleBroken(
            f"step {step}: {value} is not available (available: {' '.join(map(str, available)) or 'none'})"
        )

    for i, (a, op, b, claimed) in enumerate(steps, 1):
        if op not in ops:
            raise RuleBroken(f"step {i}: operator {op!r} is not allowed (allowed: {ops})")
        node = (op, take(a, i), take(b, i))
        value = _step_result(a, op, b, max_value)
        if isinstance(value, str):
            raise RuleBroken(f"step {i}: {value}")
        if value != claimed:
            raise RuleBroken(f"step {i}: {a}{op}{b} is {value}, not {claimed}")
        results.setdefault(value, []).append(node)
    final = results[steps[-1][3]].pop()
    unused = [value for value, nodes in results.items() for _ in nodes]
    if unused:
        raise RuleBroken(f"the result {unused[0]} of an earlier step is never used")
    return final


def canonical_expression(node: Node) -> str:
    """Returns the expression as text with + and * chains flattened and their operands sorted.

    Operands that are themselves operations are parenthesised: "(8-2)*(1+5)", "1+5+7".
    """
    if isinstance(node, int):
        return str(node)
    op, left, right = node
    if op in "+*":
        terms = [*_chain(left, op), *_chain(right, op)]
        # Given numbers first in numeric order, then sub-expressions in text order.
        terms.sort(key=lambda t: (0, t, "") if isinstance(t, int) else (1, 0, canonical_expression(t)))
    else:
        terms = [left, right]
    return op.join(
        canonical_expression(t) if isinstance(t, int) else f"({canonical_expression(t)})" for t in terms
    )


def _chain(node: Node, op: str) -> list[Node]:
    """Returns the operands of a chain of `op` rooted at `node` (just [node] if it is not an `op`)."""
    if isinstance(node, tuple) and node[0] == op:
        return [*_chain(node[1], op), *_chain(node[2], op)]
    return [node]


def solution_answer(completion: str, numbers: Sequence[int], max_value: int, ops: str = OPERATORS) -> str:
    """The canonical expression of a correct solution (the answer distinct answers are counted by).
    Raises ValueError when it does not parse and RuleBroken when it breaks a rule."""
    return canonical_expression(check_steps(parse_steps(completion), numbers, max_value, ops))


def solutions_by_multiset(cfg: CountdownConfig) -> dict[tuple[int, ...], dict[int, list[str]]]:
    """Every problem the config allows: {sorted numbers: {target: solution strings}}.

    A target qualifies when it lies in the target range, is not one of the numbers and has at
    least `min_solutions` solutions; multisets with no qualifying target are left out.
    """
    pool = {}
    for count in range(cfg.min_numbers, cfg.max_numbers + 1):
        for numbers in combinations_with_replacement(range(cfg.min_number, cfg.max_number + 1), count):
            targets = {
                value: solutions
                for value, solutions in enumerate_solutions(numbers, cfg.max_value, cfg.ops).items()
                if cfg.min_target <= value <= cfg.max_target
                and value not in numbers
                and len(solutions) >= cfg.min_solutions
            }
            if targets:
                pool[numbers] = targets
    return pool


def _make_problem(
    numbers: tuple[int, ...], target: int, solutions: list[str], cfg: CountdownConfig, rng: random.Random
) -> Problem:
    """Returns the Problem for one (multiset, target) pair, with the numbers shown in a random order."""
    shown = rng.sample(numbers, len(numbers))
    reference = min(solutions, key=lambda s: (len(s), s))
    return Problem(
        id=f"countdown-{'.'.join(map(str, numbers))}-{target}",
        problem=format_prompt(shown, target, prompt_width(cfg)),
        answer=solution_answer(reference, shown, cfg.max_value, cfg.ops),
        meta={
            "numbers": shown,
            "target": target,
            "solutions": solutions,
            "max_value": cfg.max_value,
            "ops": cfg.ops,
        },
    )


def held_out_pairs(cfg: CountdownConfig) -> dict[str, list[tuple[int, int]]]:
    """The seeded choice of number pairs held out of training: {"test": [...], "validation": [...]}."""
    numbers = range(cfg.min_number, cfg.max_number + 1)
    pairs = [(a, b) for a in numbers for b in numbers if a < b]
    chosen = random.Random(f"{cfg.seed}:pairs").sample(pairs, cfg.test_pairs + cfg.validation_pairs)
    return {"test": chosen[: cfg.test_pairs], "validation": chosen[cfg.test_pairs :]}


def build_splits(cfg: CountdownConfig) -> dict[str, list[Problem]]:
    """Builds the train, validation and test problems from disjoint sets of number multisets.

    The hold-out is compositional: a few pairs of numbers (`held_out_pairs`) never appear together
    in a training problem; every test problem contains a test pair, every validation problem a
    validation pair (and no test pair). A held-out problem is hard when its solutions need
    exactly the combination the model never practised, easy when they can avoid it, which gives
    the base model the spread of difficulty that leaves Pass@k room to move both ways.

    Returns {"train": [...], "validation": [...], "test": [...]}, each in a seeded random order with
    distinct (multiset, target) pairs. The same config always gives the same problems, and each
    split's draw has its own random stream, so resizing one split leaves the others unchanged.
    """
    pool = solutions_by_multiset(cfg)
    pairs = held_out_pairs(cfg)

    def contains(numbers: tuple[int, ...], split: str) -> bool:
        return any(a in numbers and b in numbers for a, b in pairs[split])

    held_out: dict[str, list[tuple[int, ...]]] = {"test": [], "validation": [], "train": []}
    for numbers in sorted(pool):
        split = "test" if contains(numbers, "test") else "validation" if contains(numbers, "validation") else "train"
        held_out[split].append(numbers)
    sizes = {"train": cfg.train_size, "validation": cfg.validation_size, "test": cfg.test_size}
    splits = {}
    for split, group in held_out.items():
        candidates = [(numbers, target) for numbers in sorted(group) for target in sorted(pool[numbers])]
        size = len(candidates) if sizes[split] is None else sizes[split]
        if size > len(candidates):
            raise ValueError(
                f"{split}_size {size} exceeds the {len(candidates)} problems of its {len(group)} multisets; "
                "lower it, hold out more pairs (test_pairs, validation_pairs) or widen the number range"
            )
        rng = random.Random(f"{cfg.seed}:{split}")
        splits[split] = [
            _make_problem(numbers, target, pool[numbers][target], cfg, rng)
            for numbers, target in rng.sample(candidates, size)
        ]
    return splits
