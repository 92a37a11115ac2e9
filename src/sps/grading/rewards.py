"""Rewards: the built-in graders and users' own reward functions, summed with weights.

`reward_funcs` names each reward: a grader (`math`, `countdown`, `reasoning_gym`, `choice`, or one
added with `register_grader`), whose reward is 1 for a correct completion and 0 otherwise, or a
function given as `package.module:function` or `path/to/file.py:function`. A function follows
TRL's convention: it is called with keyword lists, one entry per completion,

    fn(prompts=[...], completions=[...], completion_ids=[...], **columns) -> [float | None, ...]

where `columns` holds every column of the data row (`id`, `problem`, `answer`, whatever else the
JSON Lines row has, and the task's own fields for generated tasks), and returns one float per
completion, or None where it does not apply to that row. A rollout's reward is the weighted sum
of the rewards that apply (`reward_weights`, default all 1).

Functions run in worker processes, one call per prompt (its G completions together), each call
under a hard timeout: a call that hangs is killed. A call that raises, hangs, returns the wrong
number of values, NaN or something that is not a number, and a row where no reward applies, is a
*failure*: the error names the function and the row. A failed rollout, and one whose grader timed
out or failed, is *unscored*: its reward is NaN, so training leaves it out of the loss and counts
it, and evaluation counts it as not solved and reports it. Nothing is scored 0 in silence.
"""

from __future__ import annotations

import importlib
import importlib.util
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from sps.grading.base import Grade
from sps.grading.pool import Failure, WorkerPool
from sps.grading.registry import get_grader, known_graders
from sps.tasks.problem import Problem

DEFAULT_TIMEOUT_S = 60.0
UNSCORED_STATUSES = ("timeout", "error")  # a grader that said one of these could not score the completion


def reward_columns(problem: Problem) -> dict:
    """The data row's columns as a reward function sees them: id, problem, answer, the row's own
    columns and the task's fields."""
    return {"id": problem.id, "problem": problem.problem, "answer": problem.answer, **problem.meta, **problem.columns}


def is_function_spec(name: str) -> bool:
    return ":" in name


def reward_spec(function) -> str:
    """A reward as reward_funcs names it: a string as it is; a Python function as file.py:name of
    the file that defines it (workers load it from there, so it must be a module-level function, and
    a script that defines it must start its work under `if __name__ == "__main__":`)."""
    if isinstance(function, str):
        return function
    import inspect

    name = getattr(function, "__qualname__", "")
    if not callable(function) or "<" in name or "." in name:
        raise ValueError(f"reward function {function!r}: pass a module-level function (or its name as module:function)")
    return f"{Path(inspect.getfile(function)).resolve()}:{name}"


def resolve_spec(spec: str) -> str:
    """A function spec with a file path made absolute (workers and resumed runs may start elsewhere)."""
    target, _, function = spec.rpartition(":")
    if target.endswith(".py"):
        return f"{Path(target).expanduser().resolve()}:{function}"
    return spec


@lru_cache(maxsize=32)
def load_function(spec: str) -> Callable:
    """The function a spec names; ValueError naming the spec and what is wrong."""
    target, _, name = spec.rpartition(":")
    if not target or not name:
        raise ValueError(f"reward function {spec!r}: write it as package.module:function or path/to/file.py:function")
    if target.endswith(".py"):
        path = Path(target)
        if not path.is_file():
            raise ValueError(f"reward function {spec!r}: the file {path} does not exist")
        module_spec = importlib.util.spec_from_file_location(f"sps_reward_{abs(hash(str(path)))}", path)
        module = importlib.util.module_from_spec(module_spec)
        try:
            module_spec.loader.exec_module(module)
        except Exception as e:
            raise ValueError(f"reward function {spec!r}: importing {path} raised {type(e).__name__}: {e}") from e
    else:
        try:
            module = importlib.import_module(target)
        except Exception as e:
            raise ValueError(f"reward function {spec!r}: cannot import module {target!r} ({type(e).__name__}: {e})") from e
    fn = getattr(module, name, None)
    if not callable(fn):
        raise ValueError(f"reward function {spec!r}: {target} has no function named {name!r}")
    return fn


def call_reward_function(spec: str, kwargs: dict) -> tuple[str, object]:
    """Worker side: ("ok", the returned values) or ("error", what it raised)."""
    try:
        return "ok", list(load_function(spec)(**kwargs))
    except Exception as e:  # the user's code: its message is what the user needs to see
        return "error", f"raised {type(e).__name__}: {str(e)[:300]}"


class RewardError(ValueError):
    """More reward-function failures than max_reward_failures allows; names the first."""


def check_failures(scores: Scores, allowed: int, where: str) -> None:
    """Raise RewardError when `scores` holds more failures than `allowed`."""
    if len(scores.failures) > allowed:
        raise RewardError(f"{where}: {len(scores.failures)} reward failure(s), more than max_reward_failures ({allowed}); "
                          f"first: {scores.failures[0]}")


