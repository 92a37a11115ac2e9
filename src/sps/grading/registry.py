"""Graders by name: `get_grader("math")`, and `register_grader` for graders defined elsewhere."""

from __future__ import annotations

from collections.abc import Callable

from sps.grading.base import Grade, Grader
from sps.grading.choice import ChoiceGrader
from sps.grading.math import MathGrader
from sps.tasks.problem import Problem


def _countdown_grader(**kwargs: object) -> Grader:
    from sps.grading.countdown import CountdownGrader  # the testbed task, loaded only when graded

    return CountdownGrader(**kwargs)


def _procedural_grader(**kwargs: object) -> Grader:
    from sps.grading.procedural import ProceduralGrader  # needs reasoning-gym, loaded only when graded

    return ProceduralGrader(**kwargs)


# Name -> factory; the factory's keyword arguments are the grader's options.
_FACTORIES: dict[str, Callable[..., Grader]] = {
    "math": MathGrader,
    "choice": ChoiceGrader,
    "countdown": _countdown_grader,
    "reasoning_gym": _procedural_grader,
}


def register_grader(name: str, factory: Callable[..., Grader]) -> None:
    """Make `get_grader(name, **kwargs)` return `factory(**kwargs)`."""
    if name in _FACTORIES:
        raise ValueError(f"a grader named {name!r} is already registered")
    _FACTORIES[name] = factory


def known_graders() -> list[str]:
    """The registered grader names, sorted."""
    return sorted(_FACTORIES)


def get_grader(name: str, **kwargs: object) -> Grader:
    """A new grader of the given name, built with `kwargs`; the caller closes it."""
    if name not in _FACTORIES:
        raise ValueError(f"unknown grader {name!r}; known graders: {', '.join(known_graders())}")
    return _FACTORIES[name](**kwargs)


def grade_one(gold: str, completion: str, grader: str = "math") -> Grade:
    """Grade a single completion against a gold answer (for `sps grade`)."""
    instance = get_grader(grader)
    try:
        return instance.grade([completion], [Problem(id="cli", problem="", answer=gold)])[0]
    finally:
        instance.close()
