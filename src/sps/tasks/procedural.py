"""Procedurally generated reasoning tasks from reasoning-gym, as benchmarks and training sets.

A specification `rg:<task>[:<split>][?<key>=<value>&...]` names a reasoning-gym generator
(`rg:chain_sum`), a split (train, val or test; train when left out) and the generator's settings
(`?min_terms=2&max_terms=3`). Two keys are ours: `seed` (default 0) and `size` (problems in the
split; defaults in SPLIT_SIZES). Values are read as JSON where they parse (numbers, true/false,
lists), else as text.

Splits are disjoint by construction: a problem belongs to the split its question text hashes to
(SPLIT_BUCKETS), and each split keeps the first `size` distinct questions of the seeded generator
stream that hash to it. So the same spec gives the same problems on every machine, and no question
is ever in two splits, whatever their sizes.

The task's own scorer grades (see `sps.grading.procedural`), except for generators whose scorer
evaluates the model's answer as code (eval, sympy's parse_expr): sps never executes model output,
so those are refused.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import re

from sps.tasks.problem import Problem

PREFIX = "rg:"
SPLIT_SIZES = {"train": 5000, "val": 300, "test": 500}
# A question's split: the first byte of its SHA-256 (0-255) falls in one of these ranges (80/10/10).
SPLIT_BUCKETS = {"train": range(0, 205), "val": range(205, 230), "test": range(230, 256)}
# How many generator items to draw per requested problem before giving up: a small task space
# (2 one-digit terms) runs out of distinct questions long before this.
DRAWS_PER_PROBLEM = 40
# reasoning-gym draws item i of seed s from Random(s + i), so seeds 0 and 1 give the same stream
# shifted by one item; our seed k starts the stream at k * SEED_SPACING instead.
SEED_SPACING = 10_000_000
# Calls in a scorer's source that mean it runs the model's answer as code.
_EXECUTES = re.compile(r"(?<![\w.])(?:eval|exec)\(|parse_expr\(|sympify\(")


def missing_extra() -> ImportError:
    return ImportError("rg: tasks need reasoning-gym: pip install 'sps-rl[tasks]' (or pip install reasoning-gym)")


def parse_spec(spec: str) -> tuple[str, str, int, int, dict]:
    """'rg:chain_sum:val?min_terms=2&seed=3' -> ('chain_sum', 'val', 3, 300, {'min_terms': 2})."""
    body, _, query = spec[len(PREFIX):].partition("?")
    task, _, split = body.partition(":")
    split = split or "train"
    if not task:
        raise ValueError(f"benchmark {spec!r}: name a reasoning-gym task, e.g. rg:chain_sum")
    if split not in SPLIT_SIZES:
        raise ValueError(f"benchmark {spec!r}: split {split!r} is unknown; choose one of {', '.join(SPLIT_SIZES)}")
    settings = {}
    # Split by hand, not as a URL query: "+" must stay a plus (operators=["+","-"]).
    for part in query.split("&") if query else []:
        key, equals, text = part.partition("=")
        if not key or not equals:
            raise ValueError(f"benchmark {spec!r}: setting {part!r} is not key=value")
        try:
            settings[key] = json.loads(text)
        except json.JSONDecodeError:
            settings[key] = text
    seed, size = settings.pop("seed", 0), settings.pop("size", SPLIT_SIZES[split])
    for key, value in (("seed", seed), ("size", size)):
        if not isinstance(value, int) or isinstance(value, bool) or value < (0 if key == "seed" else 1):
            raise ValueError(f"benchmark {spec!r}: {key} must be a {'non-negative' if key == 'seed' else 'positive'} integer, got {value!r}")
    return task, split, seed, size, settings


def make_dataset(task: str, settings: dict, seed: int, size: int):
    """The reasoning-gym generator `task` with `settings`; errors name the task and the setting."""
    try:
        import reasoning_gym
        from reasoning_gym.factory import DATASETS
    except ImportError as e:
        raise missing_extra() from e
    if task not in DATASETS:
        raise ValueError(f"reasoning-gym has no task {task!r}; known tasks: {', '.join(sorted(DATASETS))}")
    try:
        return reasoning_gym.create_dataset(task, seed=seed, size=size, **settings)
    except (TypeError, ValueError, AssertionError) as e:
        raise ValueError(f"reasoning-gym task {task!r} rejects the settings {settings}: {e}") from e


def split_of(question: str) -> str:
    """The split a question belongs to, from its text alone."""
    byte = hashlib.sha256(question.encode()).digest()[0]
    return next(split for split, bucket in SPLIT_BUCKETS.items() if byte in bucket)


def load_procedural(spec: str) -> tuple[str, list[Problem]]:
    """The benchmark name ('rg_chain_sum_val') and the problems of one `rg:` specification."""
    task, split, seed, size, settings = parse_spec(spec)
    draws = size * DRAWS_PER_PROBLEM
    dataset = make_dataset(task, settings, seed * SEED_SPACING, draws)
    if _EXECUTES.search(inspect.getsource(type(dataset).score_answer)):
        raise ValueError(
            f"reasoning-gym task {task!r} scores answers by evaluating them as code (eval or sympy parsing); "
            "sps never executes model output, so it cannot train or evaluate on this task"
        )
    settings_key = json.dumps(settings, sort_keys=True)
    problems, seen = [], set()
    for index in range(draws):
        entry = dataset[index]
        question = entry["question"]
        if question in seen or split_of(question) != split:
            continue
        seen.add(question)
        problems.append(Problem(
            id=f"{task}-{seed}-{index}",
            problem=question,
            answer=str(entry["answer"]),
            meta={"rg_task": task, "rg_settings": settings_key, "rg_entry": entry},
        ))
        if len(problems) == size:
            return f"rg_{task}_{split}", problems
    raise ValueError(
        f"benchmark {spec!r}: only {len(problems)} distinct {split} problems in {draws} draws; "
        f"ask for a smaller size or settings with more possible problems"
    )
