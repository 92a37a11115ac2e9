"""`sps train --dry-run` / `sps eval --dry-run` on every shipped recipe, with the hub replaced by local
Qwen2.5-Math-shaped configs, a small tokenizer and local data; broken recipes fail naming the setting."""

import json
from pathlib import Path

import pytest
from dry_run_fixtures import data_folder, qwen_folder, small_tokenizer

from sps.cli import main
from sps.config import load_config
from sps.paths import data_dir
from sps.training.config import TrainConfig
from sps.training.memory import (
    GIB,
    Layout,
    ModelShape,
    parse_size,
    peak_memory,
    rollout_memory,
    training_memory,
)
from sps.training.plan import train_plan

REPO = Path(__file__).resolve().parents[1]
RECIPES = sorted((REPO / "configs").rglob("*.yaml"))
pytestmark = pytest.mark.skipif(data_dir() is None, reason="needs the shared data folder")


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """Local stand-ins: two Qwen-shaped folders, a SmolLM2-shaped one, and a data folder."""
    from transformers import LlamaConfig

    root = tmp_path_factory.mktemp("dry_run")
    shared = data_dir()
    texts = [json.loads(line)["problem"] for name in ("math500", "aime25", "gsm8k_test") for line in (shared / f"{name}.jsonl").read_text().splitlines()]
    tokenizer = small_tokenizer(texts)
    models = {hub: qwen_folder(root, hub, tokenizer) for hub in ("Qwen/Qwen2.5-Math-1.5B", "Qwen/Qwen2.5-Math-7B")}
    smol = root / "smollm2"
    LlamaConfig(hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9, num_key_value_heads=3,
                vocab_size=49152, max_position_embeddings=8192, tie_word_embeddings=True).save_pretrained(smol)
    tokenizer.save_pretrained(smol)
    models["smollm2-135m-instruct"] = smol
    return {"models": models, "data": data_folder(root, shared), "root": root}


def recipe_overrides(path: Path, env) -> list[str]:
    cfg = load_config(TrainConfig, path)
    model = env["models"].get(cfg.model)
    return (["--model", str(model)] if model else []) + ["--data_dir", str(env["data"])]


def test_every_shipped_recipe_passes_its_dry_run(env):
    assert len([r for r in RECIPES if r.parent.name == "paper"]) == 12
    for recipe in RECIPES:
        cfg = load_config(TrainConfig, recipe, recipe_overrides(recipe, env))
        processes = 8 if recipe.parent.name == "paper" else 1
        plan = train_plan(cfg, Layout(processes))
        assert plan.errors == [], f"{recipe.name}: {plan.errors}"
        assert any(line.startswith("memory per process") for line in plan.lines), recipe.name


def test_the_plan_of_a_paper_recipe_counts_what_the_run_does(env, capsys):
    recipe = REPO / "configs/paper/qwen2.5-math-7b_sps_5k.yaml"
    code = main(["train", "--config", str(recipe), "--dry-run", "--nproc", "8", *recipe_overrides(recipe, env)])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "7.62B parameters" in out  # Qwen2.5-Math-7B's count, from the meta-device model
    assert "steps: 700 (350 rl, 350 irl); each 128 prompts x 8 = 1024 rollouts (128 per process on 8)" in out
    assert "4 minibatches of 32 rows per process, micro-batches of 2" in out
    assert "rollouts: 716,800 in all; at most 2,150.4M completion tokens" in out
    # 8 evaluations (steps 0, 100, ..., 700) over 500 + 5 x 30 + 20 problems x 128 samples.
    assert "evaluations: 8 (step 0, every 100 steps and the last)" in out and f"{670 * 128:,} samples each" in out
    assert "checkpoints: 14 saved (every 50 steps and the last), 1 kept" in out and "best by Avg@n" in out


@pytest.mark.parametrize(
    "overrides, setting",
    [
        (["--max_completion_length", "4000"], "max_completion_length"),
        (["--prompts_per_step", "100"], "prompts_per_step"),
        (["--steps_per_generation", "3"], "steps_per_generation"),
        (["--train_data", "BAD_COLUMNS"], "train_data"),
        (["--train_size", "500", "--train_data", "SHORT"], "train_size"),
    ],
)
def test_a_broken_recipe_fails_naming_the_setting(env, capsys, overrides, setting):
    bad = env["root"] / "bad_columns.jsonl"  # a question/solution file: no 'problem' column
    bad.write_text("".join(json.dumps({"question": f"q{i}", "answer": "1"}) + "\n" for i in range(5)))
    short = env["root"] / "short.jsonl"
    short.write_text("".join(json.dumps({"id": str(i), "problem": f"{i}+1?", "answer": str(i + 1)}) + "\n" for i in range(40)))
    overrides = [{"BAD_COLUMNS": str(bad), "SHORT": str(short)}.get(o, o) for o in overrides]
    recipe = REPO / "configs/paper/qwen2.5-math-1.5b_grpo_3k.yaml"
    code = main(["train", "--config", str(recipe), "--dry-run", "--nproc", "8", *recipe_overrides(recipe, env), *overrides])
    errors = [line for line in capsys.readouterr().out.splitlines() if line.startswith("error:")]
    assert code == 1 and errors and all(e.startswith(f"error: {setting}") for e in errors), errors
    if setting == "train_data":
        assert "'problem' is missing" in errors[0]


