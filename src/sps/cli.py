"""`sps <command>`: parse arguments and call the library. No logic lives here."""

from __future__ import annotations

import argparse
import errno
import json
import os
import sys
from dataclasses import asdict
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    """Run one command. A user error (a bad setting, a missing file, a folder in use) is one line on
    stderr naming the input, and exit code 2; Ctrl-C and SIGTERM stop the work where it is (what
    was written stays) and exit 130 and 143."""
    from sps.interrupts import Interrupted, raise_on_sigterm
    from sps.io import DiskFull
    from sps.plugins import load_plugins, plugins_in

    argv = hyphenated(sys.argv[1:] if argv is None else argv)
    try:
        load_plugins(plugins_in(argv))  # before the parser: `--help` lists the methods they register
    except ValueError as e:
        print(f"sps: error: {e}", file=sys.stderr)
        return 2
    parser = build_parser()
    # Only `sps train` takes free-form --key value overrides; other commands reject unknown options.
    args, extra = parser.parse_known_args(argv)
    if extra and args.command != "train":
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args.overrides = extra
    raise_on_sigterm()
    try:
        return args.run(args) or 0
    except (ValueError, DiskFull, FileNotFoundError, NotADirectoryError, IsADirectoryError, FileExistsError) as e:
        print(f"sps {args.command}: error: {e}", file=sys.stderr)
        return 2
    except (KeyboardInterrupt, Interrupted) as e:
        where = e.where if isinstance(e, Interrupted) else "interrupted"
        print(f"sps {args.command}: {where}; rerun the same command to resume", file=sys.stderr)
        return e.exit_code if isinstance(e, Interrupted) else 130
    except OSError as e:
        if e.errno != errno.ENOSPC:
            raise
        print(f"sps {args.command}: error: no space left on the device holding {e.filename or 'the output folder'}; "
              "nothing written before is lost (every file is written whole or not at all): free space and rerun "
              "the same command to resume", file=sys.stderr)
        return 2


def hyphenated(argv: list[str]) -> list[str]:
    """Every command takes --some_option as --some-option, as `sps train` takes both (train's
    settings keep their own spelling: they are dataclass fields)."""
    command = next((a for a in argv if not a.startswith("-")), None)
    if command == "train":
        return argv
    return [a.split("=", 1)[0].replace("_", "-") + a[len(a.split("=", 1)[0]):] if a.startswith("--") else a for a in argv]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sps", description="RL post-training of LLM reasoners with SPS.")
    commands = parser.add_subparsers(dest="command", required=True)
    add_eval(commands)
    add_grade(commands)
    add_train(commands)
    add_testbed(commands)
    add_analyze(commands)
    add_demo(commands)
    add_export(commands)
    return parser