@dataclass
class Scores:
    """The rewards of a batch of completions. N completions."""

    rewards: list[float]  # N weighted sums; NaN for an unscored completion
    grades: list[Grade]  # N: the first grader's grades (extracted answers, statuses), or the functions' verdicts
    failures: list[str]  # one message per reward-function failure


class RewardFunctions:
    """The run's rewards. `score` returns one reward per completion; close() stops the workers."""

    def __init__(
        self, names: Sequence[str], weights: Sequence[float] = (), success_threshold: float = 1.0,
        timeout_s: float = DEFAULT_TIMEOUT_S, workers: int | None = None,
    ):
        if not names:
            raise ValueError("reward_funcs is empty: name at least one grader or function")
        if weights and len(weights) != len(names):
            raise ValueError(f"reward_weights has {len(weights)} values for {len(names)} reward_funcs; give one per function or none")
        if any(not math.isfinite(w) for w in weights):
            raise ValueError(f"reward_weights must be finite numbers (got {list(weights)})")
        if timeout_s <= 0:
            raise ValueError(f"reward_timeout must be positive (got {timeout_s})")
        unknown = [n for n in names if not is_function_spec(n) and n not in known_graders()]
        if unknown:
            raise ValueError(f"reward_funcs: {unknown[0]!r} is neither a grader ({', '.join(known_graders())}) nor module:function / file.py:function")
        self.names = [resolve_spec(n) if is_function_spec(n) else n for n in names]
        self.weights = list(weights) or [1.0] * len(names)
        self.success_threshold = success_threshold
        for name in self.names:
            if is_function_spec(name):
                load_function(name)  # fail now, naming the spec, rather than in a worker mid-run
        self.graders = {n: get_grader(n) for n in self.names if not is_function_spec(n)}
        functions = [n for n in self.names if is_function_spec(n)]
        self.pool = WorkerPool(call_reward_function, workers, timeout_s) if functions else None

    def score(self, prompts: Sequence[str], completions: Sequence[str], completion_ids: Sequence[list[int]],
              problems: Sequence[Problem], group_size: int) -> Scores:
        """Rewards of completions in groups of `group_size` consecutive rows sharing a problem."""
        count = len(completions)
        values = {name: self._grader_rewards(name, completions, problems) for name in self.graders}
        failures: list[str] = []
        for name in (n for n in self.names if is_function_spec(n)):
            values[name] = self._function_rewards(name, prompts, completions, completion_ids, problems, group_size, failures)
        totals = []
        for i in range(count):
            applying = [(w, values[n][0][i]) for n, w in zip(self.names, self.weights, strict=True) if values[n][0][i] is not None]
            if not applying:
                failures.append(f"row {problems[i].id!r} (completion {i % group_size}): no reward function applies (all returned None)")
            totals.append(sum(w * r for w, r in applying) if applying else math.nan)
        first_grader = next(iter(self.graders), None)
        if first_grader is not None:
            grades = values[first_grader][1]
        else:
            grades = [Grade(total >= self.success_threshold, "ok" if math.isfinite(total) else "error") for total in totals]
        return Scores(totals, grades, failures)

    def _grader_rewards(self, name: str, completions, problems) -> tuple[list[float | None], list[Grade]]:
        grades = self.graders[name].grade(list(completions), list(problems))
        return [math.nan if g.status in UNSCORED_STATUSES else float(g.correct) for g in grades], grades

    def _function_rewards(self, spec, prompts, completions, completion_ids, problems, group_size, failures) -> tuple[list, None]:
        """One worker call per group; a failed call makes every reward of its group NaN."""
        starts = range(0, len(completions), group_size)
        calls = []
        for start in starts:
            rows = range(start, min(start + group_size, len(completions)))
            columns = [reward_columns(problems[i]) for i in rows]
            kwargs = {key: [c.get(key) for c in columns] for key in dict.fromkeys(k for c in columns for k in c)}
            kwargs |= {"prompts": [prompts[i] for i in rows], "completions": [completions[i] for i in rows],
                       "completion_ids": [list(completion_ids[i]) for i in rows]}
            calls.append((spec, kwargs))
        rewards: list[float | None] = []
        for start, result in zip(starts, self.pool.map(calls), strict=True):
            size = min(group_size, len(completions) - start)
            where = f"reward function {spec} on row {problems[start].id!r}"
            problem = None
            if isinstance(result, Failure):
                problem = f"{where}: {'timed out' if result.status == 'timeout' else 'failed'} ({result.detail})"
            elif result[0] == "error":
                problem = f"{where}: {result[1]}"
            elif len(result[1]) != size:
                problem = f"{where}: returned {len(result[1])} values for {size} completions"
            else:
                bad = [v for v in result[1] if v is not None and not _is_number(v)]
                if bad:
                    problem = f"{where}: returned {bad[0]!r}, not a finite number or None"
            if problem is not None:
                failures.append(problem)
                rewards += [math.nan] * size
            else:
                rewards += [None if v is None else float(v) for v in result[1]]
        return rewards, None

    def close(self) -> None:
        for grader in self.graders.values():
            grader.close()
        if self.pool is not None:
            self.pool.close()


def _is_number(value) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)
