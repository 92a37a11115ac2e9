"""`sps eval --dry-run`: model, benchmarks, prompt lengths, samples and the sampling memory, checked
before any weights are loaded (the checks: sps.preflight)."""

from __future__ import annotations

from sps.evaluation.evaluate import DEFAULT_NEW_TOKENS
from sps.preflight import (
    Plan,
    check_answers,
    check_context,
    check_data,
    memory_lines,
    model_files,
    parameters,
    visible_gpu_memory,
)
from sps.training.memory import DTYPE_BYTES, count_parameters, rollout_memory, shape_of


def eval_plan(
    model: str, specs: list[str], n: int, max_new_tokens: int | None, batch_size: int, dtype: str = "auto",
    data_dir: str | None = None, prompt_template: str | None = None, grader: str | None = None,
    limit: int | None = None, gpu_memory: float | None = None,
) -> Plan:
    """The dry run of `sps eval`: model, benchmarks, lengths, samples and the sampling memory."""
    plan = Plan()
    try:
        config, tokenizer = model_files(model, plan)
    except (OSError, ValueError) as e:
        plan.errors.append(f"--model: could not load the config and tokenizer of {model!r}: {e}")
        return plan
    shape = shape_of(config, count_parameters(config))
    dtype = "bfloat16" if dtype == "auto" else dtype
    plan.lines.append(f"model: {model}, {parameters(shape.params)} parameters, context {shape.context}; {dtype}")
    samples, longest, most_new = 0, 0, 0
    for spec in specs:
        bench, lengths = check_data(plan, "--benchmark", spec, data_dir or "", tokenizer, prompt_template or "", grader or "", None)
        if bench is None:
            continue
        longest = max(longest, max(lengths))
        new_tokens = max_new_tokens or max(1, min(DEFAULT_NEW_TOKENS, shape.context - max(lengths)))  # as sps eval fits it
        most_new = max(most_new, new_tokens)
        check_context(plan, "--max-new-tokens", spec, max(lengths), new_tokens, shape.context)
        problems = min(limit or len(bench.problems), len(bench.problems))
        samples += problems * n
        plan.lines.append(f"{bench.name}: {problems} problems x n {n} = {problems * n:,} samples")
    check_answers(plan)
    plan.lines.append(f"samples: {samples:,} in all, at most {samples * most_new / 1e6:,.1f}M new tokens ({most_new} per sample)")
    weights = shape.params * DTYPE_BYTES[dtype]
    sampling = rollout_memory(shape, dtype, batch_size, longest, most_new)
    memory_lines(
        plan, {"weights": weights, **sampling}, weights + sum(sampling.values()), gpu_memory or visible_gpu_memory(),
        f"lower --batch-size (now {batch_size})",
    )
    return plan
