"""Plugins: a user's own methods, one file or module, reachable from the command line.

`plugins: [path/to/my_method.py, my_package.methods]` in a config (or `--plugins a.py,b.py`) names
Python files and modules to import before the settings are checked, so that what they register
with sps's decorators (`register_advantage`, `register_policy_loss`, `register_reward_shaping`,
`register_grader`, ...) is a valid choice. Every process of a torchrun job imports them, a resumed
run imports them again from its config, and a run's identity covers each file's content
(sps.identity), so a changed method is not resumed unnoticed. A plugin that fails to import stops
the command in one line naming it. Importing one twice (a second run in the same process) does not
register its methods twice.
"""

from __future__ import annotations

import hashlib
import importlib
import sys
from pathlib import Path

from sps.io import import_file


def resolve_plugin(spec: str) -> str:
    """A file path made absolute (a resumed run may start elsewhere); a module name as it is."""
    return str(Path(spec).expanduser().resolve()) if spec.endswith(".py") else spec


def load_plugins(specs: list[str]) -> None:
    """Import each plugin once per process; ValueError naming the first that fails and why."""
    for spec in specs:
        if spec.endswith(".py"):
            path = Path(spec).expanduser().resolve()
            name = f"sps_plugin_{path.stem}_{hashlib.sha256(str(path).encode()).hexdigest()[:8]}"
            if name in sys.modules:
                continue
            if not path.is_file():
                raise ValueError(f"plugin {spec}: the file does not exist")
            try:
                import_file(path, name)
            except Exception as e:
                raise ValueError(f"plugin {spec}: importing it raised {type(e).__name__}: {e}") from None
        else:
            try:
                importlib.import_module(spec)
            except Exception as e:
                raise ValueError(f"plugin {spec}: importing the module raised {type(e).__name__}: {e}") from None


def plugins_in(argv: list[str]) -> list[str]:
    """The --plugins of a command line (either spelling, `--plugins a,b` or `--plugins=a,b`), to
    import before the parser is built, so that `--help` lists their methods."""
    found = []
    for i, arg in enumerate(argv):
        if arg == "--plugins" and i + 1 < len(argv):
            found += argv[i + 1].split(",")
        elif arg.startswith("--plugins="):
            found += arg.split("=", 1)[1].split(",")
    return [f for f in found if f]