def add_eval(commands) -> None:
    from sps.training.config import TrainConfig

    p = commands.add_parser("eval", help="sample n completions per problem and report Pass@k, Avg@n, Maj@k")
    p.add_argument("--model", required=True, help="model folder, hub id, smollm2-135m-instruct, or testbed (the built-in testbed model)")
    p.add_argument("--benchmark", required=True, help="comma-separated names, JSON Lines paths, hf:owner/name[:split] or rg:<task>[:train|val|test][?settings] (reasoning-gym)")
    p.add_argument("--n", "--samples", "--num-generations", dest="n", type=int, default=8,
                   help="samples per problem (under torchrun write --samples: torchrun takes --n for one of its own options)")
    p.add_argument("--temperature", type=float, default=0.7)
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--top-k", type=int, default=0, help="0 switches top-k off")
    p.add_argument("--max-completion-length", "--max-new-tokens", dest="max_new_tokens", type=int, default=None, help="most tokens per completion (default: 1024, or less where the model's context leaves less after the longest prompt)")
    p.add_argument("--limit", type=int, default=None, help="evaluate only the first N problems (0: all)")
    p.add_argument("--prompt-template", default=None, help="qwen-boxed, chat, chat-answer or plain (default: the benchmark's)")
    p.add_argument("--grader", default=None, help="math, choice, countdown or reasoning_gym (default: the benchmark's)")
    p.add_argument("--reward-funcs", default="", help="comma-separated rewards, summed: grader names and package.module:function or path/file.py:function (default: the grader); a sample is correct when its reward reaches --success-threshold")
    p.add_argument("--reward-weights", default="", help="comma-separated weight per --reward-funcs entry (default: all 1)")
    p.add_argument("--success-threshold", type=float, default=1.0, help="a sample is correct (counts in Pass@k) when its reward is at least this")
    p.add_argument("--max-reward-failures", type=int, default=0, help="reward-function failures allowed per batch (the failed samples count as not correct)")
    limits = TrainConfig()  # the reward limits are sps train's
    p.add_argument("--reward-timeout", type=float, default=limits.reward_timeout, help="seconds a reward function may take for one problem's samples before its worker is killed")
    p.add_argument("--reward-memory-limit", type=float, default=limits.reward_memory_limit, help="GiB of memory each reward-function worker may hold; a call that needs more fails, named")
    p.add_argument("--batch-size", type=int, default=256, help="sequences sampled together")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--output-dir", "--out", dest="out", default=None, help="output folder (default: out/eval/<model name>)")
    p.add_argument("--data-dir", default=None, help="benchmark data folder (default: $SPS_DATA_DIR or ../shared/data)")
    p.add_argument("--overwrite", action="store_true", help="discard samples made with other settings, model, data or template")
    p.add_argument("--regrade", action="store_true", help="score the samples there again: their reward function or grader changed since")
    p.add_argument("--engine", default="hf", choices=["hf", "vllm"], help="rollout engine")
    p.add_argument("--dtype", default="auto", help="auto, float32, bfloat16 or float16")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1, ... (default: cuda when available)")
    p.add_argument("--plugins", default="", help="comma-separated Python files or modules to import first (graders they register become choices; sps.plugins)")
    p.add_argument("--id-field", default="id")
    p.add_argument("--problem-field", default="problem")
    p.add_argument("--answer-field", default="answer")
    add_dry_run_options(p)
    p.set_defaults(run=run_eval_command)


def run_eval_command(args) -> int:
    from sps.evaluation.evaluate import default_out_dir, evaluate_model
    from sps.evaluation.report import combined_table
    from sps.evaluation.runner import EvalSettings
    from sps.tasks.benchmarks import FieldNames, split_specs

    quiet_libraries()
    if args.dry_run:
        from sps.evaluation.plan import eval_plan
        from sps.preflight import exit_code

        plan = eval_plan(
            args.model, split_specs(args.benchmark), args.n, args.max_new_tokens, args.batch_size, args.dtype,
            args.data_dir, args.prompt_template, args.grader, args.limit, gpu_memory_bytes(args),
        )
        print(plan.text())
        return exit_code(plan)
    base = EvalSettings(
        model=args.model,
        benchmark="",
        n=args.n,
        temperature=args.temperature,
        top_p=args.top_p,
        top_k=args.top_k,
        max_new_tokens=args.max_new_tokens,
        limit=args.limit,
        seed=args.seed,
        reward_funcs=[f for f in args.reward_funcs.split(",") if f],
        reward_weights=[float(w) for w in args.reward_weights.split(",") if w],
        success_threshold=args.success_threshold,
    )
    out = Path(args.out or default_out_dir(args.model))
    results = evaluate_model(
        args.model,
        split_specs(args.benchmark),
        out,
        base,
        prompt_template=args.prompt_template,
        grader=args.grader,
        data_dir=args.data_dir,
        fields=FieldNames(args.id_field, args.problem_field, args.answer_field),
        engine=args.engine,
        batch_size=args.batch_size,
        dtype=args.dtype,
        device=args.device,
        overwrite=args.overwrite,
        max_reward_failures=args.max_reward_failures,
        reward_timeout=args.reward_timeout,
        reward_memory_limit=args.reward_memory_limit,
        regrade=args.regrade,
        plugins=[f for f in args.plugins.split(",") if f],
    )
    if results:  # the main process's (under torchrun the others sampled their share and return none)
        print(combined_table(results))
        print(f"\nresults in {out}")
    return 0


