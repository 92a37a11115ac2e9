"""What produces a run's or an evaluation's numbers beyond its settings, as short digests: the code
that scores (each reward function's source, each grader's code and the packages it grades with),
the data's content, the prompt template's text and the model's weights. A run or an evaluation
records its identity and a rerun compares it key by key, so that a changed reward, data file,
template or model is named instead of silently reusing numbers made before the change.

The model's digest is cheap on purpose (its config and each weight file's name, size and time, not
the weights' bytes); the data's is of the problems as loaded, so it covers files, the hub and
generated tasks alike.
"""

from __future__ import annotations

import hashlib
import importlib.util
import inspect
import json
from importlib import metadata
from pathlib import Path

# The files of sps.grading each built-in grader's verdicts come from, and the packages it uses.
GRADER_FILES = {"math": ("base.py", "math.py", "log_scale.py"), "choice": ("base.py", "choice.py"),
                "countdown": ("base.py", "countdown.py"), "reasoning_gym": ("base.py", "procedural.py")}
GRADER_PACKAGES = {"math": ("math-verify", "sympy"), "reasoning_gym": ("reasoning-gym",)}
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".gguf", ".json")


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


def file_identity(path: Path) -> str:
    from sps.io import file_digest

    return file_digest(path)[:16]


def reward_identity(rewards: list[str]) -> dict[str, str]:
    """{reward name: digest of what computes it}: a function's defining file (or its source), a
    grader's module files and its packages' versions."""
    from sps.grading.rewards import is_function_spec

    return {name: function_identity(name) if is_function_spec(name) else grader_identity(name) for name in rewards}


def function_identity(spec: str) -> str:
    if spec.startswith("object:"):  # a partial or callable object: its pickle's digest, and the file of its code
        from sps.grading.rewards import CALLABLE_OBJECTS

        obj = CALLABLE_OBJECTS.get(spec)
        code = getattr(obj, "func", type(obj))
        source = inspect.getsourcefile(code) if inspect.isfunction(code) or inspect.isclass(code) else None
        return digest(f"{spec.rpartition('#')[2]} {file_identity(Path(source)) if source else ''}".encode())
    return code_identity(spec.rpartition(":")[0])


def code_identity(target: str) -> str:
    """Digest of a Python file (path/to/file.py) or of an importable module's file."""
    if target.endswith(".py"):
        path = Path(target)
        return file_identity(path) if path.is_file() else "missing"
    found = importlib.util.find_spec(target.split(".")[0]) and importlib.util.find_spec(target)
    if found is not None and found.origin and Path(found.origin).is_file():
        return file_identity(Path(found.origin))
    return digest(target.encode())


def grader_identity(name: str) -> str:
    """The grader's own code (its files in sps.grading, or the file of a registered grader's
    factory) and the versions of the packages it grades with."""
    from sps.grading import registry

    factory = registry._FACTORIES.get(name)
    if factory is None:
        return "unknown"
    folder = Path(inspect.getsourcefile(registry)).parent
    files = [folder / f for f in GRADER_FILES[name]] if name in GRADER_FILES else [Path(inspect.getsourcefile(factory))]
    parts = [file_identity(f) for f in files] + [f"{package} {package_version(package)}" for package in GRADER_PACKAGES.get(name, ())]
    return digest(" ".join(parts).encode())


def package_version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "absent"


def data_identity(problems) -> str:
    """Digest of the problems as loaded: ids, statements, answers and every column."""
    h = hashlib.sha256()
    for p in problems:
        h.update(json.dumps([p.id, p.problem, p.answer, p.meta, p.columns], sort_keys=True, default=str).encode())
    return h.hexdigest()[:16]


def template_identity(template: str, tokenizer) -> str:
    """Digest of the template's text as this tokenizer renders it (a chat template included)."""
    from sps.tasks.templates import render_prompt

    return digest(render_prompt(template, "{problem}", tokenizer).encode())


def model_identity(path: str) -> str:
    """A hub id as it is; a folder's config and its weight files' names, sizes and modification times."""
    folder = Path(path)
    if not folder.is_dir():
        return path
    entries = sorted((f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in folder.iterdir()
                     if f.is_file() and f.name.endswith(WEIGHT_SUFFIXES))
    return digest(json.dumps(entries).encode())


NAMES = {"model": "the model", "data": "the data", "template": "the prompt template"}


def changes(recorded: dict, current: dict) -> list[tuple[str, str]]:
    """What differs between two identities, as (key, what a message calls it); a key the record
    lacks is not a change (made before sps recorded it)."""
    out = []
    for key, now in current.items():
        then = recorded.get(key, now)
        if isinstance(now, dict):
            out += [(key, describe(key, name)) for name in now if then.get(name, now[name]) != now[name]]
        elif then != now:
            out.append((key, NAMES.get(key, key)))
    return out


def describe(key: str, name: str) -> str:
    if key == "rewards":
        return f"the reward function {name}" if ":" in name else f"the grader {name}"
    return f"the plugin {name}" if key == "plugins" else f"{key} {name}"


def run_identity(cfg, start_model: str, train_data, eval_benchmarks: list, tokenizer) -> dict:
    """A training run's identity: its start model, its training and evaluation problems, the
    templates they are rendered with and its rewards (see the module docstring)."""
    templates = [cfg.prompt_template or b.template for b in [train_data, *eval_benchmarks]]
    return {
        "model": model_identity(start_model),
        "data": data_identity([p for b in [train_data, *eval_benchmarks] for p in b.problems]),
        "template": digest(" ".join(template_identity(t, tokenizer) for t in templates).encode()),
        "rewards": reward_identity(list(dict.fromkeys(cfg.reward_funcs or [cfg.grader or b.grader for b in [train_data, *eval_benchmarks]]))),
        "plugins": {spec: code_identity(spec) for spec in cfg.plugins},  # a plugin's methods are its file's code
    }
