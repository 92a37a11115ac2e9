"""What a reward-function worker runs: load a user's function by its spec and call it. Kept apart
from sps.grading.rewards, whose graders import math-verify and sympy (2 s), so that a reward
worker starts in a fraction of a second and holds only the user's code."""

from __future__ import annotations

import errno
import importlib
import inspect
import os
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from sps.io import import_file


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
        try:
            module = import_file(path, f"sps_reward_{abs(hash(str(path)))}")
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


def call_reward_function(spec, kwargs: dict | None) -> tuple[str, object]:
    """Worker side: ("ok", the returned values) or ("error", what went wrong). spec: a spec string
    or a callable object (reward_target). kwargs None only loads the function (the check at start)
    and returns what it takes (Parameters). Running out of memory is left to
    the pool to report."""
    try:
        function = spec if callable(spec) else load_function(spec)
    except ValueError as e:
        return "error", str(e)
    if kwargs is None:
        return "ok", parameters(function)
    try:
        return "ok", list(function(**kwargs))
    except MemoryError:
        raise
    except KeyError as e:  # a column looked up in **kwargs that the rows do not have
        if e.args and isinstance(e.args[0], str) and e.args[0] not in kwargs:
            return "error", f"raised KeyError: {e.args[0]!r}; the rows have no column {e.args[0]!r}, only {', '.join(sorted(kwargs))}"
        return "error", f"raised KeyError: {str(e)[:300]}"
    except Exception as e:  # the user's code: its message is what the user needs to see
        message = str(e)[:300]
        if os.strerror(errno.ENOMEM) in message:  # torch's allocator raises RuntimeError, not MemoryError
            raise MemoryError(message) from e
        return "error", f"raised {type(e).__name__}: {message}"


@dataclass(frozen=True)
class Parameters:
    """The keywords a reward function takes: those it requires (no default), all it names, and
    whether it takes **kwargs."""

    required: tuple[str, ...]
    named: tuple[str, ...]
    any_keyword: bool


def parameters(function) -> Parameters:


    try:
        found = inspect.signature(function).parameters.values()
    except (TypeError, ValueError):  # a builtin without a signature: nothing to check
        return Parameters((), (), True)
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return Parameters(tuple(p.name for p in found if p.kind in kinds and p.default is inspect.Parameter.empty),
                      tuple(p.name for p in found if p.kind in kinds), any(p.kind == inspect.Parameter.VAR_KEYWORD for p in found))