def add_dry_run_options(p) -> None:
    p.add_argument("--dry-run", action="store_true", help="check settings, model config, data and memory; print the plan; load no weights")
    p.add_argument("--gpu-memory", default=None, help="dry run: the GPU size to check memory against, e.g. 80GB (default: the visible GPU's)")


def gpu_memory_bytes(args) -> float | None:
    from sps.training.memory import parse_size

    return parse_size(args.gpu_memory) if args.gpu_memory else None


def quiet_libraries() -> None:
    """Silence the progress bars and advice that transformers prints on every load."""
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


def add_grade(commands) -> None:
    p = commands.add_parser("grade", help="grade one completion against a gold answer and print the verdict as JSON")
    p.add_argument("--gold", required=True, help="the gold answer, e.g. '\\frac{1}{2}' or 18")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--completion", help="the completion text")
    source.add_argument("--completion-file", help="a file holding the completion text")
    p.add_argument("--grader", default="math", help="math or choice")
    p.set_defaults(run=run_grade_command)


def run_grade_command(args) -> int:
    from sps.grading.registry import grade_one

    if args.completion is None and not Path(args.completion_file).is_file():
        raise ValueError(f"--completion-file {args.completion_file} is {'a folder' if Path(args.completion_file).is_dir() else 'not there'}, not a file")
    completion = args.completion if args.completion is not None else Path(args.completion_file).read_text(encoding="utf-8")
    print(json.dumps(asdict(grade_one(args.gold, completion, grader=args.grader)), indent=2))
    return 0


