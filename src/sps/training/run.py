"""A training run's folder and its bookkeeping: config, log, evaluations, probes, progress.

  <output_dir>/config.yaml      the run's settings (a resumed run must match them)
  <output_dir>/metrics.jsonl    one row per step
  <output_dir>/evals/step_N/    held-out evaluations (sps eval's files), step 0 = the start model
  <output_dir>/probes.jsonl     probe trajectories and their log-likelihood at every evaluation
  <output_dir>/checkpoints/     see sps.training.checkpoint
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch
import yaml

from sps.algorithms.advantages import ADVANTAGE_ESTIMATORS, SCALINGS, zero_std_fraction
from sps.algorithms.losses import AGGREGATIONS
from sps.algorithms.policy_losses import POLICY_LOSSES
from sps.evaluation.metrics import solved_diversity
from sps.grading.base import STATUSES
from sps.io import append_jsonl, atomic_write_jsonl, atomic_write_text, read_jsonl, read_jsonl_repairing
from sps.progress import progress_bar
from sps.tasks.prompts import MODES
from sps.training.batch import RolloutBatch
from sps.training.config import TrainConfig
from sps.training.distributed import MIXED_PRECISIONS, PARALLELISMS, World
from sps.training.guards import GUARD_STEPS, guard_warnings
from sps.training.sps_phase import validate_sps

# Settings a resumed run may change: they do not change what the steps compute.
RESUMABLE_CHANGES = (
    "max_steps", "eval_every", "save_every", "keep_checkpoints", "report_to", "threads", "device", "micro_batch_size",
    "gradient_checkpointing",
)


def validate(cfg: TrainConfig) -> None:
    """Raise ValueError naming the first inconsistent setting, before any work starts."""
    a = cfg.advantage
    checks = [
        (bool(cfg.model), "model is required (a folder, hub id, smollm2-135m-instruct or testbed)"),
        (cfg.algorithm in ("grpo", "sps"), "algorithm must be grpo or sps"),
        (cfg.loss_type in AGGREGATIONS, f"loss_type must be one of {', '.join(AGGREGATIONS)}"),
        (cfg.scale_rewards in SCALINGS, f"scale_rewards must be one of {', '.join(SCALINGS)}"),
        (cfg.advantage_estimator in ADVANTAGE_ESTIMATORS, f"advantage_estimator must be one of {', '.join(ADVANTAGE_ESTIMATORS)}"),
        (cfg.prompt_mode in MODES, f"prompt_mode must be one of {', '.join(MODES)}"),
        (cfg.loss_mode in POLICY_LOSSES, f"loss_mode must be one of {', '.join(POLICY_LOSSES)}"),
        (cfg.advantage_estimator not in ("passk", "pkpo") or min(a.k, a.k_final) >= 1 and max(a.k, a.k_final) <= cfg.num_generations,
         f"advantage.k and advantage.k_final must be between 1 and num_generations (got k = {a.k}, k_final = {a.k_final}, G = {cfg.num_generations})"),
        (cfg.advantage_estimator != "grpo_passk" or cfg.scale_rewards in ("group", "none"), "grpo_passk takes scale_rewards group (divide by the std) or none"),
        (min(a.focal_gamma, a.rank_penalty, a.positive_weight) >= 0, "advantage.focal_gamma, rank_penalty and positive_weight must be >= 0"),
        (cfg.policy_loss.simko_top_k >= 1 and 0 <= cfg.policy_loss.simko_entropy_quantile <= 1, "policy_loss.simko_top_k must be >= 1 and simko_entropy_quantile in [0, 1]"),
        (cfg.adaptive_entropy.delta >= 0 and cfg.adaptive_entropy.coef_min <= cfg.adaptive_entropy.coef_max, "adaptive_entropy.delta must be >= 0 and coef_min <= coef_max"),
        (cfg.num_generations >= 2, "num_generations must be >= 2 (advantages compare completions of a prompt)"),
        (cfg.prompts_per_step >= 1, "prompts_per_step must be >= 1"),
        (cfg.max_completion_length >= 1, "max_completion_length must be >= 1"),
        (cfg.temperature > 0, "temperature must be > 0"),
        (cfg.learning_rate > 0, "learning_rate must be > 0"),
        (cfg.epsilon > 0 and cfg.epsilon_high >= 0, "epsilon must be > 0 and epsilon_high >= 0"),
        (cfg.beta >= 0 and cfg.entropy_coef >= 0, "beta and entropy_coef must be >= 0"),
        (cfg.num_iterations >= 1, "num_iterations must be >= 1"),
        (cfg.steps_per_generation >= 1, "steps_per_generation must be >= 1"),
        (cfg.steps_per_generation <= cfg.prompts_per_step * cfg.num_generations, "steps_per_generation cannot exceed the rollouts per step"),
        (cfg.micro_batch_size >= 0, "micro_batch_size must be >= 0"),
        (cfg.max_steps >= 1 and cfg.save_every >= 1, "max_steps and save_every must be >= 1"),
        (cfg.eval_n >= 1 and cfg.eval_limit >= 0, "eval_n must be >= 1 and eval_limit >= 0"),
        (not cfg.replay_buffer or cfg.algorithm == "grpo", "replay_buffer is a GRPO control; use it with algorithm grpo"),
        (set(cfg.report_to) <= {"tensorboard", "wandb", "jsonl"}, "report_to takes tensorboard and wandb (the JSON Lines log is always written)"),
        (cfg.parallelism in PARALLELISMS, f"parallelism must be one of {', '.join(PARALLELISMS)}"),
        (cfg.mixed_precision in MIXED_PRECISIONS, f"mixed_precision must be one of {', '.join(MIXED_PRECISIONS)}"),
        (cfg.mixed_precision == "none" or cfg.dtype == "float32", "mixed_precision bf16 computes from fp32 weights: set dtype float32"),
    ]
    for ok, message in checks:
        if not ok:
            raise ValueError(f"config: {message}")
    validate_sps(cfg.sps)


def rollout_metrics(world: World, batch: RolloutBatch, rewards: torch.Tensor, grades, group_size: int) -> dict[str, float]:
    """The step's rollout statistics over all processes: rewards, lengths, entropy, likelihoods
    and the squeezing metrics (distinct correct completions per prompt and top-1 share)."""
    lengths = batch.completion_mask.sum(-1)
    mean_logps = batch.old_logps.sum(-1) / lengths.clamp(min=1)
    local = {
        "rewards": rewards.tolist(),
        "lengths": lengths.tolist(),
        "truncated": batch.truncated.tolist(),
        "mean_logps": mean_logps.tolist(),
        "entropy_sum": float((batch.entropies * batch.completion_mask).sum()) if batch.entropies is not None else None,
        "texts": batch.texts,
        "extracted": [g.extracted for g in grades],
        "statuses": [g.status for g in grades],
    }
    merged = {k: [v for part in world.gather(local) for v in (part[k] if isinstance(part[k], list) else [part[k]])] for k in local}
    rewards_all = torch.tensor(merged["rewards"])
    correct = rewards_all.flatten() > 0
    logps = torch.tensor(merged["mean_logps"])
    lengths_all = torch.tensor(merged["lengths"])
    metrics = {
        "reward": float(rewards_all.mean()),
        "reward_std": float(rewards_all.std()),
        "frac_reward_zero_std": zero_std_fraction(rewards_all),
        "completions/mean_length": float(lengths_all.mean()),
        "completions/min_length": float(lengths_all.min()),
        "completions/max_length": float(lengths_all.max()),
        "completions/truncated_fraction": float(np.mean(merged["truncated"])),
        "logp/correct": float(logps[correct].mean()) if correct.any() else float("nan"),
        "logp/incorrect": float(logps[~correct].mean()) if (~correct).any() else float("nan"),
    }
    if None not in merged["entropy_sum"]:
        metrics["entropy"] = sum(merged["entropy_sum"]) / max(float(lengths_all.sum()), 1.0)
    groups = lambda xs: [xs[i : i + group_size] for i in range(0, len(xs), group_size)]  # noqa: E731
    diversity = solved_diversity(groups(merged["texts"]), groups(merged["extracted"]), correct.view(-1, group_size).numpy())
    metrics["distinct_correct_per_prompt"] = diversity["distinct_correct_per_solved"] or 0.0
    metrics["distinct_answers_per_prompt"] = diversity["distinct_answers_per_solved"] or 0.0
    metrics["top1_share"] = diversity["top1_share"] if diversity["top1_share"] is not None else float("nan")
    metrics["solved_fraction"] = float(correct.view(-1, group_size).any(-1).float().mean())
    for status in (s for s in STATUSES if s != "ok"):  # every step logs each, 0 included, so a key never goes missing
        metrics[f"grading/{status}_fraction"] = merged["statuses"].count(status) / len(merged["statuses"])
    return metrics


class RunFiles:
    """Everything a run writes, written by the main process only."""

    def __init__(self, run_dir: Path, cfg: TrainConfig, world: World):
        self.dir = run_dir
        self.cfg = cfg
        self.world = world
        self.log_file = run_dir / "metrics.jsonl"
        self.writers: list = []
        self.recent: list[dict] = []  # the last steps' metrics, for the runtime guards
        self.speaking: set[str] = set()  # metrics whose guard warned at the last step

    # -- starting and resuming ------------------------------------------------------------------

    def start(self, resume_step: int) -> None:
        """Write or check config.yaml; drop log rows and evaluations past the resume point."""
        if self.world.is_main:
            self.dir.mkdir(parents=True, exist_ok=True)
            self.check_config()
            rows = [r for r in read_jsonl_repairing(self.log_file) if r["step"] <= resume_step]
            atomic_write_jsonl(self.log_file, rows)
            self.recent = rows[-GUARD_STEPS:]
            for folder in (self.dir / "evals").glob("step_*"):
                if int(folder.name.split("_")[1]) > resume_step:
                    shutil.rmtree(folder)
            best = self.dir / "best" / "best.json"
            if best.is_file() and json.loads(best.read_text())["step"] > resume_step:
                shutil.rmtree(best.parent)  # chosen by an evaluation that was just dropped
            probes = read_jsonl_repairing(self.dir / "probes.jsonl")
            atomic_write_jsonl(self.dir / "probes.jsonl", [r for r in probes if r["step"] <= resume_step])
            self.writers = open_writers(self.cfg, self.dir)
        self.world.barrier()

    def check_config(self) -> None:
        saved_file = self.dir / "config.yaml"
        current = dataclasses.asdict(self.cfg)
        if saved_file.exists():
            saved = yaml.safe_load(saved_file.read_text())
            defaults = dataclasses.asdict(type(self.cfg)())  # a key added since the run began counts as its default
            differ = [k for k in current if k not in RESUMABLE_CHANGES and saved.get(k, defaults[k]) != current[k]]
            if differ:
                raise ValueError(
                    f"{self.dir} holds a run with other settings ({', '.join(differ)} differ); "
                    "choose another output_dir or delete that folder"
                )
        atomic_write_text(saved_file, yaml.safe_dump(current, sort_keys=False))

    def start_model(self) -> str:
        """The model training starts from; 'testbed' is the built-in testbed (built if needed)."""
        if self.cfg.model != "testbed":
            return self.cfg.model
        from sps.models.testbed import TestbedConfig, build_testbed

        if self.world.is_main:
            build_testbed(TestbedConfig())
        self.world.barrier()
        return str(build_testbed(TestbedConfig(), show_progress=False))

    def note_skipped(self, benchmark) -> None:
        if self.world.is_main:
            for message in benchmark.skipped:
                print(f"warning: {benchmark.name}: skipped malformed row: {message}")

    # -- every step -----------------------------------------------------------------------------

    def log(self, step: int, metrics: dict) -> None:
        """Append the step's row; when a runtime guard speaks, its warnings go into the row (and so
        into the progress line) and are printed when they first appear."""
        if not self.world.is_main:
            return
        self.recent = [*self.recent, metrics][-GUARD_STEPS:]
        found = guard_warnings(self.recent, self.cfg)
        for metric, _, message in found:
            if metric not in self.speaking:
                print(f"WARNING at step {step}: {message}")
        self.speaking = {metric for metric, _, _ in found}
        if found:
            metrics["warnings"] = [short for _, short, _ in found]
        row = {"step": step, **metrics}
        append_jsonl(self.log_file, [row])
        for writer in self.writers:
            writer(step, {k: v for k, v in metrics.items() if isinstance(v, int | float)})

    @contextlib.contextmanager
    def progress(self, step: int) -> Iterator[Callable[[dict], None]]:
        """Yield `show(metrics)`, called once per step: a live line with the step, the phase, the
        reward and the entropy (main process only)."""
        with progress_bar("train", self.cfg.max_steps, done=step, enabled=self.world.is_main, unit="steps") as advance:

            def show(m: dict) -> None:
                warnings = "".join(f"  WARNING {w}" for w in m.get("warnings", []))
                advance(1, f"{m['phase']:>6}  reward {m['reward']:.3f}  entropy {m.get('entropy', float('nan')):.3f}{warnings}")

            yield show

    # -- evaluations ----------------------------------------------------------------------------

    def eval_due(self, step: int) -> bool:
        every = self.cfg.eval_every
        return every >= 0 and ((every > 0 and step % every == 0) or step == self.cfg.max_steps)

    def evaluate(self, step: int, model, tokenizer, engine) -> None:
        """Held-out evaluation of the current policy on each eval benchmark, the probes'
        log-likelihoods, and (keep_best) the policy kept when its mean Avg@n is the best so far.
        One benchmark writes into evals/step_N/, several into evals/step_N/<name>/ each plus
        evals/step_N/benchmarks.json (their names in order and the mean Avg@n)."""
        if self.cfg.eval_every < 0:
            return
        if self.world.is_main:
            from sps.tasks.benchmarks import load_benchmark, split_specs

            cfg = self.cfg
            folder = self.dir / "evals" / f"step_{step:06d}"
            benchmarks = [load_benchmark(spec, cfg.data_dir or None) for spec in split_specs(cfg.eval_benchmark)]
            several = len(benchmarks) > 1
            results = {b.name: self.evaluate_one(step, b, folder / b.name if several else folder, engine, tokenizer) for b in benchmarks}
            self.track_probes(step, benchmarks[0], folder / benchmarks[0].name if several else folder, model, tokenizer)
            mean_avg = float(np.mean([m["avg_at_n"] for m in results.values()]))
            if several:
                atomic_write_text(folder / "benchmarks.json", json.dumps({"benchmarks": list(results), "mean_avg_at_n": mean_avg}, indent=2))
            for name, metrics in results.items():
                summary = {f"pass@{k}": v for k, v in metrics["pass_at_k"].items()} | {"avg@n": metrics["avg_at_n"]}
                print(f"eval step {step}{' ' + name if several else ''}: " + ", ".join(f"{k} {v:.3f}" for k, v in summary.items()))
            if cfg.keep_best:
                self.keep_if_best(step, mean_avg, model, tokenizer)
        self.world.barrier()

    def evaluate_one(self, step: int, benchmark, folder: Path, engine, tokenizer) -> dict:
        from sps.evaluation.runner import EvalSettings, run_eval
        from sps.grading.registry import get_grader

        cfg = self.cfg
        settings = EvalSettings(
            model=f"{cfg.model}@step{step}",
            benchmark=benchmark.source,
            n=cfg.eval_n,
            temperature=cfg.eval_temperature,
            top_p=cfg.top_p,
            max_new_tokens=cfg.max_completion_length,
            limit=cfg.eval_limit or None,
            prompt_template=cfg.prompt_template or benchmark.template,
            grader=cfg.grader or benchmark.grader,
            seed=cfg.seed,
        )
        grader = get_grader(settings.grader)
        try:
            return run_eval(engine, tokenizer, benchmark, settings, folder, grader, cfg.generation_batch_size, show_progress=False)
        finally:
            grader.close()

    def track_probes(self, step: int, benchmark, folder: Path, model, tokenizer) -> None:
        """Select the probe set from the start model's samples (step 0), then log its likelihoods."""
        from sps.analysis.probes import probe_logprobs, select_probes

        cfg = self.cfg
        probes_file = self.dir / "probes.jsonl"
        if step == 0 and cfg.probe_problems:
            probes = select_probes(read_jsonl(folder / "samples.jsonl"), cfg.probe_problems)
            atomic_write_jsonl(self.dir / "probe_set.jsonl", probes)
        probe_set = read_jsonl(self.dir / "probe_set.jsonl")
        if probe_set:
            by_id = {p.id: p for p in benchmark.problems}
            template = cfg.prompt_template or benchmark.template
            logps = probe_logprobs(model, tokenizer, probe_set, by_id, template, cfg.temperature)
            # Rewritten rather than appended, so an evaluation repeated after a crash adds no duplicates.
            kept = [r for r in read_jsonl(probes_file) if r["step"] != step]
            atomic_write_jsonl(probes_file, kept + [{"step": step, "probe": i, "mean_logp": lp} for i, lp in enumerate(logps)])

    def keep_if_best(self, step: int, avg_at_n: float, model, tokenizer) -> None:
        """Save the policy to <run>/best/ (atomically, with best.json) when avg_at_n beats the kept one."""
        from sps.io import atomic_dir

        info_file = self.dir / "best" / "best.json"
        if info_file.is_file() and json.loads(info_file.read_text())["avg_at_n"] >= avg_at_n:
            return
        with atomic_dir(self.dir / "best") as tmp:
            model.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
            (tmp / "best.json").write_text(json.dumps({"step": step, "avg_at_n": avg_at_n, "eval_benchmark": self.cfg.eval_benchmark}))
        print(f"best so far: step {step}, mean Avg@n {avg_at_n:.4f}, kept in {self.dir / 'best'}")

    def close(self) -> None:
        for writer in self.writers:
            close = getattr(writer, "close", None)
            if close:
                close()


def open_writers(cfg: TrainConfig, run_dir: Path) -> list:
    """Extra metric sinks named in report_to; a missing package is an error that says so."""
    writers = []
    for name in cfg.report_to:
        if name == "tensorboard":
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError as e:
                raise ValueError("report_to tensorboard needs the tensorboard package (pip install tensorboard)") from e
            board = SummaryWriter(str(run_dir / "tensorboard"))

            def write(step, metrics, board=board):
                for k, v in metrics.items():
                    board.add_scalar(k, v, step)

            write.close = board.close
            writers.append(write)
        elif name == "wandb":
            try:
                import wandb
            except ImportError as e:
                raise ValueError("report_to wandb needs the wandb package (pip install wandb)") from e
            wandb_run = wandb.init(project="sps", dir=str(run_dir), config=dataclasses.asdict(cfg), id=run_dir.name, resume="allow")

            def write(step, metrics, wandb_run=wandb_run):
                wandb_run.log(metrics, step=step)

            write.close = wandb_run.finish
            writers.append(write)
    return writers
