"""docs/options.md, generated from the configs' help texts: every `sps train` setting with its
default and meaning, one table per section. Regenerate after changing a config:

    python -m sps.options > docs/options.md

(tests/test_config.py checks that the file is current.)
"""

from __future__ import annotations

import dataclasses
import typing

from sps.config import describe


def options_markdown() -> str:
    from sps.training.config import TrainConfig

    hints = typing.get_type_hints(TrainConfig)
    sections = [("", "Top level", TrainConfig)]
    sections += [(f.name, f.metadata.get("help", ""), hints[f.name]) for f in dataclasses.fields(TrainConfig)
                 if dataclasses.is_dataclass(hints[f.name])]
    lines = ["# Every `sps train` setting", "",
             "Generated from the configs' help texts by `python -m sps.options` (`sps train --help` prints the same).",
             "YAML keys as shown; on the command line `--key value`, a section's keys dotted (`--sps.irl_steps 2`).", ""]
    for name, title, cls in sections:
        lines += [f"## {f'`{name}:` ' if name else ''}{title}", "", "| key | default | meaning |", "|---|---|---|"]
        for key, default, text in describe(cls):
            if name == "" and "." in key:
                continue
            if name == "" and dataclasses.is_dataclass(hints.get(key)):
                continue
            lines.append(f"| `{key}` | `{default}` | {text.replace('|', '/')} |")
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    print(options_markdown(), end="")
