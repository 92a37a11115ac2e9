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
under a hard timeout and each worker under a memory limit: a call that hangs is killed, one that
goes over the limit fails, and either way its worker is replaced. A function's file is first
imported in a worker, so one that exits or crashes at import is an error naming it rather than the
end of sps. A call that raises, hangs, goes over the memory limit, returns the wrong number of
values, NaN or something that is not a number, and a row where no reward applies, is a *failure*:
the error names the function and the row. A failed rollout, and one whose grader timed
out or failed, is *unscored*: its reward is NaN, so training leaves it out of the loss and counts
it, and evaluation counts it as not solved and reports it. Nothing is scored 0 in silence.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from sps.grading.base import Grade
from sps.grading.pool import GIB, Failure, WorkerPool
from sps.grading.registry import get_grader, known_graders
from sps.grading.reward_worker import Parameters, call_reward_function
from sps.tasks.problem import Problem

DEFAULT_TIMEOUT_S = 60.0
DEFAULT_MEMORY_LIMIT_GIB = 4.0
FAILED = {"timeout": "timed out", "memory": "went over reward_memory_limit", "error": "failed"}  # by Failure status
UNSCORED_STATUSES = ("timeout", "error")  # a grader that said one of these could not score the completion


def reward_columns(problem: Problem) -> dict:
    """The data row's columns as a reward function sees them: id, problem, answer, the row's own
    columns and the task's fields."""
    return {"id": problem.id, "problem": problem.problem, "answer": problem.answer, **problem.meta, **problem.columns}


def is_function_spec(name: str) -> bool:
    return ":" in name


# Callables that no file.py:name can name (a functools.partial, an object with __call__), by the
# spec reward_spec gave them: their calls carry them to the workers, pickled (the user's own objects,
# in this process; nothing is ever unpickled from a file).
CALLABLE_OBJECTS: dict[str, Callable] = {}


def reward_spec(function) -> str:
    """A reward as reward_funcs names it: a string as it is; a Python function as file.py:name of
    the file that defines it (workers load it from there, so it must be a module-level function, and
    a script that defines it must start its work under `if __name__ == "__main__":`); a partial or
    a callable object that pickles as `object:<its description>#<digest of its pickle>`."""
    if isinstance(function, str):
        return function
    import inspect
    import pickle

    if not callable(function):
        raise ValueError(f"reward function {function!r} is not callable: pass a function, its name as module:function, or a callable object")
    name = getattr(function, "__qualname__", None)
    if inspect.isfunction(function) and "<" not in name and "." not in name:
        return f"{Path(inspect.getfile(function)).resolve()}:{name}"
    try:
        data = pickle.dumps(function)
    except Exception as e:
        raise ValueError(f"reward function {function!r} cannot be pickled for the reward workers ({type(e).__name__}: {str(e)[:200]}); "
                         "pass a module-level function, a functools.partial of one, or an object of a module-level class") from None
    import functools
    import hashlib

    if isinstance(function, functools.partial):  # stable across processes, unlike a repr with addresses
        described = f"partial of {reward_spec(function.func)}"
    else:
        described = f"{type(function).__module__}.{type(function).__qualname__}"
    spec = f"object:{described}#{hashlib.sha256(data).hexdigest()[:16]}"
    CALLABLE_OBJECTS[spec] = function
    return spec


def reward_target(spec: str):
    """What a worker call carries: the spec (the worker loads it), or the callable object itself."""
    return CALLABLE_OBJECTS.get(spec, spec)


