"""Math grading with math-verify, run in worker processes under a hard per-item timeout.

The answer is the last `\\boxed{...}` (or `\\fbox{...}`) of the completion, found by our own brace
matching; without one, math-verify searches the completion's tail. Parsed sympy objects never
leave `_grade`: they are never printed, logged or sent between processes, because turning a huge
one into text can hang (`Grade.extracted` is always the answer's text).
"""

from __future__ import annotations

import contextlib
import logging
import re
from functools import lru_cache
from operator import itemgetter

from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse, verify
from math_verify.errors import TimeoutException

from sps.grading.base import Grade, PooledGrader
from sps.grading.log_scale import huge_numbers_equal
from sps.tasks.problem import Problem

DEFAULT_TIMEOUT_S = 10.0
# math-verify's own SIGALRM limit (whole seconds) for each of its three steps: parse the gold, parse
# the answer, compare. Three of them stay under the default hard limit, so a slow item usually ends
# as a cheap False instead of a killed and respawned worker.
MATH_VERIFY_TIMEOUT_S = 3
# Without a boxed answer, only the completion's tail is searched: the answer is at the end, and
# math-verify's regexes would be slow on a 100,000-character completion.
TAIL_CHARS = 2000

_EXTRACTION = (LatexExtractionConfig(), ExprExtractionConfig())
# The opening of a box, an escaped (literal) brace, or a grouping brace.
_BRACE_TOKEN = re.compile(r"\\(?:boxed|fbox)\s*\{|\\[{}]|[{}]")


def last_boxed(text: str) -> str | None:
    """The content of the last closed `\\boxed{...}` or `\\fbox{...}` in `text`, or None.

    One left-to-right pass over the braces with a stack, so nested boxes, escaped braces (`\\{`)
    and unbalanced braces all cost linear time; a box that is never closed does not count.
    """
    # For each open brace: where the box content starts, or None for a plain grouping brace.
    open_braces: list[int | None] = []
    last = None
    for token in _BRACE_TOKEN.finditer(text):
        brace = token.group()
        if brace.endswith("{") and brace != "\\{":
            open_braces.append(token.end() if len(brace) > 1 else None)
        elif brace == "}" and open_braces:
            content_start = open_braces.pop()
            if content_start is not None:
                last = text[content_start : token.start()]
    return last


def grade_math_serial(completion: str, gold: str) -> Grade:
    """Grade one completion against one gold answer in this process; the pool's workers run exactly this.

    Its only protection against a hang is math-verify's SIGALRM, which needs the main thread and
    cannot stop C-level bignum work: grade untrusted completions with `MathGrader`.
    """
    try:
        return _grade(completion, gold)
    except TimeoutException:  # a BaseException, raised outside math-verify's own handlers
        return Grade(False, "timeout", detail=f"math-verify timed out grading against gold {gold[:100]!r}")
    except Exception as error:
        # The type name only: the message could hold a sympy object, and printing that can hang.
        return Grade(
            False, "error", detail=f"{type(error).__name__} while grading against gold {gold[:100]!r}"
        )


def graded_part(completion: str) -> str:
    """The last box alone, or without one the tail: all `_grade` reads of a completion. Samples
    that box the same answer after different reasoning are then graded once (`MathGrader`), and a
    long completion is not sent to a worker whole."""
    boxed = last_boxed(completion)
    return completion[-TAIL_CHARS:] if boxed is None else f"\\boxed{{{boxed}}}"


def _grade(completion: str, gold: str) -> Grade:
    boxed = last_boxed(completion)
    if boxed is not None and _plain(boxed) == _plain(gold):
        # The same text is the same answer, however long: math-verify cannot parse a 100,000-digit number.
        return Grade(True, "ok", boxed)
    gold_parsed = _parse_gold(gold)
    if not _has_math(gold_parsed):
        return Grade(False, "error", detail=f"math-verify cannot parse the gold answer {gold[:100]!r}")
    if boxed is not None:
        answer = _parse(f"${boxed}$")
        extracted = boxed
    else:
        answer = _parse(completion[-TAIL_CHARS:])
        if not answer:
            return Grade(
                False, "no_answer", detail="no \\boxed{} answer and no math in the completion's tail"
            )
        # parse() returns [parsed, matched text], or just the text when parsing failed. The text is
        # after math-verify's LaTeX normalization: "$0.5$" comes back as "\frac{1}{2}".
        extracted = next((item for item in answer if isinstance(item, str)), None)
    with _timeouts_noted() as timeouts:
        correct = verify(gold_parsed, answer, timeout_seconds=MATH_VERIFY_TIMEOUT_S)
    if not correct and timeouts.count:
        # math-verify gave up (it says so only in a log line) and reports False: no verdict. Huge
        # numbers get a bounded comparison that proves equal or unequal or says nothing; anything
        # it cannot decide is a timeout, never a wrong or a right answer.
        same = None if boxed is None else huge_numbers_equal(gold, boxed)
        if same is not None:
            how = "equal in normal form" if same else "unequal on a log scale or in normal form"
            return Grade(same, "ok", extracted, f"{how}: exact arithmetic timed out")
        return Grade(False, "timeout", extracted, f"math-verify timed out comparing with gold {gold[:100]!r}")
    if not correct and not _has_math(answer):
        return Grade(False, "malformed", extracted, "the answer does not parse as math")
    return Grade(correct, "ok", extracted)


class _TimeoutNotes(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        self.count += record.getMessage().startswith("Timeout")


@contextlib.contextmanager
def _timeouts_noted():
    """Count math-verify's timeouts inside the block (verify swallows them into False and logs them)."""
    notes = _TimeoutNotes()
    logger = logging.getLogger("math_verify")
    logger.addHandler(notes)
    try:
        yield notes
    finally:
        logger.removeHandler(notes)


@lru_cache(maxsize=4096)
def _parse_gold(gold: str) -> list:
    """The parsed gold answer, cached: a worker sees the same gold for every sample of a problem.

    Callers must not mutate the list; it stays a list because verify() treats a tuple as one item.
    """
    return _parse(f"${gold}$")


def _plain(text: str) -> str:
    return "".join(text.split()).strip("$")


def _parse(text: str) -> list:
    return parse(text, extraction_config=_EXTRACTION, parsing_timeout=MATH_VERIFY_TIMEOUT_S)


def _has_math(parsed: list) -> bool:
    """Whether math-verify parsed something, not only fell back to the matched text."""
    return any(not isinstance(item, str) for item in parsed)


def _warm_up() -> None:
    """Worker initializer: load math-verify's parser and regexes before the first timed item."""
    grade_math_serial("\\boxed{\\frac{1}{2}}", "0.5")


class MathGrader(PooledGrader):
    """Grades math completions with math-verify in worker processes, each under a hard timeout.

    The workers start at construction: importing math-verify takes a second or two per worker, which
    then overlaps whatever the caller does before its first `grade` (loading a model, sampling).
    """

    name = "math"

    def __init__(self, workers: int | None = None, timeout_s: float = DEFAULT_TIMEOUT_S):
        # Items by gold: each worker caches the golds it has parsed.
        super().__init__(grade_math_serial, workers, timeout_s, initializer=_warm_up, key=itemgetter(1))
        self._pool.start()

    graded_part = staticmethod(graded_part)

    def arguments(self, completion: str, problem: Problem) -> tuple:
        return completion, problem.answer
