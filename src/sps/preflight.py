"""The checks a dry run makes before any weights are loaded, shared by `sps train --dry-run`
(sps.training.plan) and `sps eval --dry-run` (sps.evaluation.plan).

A dry run loads the tokenizer and the model's config (never its weights: the parameters are
counted on the meta device), reads the first rows of the data, checks every divisibility and
length constraint, estimates the peak GPU memory per process (sps.training.memory) and prints the
plan. Every problem is reported, each naming the setting to change; any error makes the command
exit non-zero.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from sps.training.memory import (
    GIB,
)

ROWS_GRADED = 16  # rows of each data set whose gold answer is checked against the grader
# A gold answer is usable when the grader accepts it written as a model would write it.
SELF_CHECKS = {"math": "so the answer is \\boxed{{{}}}", "choice": "The answer is \\boxed{{{}}}"}
# (grader, gold answer) -> accepted, so data checked again in the same process is not graded again.
ACCEPTED: dict[tuple[str, str], bool] = {}


@dataclass
class Plan:
    lines: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    answers: list = field(default_factory=list)  # (setting, spec, grader, problems) whose gold answers check_answers grades

    def text(self) -> str:
        out = list(self.lines)
        out += [f"warning: {w}" for w in self.warnings]
        out += [f"error: {e}" for e in self.errors]
        verdict = f"{len(self.errors)} error(s): fix them before starting" if self.errors else "no errors"
        return "\n".join(out + [f"dry run: {verdict}, {len(self.warnings)} warning(s)"])


# The recipes' models as their config.json on the hub describes them, for a dry run without the hub.
KNOWN_SHAPES = {
    "Qwen/Qwen2.5-Math-1.5B": dict(hidden_size=1536, intermediate_size=8960, num_hidden_layers=28, num_attention_heads=12,
                                   num_key_value_heads=2, vocab_size=151936, max_position_embeddings=4096, tie_word_embeddings=True),
    "Qwen/Qwen2.5-Math-7B": dict(hidden_size=3584, intermediate_size=18944, num_hidden_layers=28, num_attention_heads=28,
                                 num_key_value_heads=4, vocab_size=152064, max_position_embeddings=4096, tie_word_embeddings=False),
}
CHARS_PER_TOKEN = 3.0  # a cautious guess for math text when the real tokenizer is out of reach


class CharacterEstimate:
    """Stands in for a tokenizer that cannot be loaded: about one token per CHARS_PER_TOKEN characters."""

    chat_template = None

    def __call__(self, text: str, add_special_tokens: bool = True):
        return type("Encoding", (), {"input_ids": [0] * math.ceil(len(text) / CHARS_PER_TOKEN)})


def model_files(name: str, plan: Plan):
    """(config, tokenizer) of a model folder, hub id, alias or the testbed, without any weights.
    Offline, a model of KNOWN_SHAPES is sized from its known shape and its prompts from their length."""
    from transformers import AutoConfig, Qwen2Config

    from sps.models.loading import load_tokenizer, resolve_model_path

    if name in KNOWN_SHAPES:
        try:
            return AutoConfig.from_pretrained(name), load_tokenizer(name)
        except OSError as e:
            plan.warnings.append(
                f"model: {name} is out of reach ({str(e).splitlines()[0]}): sized from its known shape, and prompt "
                f"lengths estimated at {CHARS_PER_TOKEN:g} characters a token"
            )
            return Qwen2Config(**KNOWN_SHAPES[name]), CharacterEstimate()

    if name == "testbed":
        from sps.models.testbed import TestbedConfig, default_testbed_dir, testbed_model_config
        from sps.models.tokenizer import build_char_tokenizer
        from sps.tasks.countdown import ALPHABET

        folder = default_testbed_dir(TestbedConfig())
        if not (folder / "config.json").is_file():
            plan.lines.append("model: the testbed is not built yet; the run builds it first (about 4 minutes on 2 CPU cores)")
            tokenizer = build_char_tokenizer(ALPHABET)
            return testbed_model_config(TestbedConfig(), tokenizer), tokenizer
        name = str(folder)
    path = resolve_model_path(name)
    return AutoConfig.from_pretrained(path), load_tokenizer(path)


def check_data(plan: Plan, setting: str, spec: str, data_dir: str, tokenizer, template: str, grader: str, limit: int | None):
    """Read `spec` (its first `limit` rows) and check columns, answers and prompts; returns
    (benchmark, prompt lengths in tokens) or (None, []) after reporting an error."""
    from sps.tasks.benchmarks import load_benchmark
    from sps.tasks.templates import encode_prompt

    try:
        bench = load_benchmark(spec, data_dir or None, limit=limit)
    except (ValueError, FileNotFoundError) as e:
        plan.errors.append(f"{setting}: {e}")
        return None, []
    read = len(bench.problems) + len(bench.skipped)
    if bench.skipped:
        plan.warnings.append(f"{setting}: {len(bench.skipped)} of the {read} rows read are malformed and left out; first: {bench.skipped[0]}")
    template = template or bench.template
    try:
        lengths = [len(encode_prompt(template, p.problem, tokenizer)) for p in bench.problems]
    except ValueError as e:
        plan.errors.append(f"prompt_template: {e}")
        return None, []
    grader = grader or bench.grader
    if grader in SELF_CHECKS:
        plan.answers.append((setting, spec, grader, bench.problems[:ROWS_GRADED]))
    scope = f"first {read} rows" if limit is not None else f"{read} rows"
    plan.lines.append(
        f"{setting}: {bench.source} ({scope}), grader {grader}, template {template}; "
        f"prompts {min(lengths)}-{max(lengths)} tokens (mean {sum(lengths) / len(lengths):.0f})"
    )
    return bench, lengths


def check_answers(plan: Plan) -> None:
    """Grade each data set's first gold answers, written as a model would write them, with its
    grader: an answer the grader does not accept can never earn a reward. One grader per name,
    since starting a math grader's worker processes takes seconds."""
    from sps.grading.registry import get_grader

    for grader in dict.fromkeys(g for _, _, g, _ in plan.answers):
        sets = [(setting, spec, problems) for setting, spec, g, problems in plan.answers if g == grader]
        new = list({p.answer: p for _, _, ps in sets for p in ps if (grader, p.answer) not in ACCEPTED}.values())
        if new:
            instance = get_grader(grader)
            try:
                grades = instance.grade([SELF_CHECKS[grader].format(p.answer) for p in new], new)
            finally:
                instance.close()
            ACCEPTED.update({(grader, p.answer): g.correct for p, g in zip(new, grades)})
        for setting, spec, checked in sets:
            bad = [p for p in checked if not ACCEPTED[grader, p.answer]]
            if bad:
                message = (
                    f"{setting}: {len(bad)} of the first {len(checked)} gold answers of {spec} are not recognised by the "
                    f"{grader!r} grader (e.g. {bad[0].id}: {bad[0].answer[:60]!r}); check the answer column or the grader setting"
                )
                (plan.errors if 2 * len(bad) > len(checked) else plan.warnings).append(message)


