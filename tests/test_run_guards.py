"""Runtime guards on real metrics rows, several eval benchmarks per evaluation, and the kept best policy."""

import json
from dataclasses import replace

from sps.training.config import TrainConfig
from sps.training.distributed import World
from sps.training.guards import GUARD_STEPS, guard_warnings
from sps.training.run import RunFiles
from sps.training.trainer import train


def tiny_run(model, output_dir, **changes) -> TrainConfig:
    cfg = TrainConfig(
        model=str(model), train_size=64, prompts_per_step=8, num_generations=4, max_completion_length=32,
        learning_rate=1e-3, max_steps=4, eval_every=2, eval_limit=8, eval_n=4, probe_problems=4, save_every=4,
        output_dir=str(output_dir), threads=1,
    )
    return replace(cfg, **changes)


def test_a_run_cut_at_its_completion_limit_says_so_and_keeps_its_best_policy(random_llama, tmp_path, capsys):
    # A random model: at 4 tokens every rollout is cut, and every group earns 0.
    cfg = tiny_run(random_llama, tmp_path / "run", max_completion_length=4, eval_benchmark="countdown-val,countdown-test", keep_best=True)
    run_dir = train(cfg, show_progress=False)
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert all(r["completions/truncated_fraction"] > 0.5 and r["frac_reward_zero_std"] == 1.0 for r in rows)
    assert ["warnings" in r for r in rows] == [False, False, True, True]  # from the third step in a row
    truncated = sum(r["completions/truncated_fraction"] for r in rows[:3]) / 3
    assert rows[2]["warnings"] == [
        f"{truncated:.0%} truncated: raise max_completion_length",
        "100% of groups without reward variance: change train_data or num_generations",
    ]
    out = capsys.readouterr().out
    said = f"WARNING at step 3: {truncated:.0%} of rollouts were cut at max_completion_length (4 tokens) for 3 steps in a row"
    assert out.count(said) == 1 and "WARNING at step 4" not in out  # said once, when it starts
    assert "most prompts are never solved: check prompt_template" in out
    # Two eval benchmarks: one folder each per evaluation, and their list.
    step2 = run_dir / "evals" / "step_000002"
    assert (step2 / "countdown-val" / "metrics.json").is_file() and (step2 / "countdown-test" / "metrics.json").is_file()
    listed = json.loads((step2 / "benchmarks.json").read_text())
    assert listed["benchmarks"] == ["countdown-val", "countdown-test"] and listed["mean_avg_at_n"] == 0.0
    # All evaluations score 0: the first (the start model) stays the best; a tie does not replace it.
    best = json.loads((run_dir / "best" / "best.json").read_text())
    assert best["step"] == 0 and (run_dir / "best" / "config.json").is_file()


def test_keep_if_best_replaces_only_a_worse_policy(random_llama, tmp_path):
    from sps.models.loading import load_policy

    model, tokenizer = load_policy(str(random_llama), "float32", "cpu")
    run = RunFiles(tmp_path, TrainConfig(eval_benchmark="countdown-val"), World())
    for step, avg in [(0, 0.10), (50, 0.25), (100, 0.20), (150, 0.25)]:
        run.keep_if_best(step, avg, model, tokenizer)
    assert json.loads((tmp_path / "best" / "best.json").read_text()) == {"step": 50, "avg_at_n": 0.25, "eval_benchmark": "countdown-val"}


def row(truncated: float, zero_std: float, reward: float) -> dict:
    return {"completions/truncated_fraction": truncated, "frac_reward_zero_std": zero_std, "reward": reward}


def test_guards_need_several_bad_steps_in_a_row():
    cfg = TrainConfig(max_completion_length=256, num_generations=8)
    bad = row(0.9, 0.1, 0.3)
    assert guard_warnings([bad] * (GUARD_STEPS - 1), cfg) == []
    assert guard_warnings([bad, row(0.4, 0.1, 0.3), bad], cfg) == []  # the streak was broken
    [(metric, short, message)] = guard_warnings([bad] * GUARD_STEPS, cfg)
    assert metric == "completions/truncated_fraction" and short == "90% truncated: raise max_completion_length"
    assert "max_completion_length (256 tokens)" in message
    # Groups that all succeed: the advice is harder data, not a longer limit.
    [(metric, _, message)] = guard_warnings([row(0.0, 0.95, 0.97)] * GUARD_STEPS, cfg)
    assert metric == "frac_reward_zero_std" and "always solved: use harder train_data or raise num_generations" in message
    assert "num_generations (8)" in message