def test_offline_a_recipe_model_is_sized_from_its_known_shape(env):
    recipe = REPO / "configs/paper/qwen2.5-math-1.5b_sps_10k.yaml"
    cfg = load_config(TrainConfig, recipe, ["--data_dir", str(env["data"]), "--train_data", str(env["data"] / "openr1_math.jsonl")])
    plan = train_plan(cfg, Layout(8))  # the tests run with HF_HUB_OFFLINE=1: the hub id cannot load
    assert plan.errors == [] and "is out of reach" in plan.warnings[0]
    assert plan.lines[0].startswith("model: Qwen/Qwen2.5-Math-1.5B, 1.54B parameters, 28 layers, hidden 1536")


def test_a_model_that_does_not_fit_is_reported(env, capsys):
    recipe = REPO / "configs/paper/qwen2.5-math-7b_grpo_3k.yaml"
    assert main(["train", "--config", str(recipe), "--dry-run", "--gpu-memory", "40GB", *recipe_overrides(recipe, env)]) == 0
    out = capsys.readouterr().out
    assert "does not fit the GPU's 40 GiB: lower micro_batch_size (now 2)" in out
    # FSDP over 8 processes (parallelism fsdp, the default) shards weights, gradients and optimizer
    # state; ddp keeps all of them on every process.
    main(["train", "--config", str(recipe), "--dry-run", "--nproc", "8", "--gpu-memory", "80GB", *recipe_overrides(recipe, env)])
    assert "memory: fits the GPU's 80 GiB" in capsys.readouterr().out
    main(["train", "--config", str(recipe), "--dry-run", "--nproc", "8", "--gpu-memory", "80GB", "--parallelism", "ddp", *recipe_overrides(recipe, env)])
    assert "does not fit the GPU's 80 GiB" in capsys.readouterr().out


def test_eval_dry_run(env, capsys):
    model = env["models"]["Qwen/Qwen2.5-Math-1.5B"]
    args = ["eval", "--dry-run", "--model", str(model), "--benchmark", "math500,gpqa_diamond", "--data-dir", str(env["data"]), "--n", "128"]
    assert main([*args, "--max-new-tokens", "3000"]) == 0
    out = capsys.readouterr().out
    assert "math500: 500 problems x n 128 = 64,000 samples" in out and "gpqa_diamond: 20 problems x n 128" in out
    assert "grader choice" in out
    assert main([*args, "--max-new-tokens", "4000"]) == 1
    assert "error: --max-new-tokens: 4000 new tokens after the longest prompt of math500" in capsys.readouterr().out


def test_memory_model_by_hand():
    shape = ModelShape(params=1000, hidden=4, intermediate=8, layers=2, kv_dim=2, vocab=10, context=64)
    parts = training_memory(shape, "bfloat16", micro_batch=3, prompt_tokens=5, completion_tokens=7, reference=True)
    # bf16 compute on fp32 master weights: weights, gradients and AdamW's moments in fp32, the bf16
    # copy the forward uses, and a frozen bf16 reference.
    assert parts["weights"] == parts["gradients"] == 4000 and parts["optimizer"] == 8000
    assert parts["reference"] == parts["compute_weights"] == 2000
    assert parts["activations"] == 3 * 12 * 2 * (7 * 4 + 2 * 2 + 4 * 8) * 2  # tokens x layers x values x bytes
    # The LM head a chunk at a time (all 21 tokens in one): two fp32 buffers and the bf16 gradient per
    # logit, the head's fp32 gradient and its bf16 copy.
    assert parts["logits"] == 21 * 10 * (4 + 4 + 2) + 10 * 4 * 4 + 10 * 4 * 2
    whole = training_memory(shape, "bfloat16", 3, 5, 7, chunk_logits=False)
    assert whole["logits"] == 3 * 8 * 10 * (2 + 4 + 4)
    sharded = training_memory(shape, "float32", 3, 5, 7, Layout(4, shard_params=True))
    assert sharded["weights"] == 1000 and sharded["optimizer"] == 2000 and sharded["compute_weights"] == 0
    only_optimizer = training_memory(shape, "float32", 3, 5, 7, Layout(4, shard_optimizer=True))
    assert only_optimizer["weights"] == 4000 and only_optimizer["optimizer"] == 2000
    rollout = rollout_memory(shape, "bfloat16", sequences=4, prompt_tokens=5, completion_tokens=7)
    assert rollout == {"kv_cache": 4 * 12 * 2 * 2 * 2 * 2, "sampling_logits": 4 * 10 * 4}
    persistent = 4000 + 8000 + 2000
    training = 4000 + 2000 + parts["activations"] + parts["logits"]
    assert peak_memory(parts, rollout) == persistent + max(training, sum(rollout.values()))
    assert peak_memory(parts, None, vllm_reserve=10.0) == persistent + 10.0 + training
    assert parse_size("80GB") == parse_size("80 GiB") == 80 * GIB
    with pytest.raises(ValueError, match="--gpu-memory"):
        parse_size("lots")