def resolve_spec(spec: str) -> str:
    """A function spec with a file path made absolute (workers and resumed runs may start elsewhere)."""
    target, _, function = spec.rpartition(":")
    if target.endswith(".py") and not spec.startswith("object:"):
        return f"{Path(target).expanduser().resolve()}:{function}"
    return spec


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
        memory_limit_gib: float = DEFAULT_MEMORY_LIMIT_GIB,
    ):
        names = [reward_spec(n) for n in ([names] if callable(names) else names)]  # one callable alone, as TRL takes it
        if not names:
            raise ValueError("reward_funcs is empty: name at least one grader or function")
        if weights and len(weights) != len(names):
            raise ValueError(f"reward_weights has {len(weights)} values for {len(names)} reward_funcs; give one per function or none")
        if any(not math.isfinite(w) for w in weights):
            raise ValueError(f"reward_weights must be finite numbers (got {list(weights)})")
        if timeout_s <= 0:
            raise ValueError(f"reward_timeout must be positive (got {timeout_s})")
        if not (math.isfinite(memory_limit_gib) and memory_limit_gib > 0):
            raise ValueError(f"reward_memory_limit must be a positive number of GiB (got {memory_limit_gib})")
        unknown = [n for n in names if not is_function_spec(n) and n not in known_graders()]
        if unknown:
            raise ValueError(f"reward_funcs: {unknown[0]!r} is neither a grader ({', '.join(known_graders())}) nor module:function / file.py:function")
        self.names = [resolve_spec(n) if is_function_spec(n) else n for n in names]
        self.weights = list(weights) or [1.0] * len(names)
        self.success_threshold = success_threshold
        functions = [n for n in self.names if is_function_spec(n)]
        self.pool = WorkerPool(call_reward_function, workers, timeout_s, memory_limit=int(memory_limit_gib * GIB)) if functions else None
        self.graders = {}
        self.parameters: dict[str, Parameters] = {}  # what each function takes, read by its worker
        try:
            if self.pool is not None:
                self._load(functions)
            self.graders = {n: get_grader(n) for n in self.names if not is_function_spec(n)}
        except BaseException:
            self.close()
            raise

    def _load(self, functions: list[str]) -> None:
        """Load each function in a worker, as the calls will, so that a bad spec fails now, naming
        it, rather than mid-run, and a file that exits or crashes at import cannot take sps with it."""
        for spec, result in zip(functions, self.pool.map([(reward_target(spec), None) for spec in functions]), strict=True):
            if isinstance(result, Failure):
                raise ValueError(f"reward function {spec!r}: importing it ended its worker process ({result.detail}); "
                                 "its file or module must not exit, crash or hang when imported")
            if result[0] == "error":
                raise ValueError(result[1])
            self.parameters[spec] = result[1]

    def check_arguments(self, problem: Problem) -> None:
        """Every function takes what sps passes for rows like `problem`, and requires nothing else
        (TRL passes `trainer_state` and more that sps does not): checked at start, naming the keyword."""
        given = ["prompts", "completions", "completion_ids", *reward_columns(problem)]
        for spec, takes in self.parameters.items():
            missing = [name for name in takes.required if name not in given]
            if missing:
                them = "them" if len(missing) > 1 else "it"
                raise ValueError(f"reward function {spec}: requires {', '.join(map(repr, missing))}, which sps does not pass; "
                                 f"it passes {', '.join(given)} (the row's columns by name): give {them} a default or leave {them} out")
            unknown = [name for name in given if name not in takes.named]
            if unknown and not takes.any_keyword:
                raise ValueError(f"reward function {spec}: takes no keyword {unknown[0]!r}, which sps passes with "
                                 f"{', '.join(given)}: add **kwargs to its parameters")

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
            calls.append((reward_target(spec), kwargs))
        rewards: list[float | None] = []
        for start, result in zip(starts, self.pool.map(calls), strict=True):
            size = min(group_size, len(completions) - start)
            where = f"reward function {spec} on row {problems[start].id!r}"
            problem = None
            if isinstance(result, Failure):
                problem = f"{where}: {FAILED[result.status]} ({result.detail})"
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
    """A finite real number: Python's, or numpy's (np.float32 is not a float subclass)."""
    return isinstance(value, numbers.Real) and math.isfinite(float(value))
