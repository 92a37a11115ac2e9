"""Configs are dataclasses; YAML files and `--key value` overrides map onto them.

Every field carries its help text in `metadata["help"]` (use `option(default, "help")`). Nested
dataclasses are YAML sections and dotted keys on the command line (`--sps.irl_steps 2`).
Unknown keys and values of the wrong type are errors that name the key.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any


def option(default: Any, help: str) -> Any:
    """A dataclass field with help text."""
    if isinstance(default, list):
        return dataclasses.field(default_factory=lambda: list(default), metadata={"help": help})
    return dataclasses.field(default=default, metadata={"help": help})


def section(cls, help: str) -> Any:
    """A nested config section (a YAML mapping, dotted keys on the command line)."""
    return dataclasses.field(default_factory=cls, metadata={"help": help})


def from_dict(cls, data: dict, where: str = ""):
    """Build dataclass `cls` from a (possibly nested) dict, checking keys and types."""
    if not isinstance(data, dict):
        raise ValueError(f"config section {where or '(top level)'} must be a mapping, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    values = {}
    for key, value in data.items():
        name = f"{where}{key}"
        if key not in fields:
            raise ValueError(f"unknown config key {name!r}; known keys here: {', '.join(fields)}")
        kind = hints[key]
        if dataclasses.is_dataclass(kind):
            values[key] = from_dict(kind, value, f"{name}.")
        else:
            values[key] = coerce(value, kind, name)
    return cls(**values)


def coerce(value: Any, kind: Any, name: str) -> Any:
    """Check `value` against the annotation `kind`, converting strings from the command line."""
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin in (typing.Union, types.UnionType):
        is_none = value is None or (isinstance(value, str) and value.lower() in ("none", "null"))
        if is_none and type(None) in args:
            return None
        error = ValueError(f"config key {name!r} has no usable type")
        for arg in (a for a in args if a is not type(None)):
            try:
                return coerce(value, arg, name)
            except ValueError as e:
                error = e
        raise error
    if origin is list:
        items = value.split(",") if isinstance(value, str) else value
        if not isinstance(items, list):
            raise ValueError(f"config key {name!r} must be a list, got {value!r}")
        return [coerce(v, args[0], name) for v in items if v != ""]
    if kind is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.lower() in ("true", "1", "yes")
        raise ValueError(f"config key {name!r} must be true or false, got {value!r}")
    if kind in (int, float):
        if isinstance(value, bool):
            raise ValueError(f"config key {name!r} must be a number, got {value!r}")
        if isinstance(value, int | float) and (kind is float or float(value).is_integer()):
            return kind(value)
        if isinstance(value, str):
            try:
                return kind(value) if kind is float else int(value)
            except ValueError:
                pass
        raise ValueError(f"config key {name!r} must be {'an integer' if kind is int else 'a number'}, got {value!r}")
    if kind is str:
        if not isinstance(value, str):
            raise ValueError(f"config key {name!r} must be text, got {value!r}")
        return value
    raise ValueError(f"config key {name!r} has an unsupported type {kind}")


def parse_overrides(args: list[str]) -> dict:
    """['--lr', '1e-4', '--sps.irl_steps', '2'] -> {'lr': '1e-4', 'sps': {'irl_steps': '2'}}."""
    result: dict = {}
    i = 0
    while i < len(args):
        key = args[i]
        if not key.startswith("--") or len(key) == 2:
            raise ValueError(f"expected --key value, got {key!r}")
        if "=" in key:
            key, value = key.split("=", 1)
            i += 1
        elif i + 1 < len(args):
            value = args[i + 1]
            i += 2
        else:
            raise ValueError(f"option {key} has no value")
        *sections, leaf = key[2:].replace("-", "_").split(".")
        target = result
        for s in sections:
            target = target.setdefault(s, {})
        target[leaf] = value
    return result


def merge(base: dict, extra: dict) -> dict:
    """Recursive dict merge; `extra` wins."""
    out = dict(base)
    for k, v in extra.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def load_config(cls, path: str | Path | None = None, overrides: list[str] | None = None):
    """A `cls` from an optional YAML file plus command-line overrides."""
    import yaml

    data: dict = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"config file {path} does not exist" + (" (it is a folder)" if path.is_dir() else ""))
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8-sig")) or {}
        except yaml.YAMLError as e:
            where = getattr(e, "problem_mark", None)
            line = f" at line {where.line + 1}, column {where.column + 1}" if where else ""
            raise ValueError(f"config file {path} is not valid YAML{line}: {getattr(e, 'problem', None) or e}") from None
        if not isinstance(data, dict):
            raise ValueError(f"config file {path} must hold a mapping of settings (key: value lines), not a {type(data).__name__}")
    return from_dict(cls, merge(data, parse_overrides(overrides or [])))


def to_dict(cfg) -> dict:
    return dataclasses.asdict(cfg)


def describe(cls, prefix: str = "") -> list[tuple[str, str, str]]:
    """(key, default, help) for every field, nested sections dotted, for `--help` listings."""
    rows = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(hints[f.name]):
            rows += describe(hints[f.name], f"{prefix}{f.name}.")
        else:
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
            rows.append((prefix + f.name, repr(default), f.metadata.get("help", "")))
    return rows
