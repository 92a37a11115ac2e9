"""A newcomer's first hour (issue 39): never a stale result, one vocabulary for train and eval, TRL
habits accepted, progress where output goes to a file. On the tiny random model and real files."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from sps import evaluate
from sps.cli import main
from sps.io import read_jsonl

pytestmark = pytest.mark.long  # real training runs and subprocesses: the second stage of `make test`

REWARD = '''
def score(completions, **_):
    return [{value} for c in completions]
'''


def rows_file(path: Path, count: int = 3) -> Path:
    path.write_text("".join(json.dumps({"id": f"p{i}", "problem": f"{i} 7>", "answer": str(i)}) + "\n" for i in range(count)))
    return path


def reward_file(path: Path, value: str) -> str:
    path.write_text(REWARD.format(value=value))
    return f"{path}:score"


def small_eval(model, data, out, reward, **extra):
    return evaluate(model, str(data), out, n=2, temperature=1.0, max_completion_length=8, prompt_template="plain",
                    reward_funcs=[reward], **extra)


# ---- 1. stale results --------------------------------------------------------------------------


def test_a_changed_reward_is_named_and_regrade_scores_the_same_samples_again(random_llama, tmp_path):
    data, out = rows_file(tmp_path / "mine.jsonl"), tmp_path / "eval"
    reward = reward_file(tmp_path / "mine.py", "0.06")
    assert small_eval(random_llama, data, out, reward)["mean_reward"] == pytest.approx(0.06)
    before = read_jsonl(out / "samples.jsonl")
    reward_file(tmp_path / "mine.py", "1.0")  # same file, same function name, another body
    with pytest.raises(ValueError, match=rf"the reward function {tmp_path / 'mine.py'}:score changed since its samples were scored; use regrade=True to score them again, overwrite=True"):
        small_eval(random_llama, data, out, reward)
    assert small_eval(random_llama, data, out, reward, regrade=True)["mean_reward"] == pytest.approx(1.0)
    after = read_jsonl(out / "samples.jsonl")
    assert [r["completion"] for r in after] == [r["completion"] for r in before]  # the samples were kept
    assert small_eval(random_llama, data, out, reward)["mean_reward"] == pytest.approx(1.0)  # and now match


def test_changed_data_or_model_is_refused_naming_it(random_llama, tmp_path, capsys):
    data, out = rows_file(tmp_path / "mine.jsonl"), tmp_path / "eval"
    reward = reward_file(tmp_path / "mine.py", "0.5")
    small_eval(random_llama, data, out, reward)
    rows_file(data, 2)  # same file name, other content
    with pytest.raises(ValueError, match=r": the data changed since its samples were made; use another output folder, or overwrite=True"):
        small_eval(random_llama, data, out, reward)
    rows_file(data, 3)
    model = tmp_path / "model"
    shutil.copytree(random_llama, model)
    small_eval(model, data, tmp_path / "eval2", reward)
    weights = next(model.glob("*.safetensors"))
    weights.write_bytes(weights.read_bytes())  # the same bytes, written again: a retrained model looks so
    os.utime(weights, ns=(1, 1))
    args = ["eval", "--model", str(model), "--benchmark", str(data), "--n", "2", "--temperature", "1.0", "--max-new-tokens", "8",
            "--prompt-template", "plain", "--reward-funcs", reward, "--out", str(tmp_path / "eval2")]
    assert main(args) == 2
    assert ": the model changed since its samples were made; use another output folder, or --overwrite" in capsys.readouterr().err


# ---- 5. one vocabulary ---------------------------------------------------------------------------


def test_eval_takes_train_s_names_in_either_spelling(random_llama, tmp_path):
    data = rows_file(tmp_path / "mine.jsonl")
    reward = reward_file(tmp_path / "mine.py", "1.0")
    args = ["eval", "--model", str(random_llama), "--benchmark", str(data), "--num_generations", "3", "--temperature", "1.0",
            "--max_completion_length", "8", "--prompt_template", "plain", "--reward_funcs", reward, "--output_dir", str(tmp_path / "e")]
    assert main(args) == 0
    settings = json.loads((tmp_path / "e" / "settings.json").read_text())
    assert (settings["n"], settings["max_new_tokens"], settings["reward_funcs"]) == (3, 8, [reward])


def test_python_evaluate_takes_the_cli_s_options_and_keys_pass_at_k_by_int(random_llama, tmp_path):
    from fixtures.rewards import contains_seven

    data = rows_file(tmp_path / "mine.jsonl")
    m = evaluate(random_llama, str(data), tmp_path / "e", num_generations=4, temperature=1.0, max_new_tokens=8, top_k=5,
                 prompt_template="plain", reward_funcs=contains_seven, max_reward_failures=0)  # one callable, TRL-style
    assert set(m["pass_at_k"]) == {1, 2, 4} and set(m["maj_at_k_ci"]) == {1, 2, 4}
    assert json.loads((tmp_path / "e" / "settings.json").read_text())["top_k"] == 5
    assert set(json.loads((tmp_path / "e" / "metrics.json").read_text())["pass_at_k"]) == {"1", "2", "4"}  # JSON: strings
    with pytest.raises(TypeError, match="unexpected keyword argument 'max_tokens'"):
        evaluate(random_llama, str(data), max_tokens=8)


# ---- 6. progress where output is not a terminal --------------------------------------------------


def test_eval_and_train_print_plain_progress_lines_into_a_file(random_llama, tmp_path):
    from test_reliability import config_file, settings

    env = {**os.environ, "SPS_PROGRESS_SECONDS": "0.001"}
    data = rows_file(tmp_path / "mine.jsonl", 4)
    reward = reward_file(tmp_path / "mine.py", "1.0")
    command = [sys.executable, "-m", "sps.cli", "eval", "--model", str(random_llama), "--benchmark", str(data), "--n", "2",
               "--batch-size", "2", "--temperature", "1.0", "--max-new-tokens", "8", "--prompt-template", "plain",
               "--reward-funcs", reward, "--out", str(tmp_path / "e")]
    out = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300, check=True).stdout
    lines = [line for line in out.splitlines() if line.startswith("eval mine: ")]
    assert len(lines) >= 2 and "8/8 samples" in lines[-1] and "samples/s" in lines[0] and "s left" in lines[0]
    config = config_file(tmp_path, "run", **settings(random_llama, tmp_path / "run", max_steps=3))
    out = subprocess.run([sys.executable, "-m", "sps.cli", "train", "--config", str(config)], capture_output=True, text=True,
                         env=env, timeout=300, check=True).stdout
    lines = [line for line in out.splitlines() if line.startswith("train: ")]
    assert [line.split(",")[0] for line in lines] == ["train: 1/3 steps", "train: 2/3 steps", "train: 3/3 steps"]
    assert "reward" in lines[0]


# ---- 2. own data means own evaluation -------------------------------------------------------------


def test_own_data_with_the_default_eval_benchmark_is_evaluated_on_rows_held_out_of_it(random_llama, tmp_path, capsys):
    from test_reliability import config_file, settings

    data = rows_file(tmp_path / "mine.jsonl", 20)
    reward = reward_file(tmp_path / "mine.py", "1.0")
    run_dir = tmp_path / "run"
    config = config_file(tmp_path, "run", **settings(random_llama, run_dir, train_data=str(data), train_size=0, reward_funcs=[reward], prompt_template="plain",
                                                     eval_every=0, eval_n=2, max_steps=1))
    assert main(["train", "--config", str(config)]) == 0
    assert "NOTICE: evaluating on the last 2 rows of" in capsys.readouterr().out
    samples = read_jsonl(run_dir / "evals" / "step_000001" / "samples.jsonl")
    assert sorted({s["problem_id"] for s in samples}) == ["p18", "p19"]  # own rows, never Countdown's
    assert all(s["reward"] == 1.0 for s in samples)
    from sps.tasks.benchmarks import load_benchmark
    from sps.training.config import TrainConfig
    from sps.training.trainer import eval_benchmarks

    trained, [held] = eval_benchmarks(TrainConfig(train_data=str(data)), load_benchmark(str(data)))
    assert [p.id for p in trained.problems] == [f"p{i}" for i in range(18)] and [p.id for p in held.problems] == ["p18", "p19"]


# ---- 3. every set-up check before anything is written ---------------------------------------------


@pytest.mark.parametrize(("changes", "message"), [
    ({"train_size": 512}, "train_size 512 is more than the 16 problems in {data}: set train_size <= 16, or 0 for all of them"),
    ({"train_size": 0, "prompts_per_step": 32}, "prompts_per_step 32 is more than the 16 problems in {data}: set prompts_per_step <= 16"),
    ({"train_size": 8, "prompts_per_step": 12}, "prompts_per_step 12 is more than the 8 problems of the fixed set (train_size): set prompts_per_step <= 8"),
    ({"train_size": 0, "peft": {"r": 4, "target_modules": ["q_proj", "query"]}},
     "peft.target_modules: the model has no module named 'query'; its linear layers are down_proj, gate_proj, k_proj, lm_head, o_proj, q_proj, up_proj, v_proj"),
    ({"train_size": 0, "prompt_template": "chat"}, "prompt template 'chat' needs a tokenizer with a chat template; this one has none"),
    ({"train_size": 0, "steps_per_generation": 3}, "config: steps_per_generation (3) must divide the 16 rollouts of a step (prompts_per_step x num_generations) into equal minibatches"),
    ({"train_size": 0, "model": "/no/such/model"}, "model '/no/such/model' is neither an existing folder nor a hub id of the form owner/name"),
    ({"train_size": 0, "reward_funcs": ["/no/such/reward.py:score"]}, "reward function '/no/such/reward.py:score': the file /no/such/reward.py does not exist"),
])
def test_a_failed_start_leaves_no_folder_and_names_the_option(random_llama, tmp_path, capsys, changes, message):
    from test_reliability import config_file, error_of, settings

    data = rows_file(tmp_path / "mine.jsonl", 16)
    run_dir = tmp_path / "run"
    values = {**settings(random_llama, run_dir, train_data=str(data), prompt_template="plain"), **changes}
    bad = config_file(tmp_path, "bad", **values)
    assert main(["train", "--config", str(bad)]) == 2
    assert error_of(capsys) == "sps train: error: " + message.format(data=data)
    assert not run_dir.exists()
    fixed = config_file(tmp_path, "fixed", **settings(random_llama, run_dir, train_data=str(data), prompt_template="plain", train_size=0, max_steps=1))
    assert main(["train", "--config", str(fixed)]) == 0


# ---- 4. TRL habits ---------------------------------------------------------------------------------


def test_partials_callable_objects_and_numpy_scalars_are_rewards(random_llama, tmp_path):
    import functools

    from fixtures.rewards import Constant, numpy_half, scaled

    data = rows_file(tmp_path / "mine.jsonl")
    for i, (reward, value) in enumerate([(functools.partial(scaled, scale=0.25), 0.25), (Constant(0.75), 0.75), (numpy_half, 0.5)]):
        m = evaluate(random_llama, str(data), tmp_path / f"e{i}", n=2, temperature=1.0, max_completion_length=8, prompt_template="plain",
                     reward_funcs=reward)
        assert m["mean_reward"] == pytest.approx(value)
    # Another partial of the same function is another reward: its folder is not reused unnoticed.
    with pytest.raises(ValueError, match="other settings"):
        evaluate(random_llama, str(data), tmp_path / "e0", n=2, temperature=1.0, max_completion_length=8, prompt_template="plain",
                 reward_funcs=functools.partial(scaled, scale=0.5))


def test_a_lambda_that_cannot_be_pickled_is_named(random_llama, tmp_path):
    with pytest.raises(ValueError, match="cannot be pickled for the reward workers"):
        evaluate(random_llama, str(rows_file(tmp_path / "mine.jsonl")), tmp_path / "e", n=2, reward_funcs=lambda completions, **_: [1.0])


def test_train_takes_one_callable_and_a_lora_config(random_llama, tmp_path):
    from fixtures.rewards import contains_seven
    from peft import LoraConfig
    from test_reliability import settings

    from sps import TrainConfig, train

    values = {k: v for k, v in settings(random_llama, tmp_path / "run", max_steps=1).items() if k != "reward_funcs"}
    run_dir = train(TrainConfig(**values, reward_funcs=contains_seven, peft=LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj"])))
    saved = json.loads(json.dumps(__import__("yaml").safe_load((run_dir / "config.yaml").read_text())))
    assert saved["peft"] == {"r": 4, "lora_alpha": 8.0, "lora_dropout": 0.0, "target_modules": ["q_proj"]}
    assert saved["reward_funcs"][0].endswith("rewards.py:contains_seven")
    other = {**values, "output_dir": str(tmp_path / "run2")}
    train(TrainConfig(**other, reward_funcs=[contains_seven]), peft_config=LoraConfig(r=2))
    assert (tmp_path / "run2" / "checkpoints" / "step_000001" / "adapter_config.json").is_file()
    with pytest.raises(ValueError, match=r"peft_config: sps trains a LoraConfig's r, lora_alpha, lora_dropout and target_modules; bias='all' is not supported"):
        train(TrainConfig(**{**values, "output_dir": str(tmp_path / "run3")}, reward_funcs=contains_seven), peft_config=LoraConfig(r=2, bias="all"))
    assert not (tmp_path / "run3").exists()


def test_a_trl_reward_needing_trainer_state_is_refused_at_start_and_a_missing_column_lists_the_columns(random_llama, tmp_path, capsys):
    from test_reliability import config_file, error_of, settings

    rewards = Path(__file__).parent / "fixtures" / "rewards.py"
    run_dir = tmp_path / "run"
    config = config_file(tmp_path, "c", **settings(random_llama, run_dir, reward_funcs=[f"{rewards}:trl_style"]))
    assert main(["train", "--config", str(config)]) == 2
    message = error_of(capsys)
    assert f"reward function {rewards}:trl_style: requires 'trainer_state', which sps does not pass; it passes prompts, completions, completion_ids, id, problem, answer" in message
    assert not run_dir.exists()
    data = rows_file(tmp_path / "mine.jsonl")
    with pytest.raises(ValueError, match=r"raised KeyError: 'target'; the rows have no column 'target', only answer, completion_ids, completions, id, problem, prompts"):
        evaluate(random_llama, str(data), tmp_path / "e", n=2, temperature=1.0, max_completion_length=8, prompt_template="plain",
                 reward_funcs=f"{rewards}:reads_target")


def test_a_finished_run_is_not_resumed_after_its_reward_or_data_changed(random_llama, tmp_path, capsys):
    from test_reliability import config_file, error_of, settings

    data = rows_file(tmp_path / "mine.jsonl", 8)
    reward = reward_file(tmp_path / "mine.py", "0.06")
    run_dir = tmp_path / "run"
    values = settings(random_llama, run_dir, train_data=str(data), train_size=0, prompt_template="plain", reward_funcs=[reward], max_steps=2)
    config = config_file(tmp_path, "c", **values)
    assert main(["train", "--config", str(config)]) == 0
    reward_file(tmp_path / "mine.py", "1.0")  # the same file and function name, another body
    assert main(["train", "--config", str(config)]) == 2
    assert error_of(capsys) == (f"sps train: error: {run_dir}: the reward function {reward} changed since the run began, and resuming "
                                "would mix numbers of the two; choose another output_dir, or rerun with --overwrite to start over in it")
    from sps import TrainConfig, train

    with pytest.raises(ValueError, match=r"rerun with overwrite=True to start over in it"):
        train(TrainConfig(**values))
    rows_file(data, 9)
    with pytest.raises(ValueError, match=r": the data, the reward function .* changed since the run began"):
        train(TrainConfig(**values))
    assert main(["train", "--config", str(config), "--overwrite"]) == 0
    assert [r["reward"] for r in read_jsonl(run_dir / "metrics.jsonl")] == [1.0, 1.0]  # the new reward's, from step 1


def test_python_evaluate_takes_every_option_of_sps_eval():
    import inspect

    from sps.cli import build_parser

    parser = build_parser()
    eval_parser = next(a for a in parser._subparsers._group_actions[0].choices.items() if a[0] == "eval")[1]
    cli = {a.dest for a in eval_parser._actions if a.dest != "help"} - {"dry_run", "gpu_memory"}  # the dry run is the CLI's
    python = set(inspect.signature(evaluate).parameters) - {"aliases"}
    renamed = {"max_new_tokens": "max_completion_length", "out": "output_dir"}  # CLI dest -> Python name (both take both)
    assert {renamed.get(name, name) for name in cli} == python