def add_train(commands) -> None:
    from sps.config import describe
    from sps.training.config import TrainConfig

    settings = "\n".join(f"  --{key} (default {default}): {text}" for key, default, text in describe(TrainConfig))
    settings += "\n\nmethods registered now (plugins: --plugins FILE.py adds theirs):\n" + registered_methods()
    p = commands.add_parser(
        "train",
        help="train a policy with GRPO-family RL or SPS",
        description="Train with a YAML config plus --key value overrides (nested keys dotted: --sps.irl_steps 2). "
        "Rerunning with the same output_dir resumes from its newest checkpoint.",
        epilog="settings:\n" + settings,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--config", default=None, help="YAML file with settings (see configs/); --key value pairs override it")
    add_dry_run_options(p)
    p.add_argument("--nproc", type=int, default=None, help="dry run: training processes (default: $WORLD_SIZE or 1)")
    p.add_argument("--overwrite", "--restart", dest="overwrite", action="store_true",
                   help="discard the run in output_dir and start over: needed when its settings, reward code, data, template or "
                        "start model differ from these, or when every checkpoint is damaged")
    p.set_defaults(run=run_train_command)


def registered_methods() -> str:
    """The names each registry holds, plugins' included: the choices of advantage_estimator, loss_mode and grader."""
    from sps.algorithms.advantages import ADVANTAGE_ESTIMATORS, REWARD_SHAPINGS
    from sps.algorithms.policy_losses import LOSS_TERMS, POLICY_LOSSES
    from sps.grading.registry import known_graders

    tables = {"advantage_estimator": ADVANTAGE_ESTIMATORS, "loss_mode": POLICY_LOSSES, "reward shapings (always on, each with its knob)": REWARD_SHAPINGS,
              "loss terms": LOSS_TERMS, "grader": known_graders()}
    return "\n".join(f"  {name}: {', '.join(names)}" for name, names in tables.items())


def run_train_command(args) -> int:
    from sps.config import load_config
    from sps.training.config import TrainConfig
    from sps.training.trainer import train

    quiet_libraries()
    cfg = load_config(TrainConfig, args.config, args.overrides)
    if args.dry_run:
        from sps.preflight import exit_code
        from sps.training.memory import Layout
        from sps.training.plan import train_plan

        processes = args.nproc or int(os.environ.get("WORLD_SIZE", "1"))
        sharded = cfg.parallelism == "fsdp" and processes > 1  # as sps.training.distributed.parallelize does
        layout = Layout(processes, shard_params=sharded, shard_optimizer=sharded)
        plan = train_plan(cfg, layout, gpu_memory_bytes(args))
        print(plan.text())
        return exit_code(plan)
    run_dir = train(cfg, overwrite=args.overwrite, flag=lambda name: f"--{name}")
    print(f"run folder: {run_dir}")
    return 0


def add_testbed(commands) -> None:
    p = commands.add_parser("testbed", help="the built-in testbed (a tiny Countdown model)")
    sub = p.add_subparsers(dest="testbed_command", required=True)
    build = sub.add_parser("build", help="build the testbed model, or reuse the cached one")
    build.add_argument("--out", default=None, help="folder (default: $SPS_CACHE_DIR/testbed/<settings digest>)")
    build.add_argument("--seed", type=int, default=0, help="seed for initialisation and data order")
    build.set_defaults(run=run_testbed_build)


def run_testbed_build(args) -> int:
    from sps.models.testbed import TestbedConfig, build_testbed

    quiet_libraries()
    folder = build_testbed(TestbedConfig(seed=args.seed), args.out)
    print(f"testbed model: {folder}")
    print(f"evaluate it:   sps eval --model {folder} --benchmark countdown-test --n 64 --temperature 1.0 --max-new-tokens 48")
    return 0


def add_analyze(commands) -> None:
    p = commands.add_parser("analyze", help="report squeezing dynamics and the empirical Pass@k upper bound of training runs")
    p.add_argument("run_dirs", nargs="+", help="training run folders (output_dir of sps train)")
    p.add_argument("--out", default=None, help="report folder (default: <run>/analysis for one run, out/analysis for several)")
    p.add_argument("--k", default=None, help="comma-separated ks for the Pass@k-over-steps figure (default: 1, ~sqrt(n), n)")
    p.set_defaults(run=run_analyze_command)


def run_analyze_command(args) -> int:
    from sps.analysis.report import analyze

    ks = [int(k) for k in args.k.split(",")] if args.k else None
    folder = analyze([Path(d) for d in args.run_dirs], Path(args.out) if args.out else None, ks)
    print(f"report: {folder / 'report.md'} (and report.html)")
    return 0


def add_demo(commands) -> None:
    p = commands.add_parser("demo", help="build the testbed, train GRPO and SPS, evaluate, and write the analysis report")
    p.add_argument("--quick", action="store_true", help="a short version: 30 training steps and smaller evaluations (about 5 minutes from nothing, 2 with the testbed model cached)")
    p.add_argument("--out", default=None, help="demo folder (default: out/demo, or out/demo-quick with --quick)")
    p.set_defaults(run=run_demo_command)


def run_demo_command(args) -> int:
    from sps.demo import run_demo

    quiet_libraries()
    run_demo(Path(args.out or ("out/demo-quick" if args.quick else "out/demo")), quick=args.quick)
    return 0


def add_export(commands) -> None:
    p = commands.add_parser("export", help="write a run's checkpoint as a plain Hugging Face folder (LoRA adapters merged in)")
    p.add_argument("run_dir", help="a training run folder (output_dir of sps train), or one checkpoint folder")
    p.add_argument("--out", required=True, help="the folder to write")
    p.add_argument("--step", type=int, default=None, help="the checkpoint's step (default: the newest)")
    p.add_argument("--merge", action="store_true", help="fold LoRA adapters into the base weights (needed for a LoRA run: from_pretrained and vLLM then load the folder)")
    p.add_argument("--dtype", default="float32", help="float32, bfloat16 or float16")
    p.set_defaults(run=run_export_command)


def run_export_command(args) -> int:
    from sps.models.export import export_checkpoint

    quiet_libraries()
    folder = export_checkpoint(Path(args.run_dir), Path(args.out), args.step, args.merge, args.dtype)
    print(f"exported to {folder}: load it with AutoModelForCausalLM.from_pretrained or sps eval --model {folder}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