def check_context(plan: Plan, setting: str, spec: str, prompt_tokens: int, new_tokens: int, context: int) -> None:
    if prompt_tokens + new_tokens > context:
        plan.errors.append(
            f"{setting}: {new_tokens} new tokens after the longest prompt of {spec} ({prompt_tokens} tokens) "
            f"make {prompt_tokens + new_tokens}, beyond the model's context of {context} (max_position_embeddings)"
        )


def parameters(count: int) -> str:
    return f"{count / 1e9:.2f}B" if count >= 1e9 else f"{count / 1e6:.1f}M"


def visible_gpu_memory() -> float | None:
    import torch

    return float(torch.cuda.get_device_properties(0).total_memory) if torch.cuda.is_available() else None


def memory_lines(plan: Plan, parts: dict[str, float], peak: float, gpu: float | None, advice: str) -> None:
    shown = ", ".join(f"{k} {v / GIB:.1f}" for k, v in parts.items() if v)
    plan.lines.append(f"memory per process (GiB, estimated): {shown}; peak {peak / GIB:.1f}")
    if gpu is None:
        plan.lines.append("memory: no GPU visible and no --gpu-memory given, so the fit is not checked")
    elif peak > gpu:
        plan.warnings.append(f"the estimated peak of {peak / GIB:.1f} GiB per process does not fit the GPU's {gpu / GIB:.0f} GiB: {advice}")
    else:
        plan.lines.append(f"memory: fits the GPU's {gpu / GIB:.0f} GiB ({peak / gpu:.0%})")


def exit_code(plan: Plan) -> int:
    return 1 if plan.errors else 0

