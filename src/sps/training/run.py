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
import yaml

from sps.identity import changes
from sps.io import (
    append_jsonl,
    atomic_write_json,
    atomic_write_jsonl,
    atomic_write_text,
    read_jsonl,
    read_jsonl_repairing,
)
from sps.progress import progress_bar
from sps.training.config import TrainConfig
from sps.training.distributed import World
from sps.training.guards import GUARD_STEPS, guard_warnings
from sps.training.loggers import open_writers

# Settings a resumed run may change: they do not change what the steps compute (output_dir: the
# folder is the run, wherever it lives and however its path is written; the reward limits only
# stop a reward call that hangs or bloats, so a stuck run can be resumed with tighter ones).
RESUMABLE_CHANGES = (
    "output_dir", "max_steps", "eval_every", "save_every", "keep_checkpoints", "report_to", "threads", "device", "micro_batch_size", "max_tokens_per_microbatch",
    "gradient_checkpointing", "logits_chunk_size", "reward_timeout", "reward_memory_limit",
)


class RunFiles:
    """Everything a run writes, written by the main process only."""

    def __init__(self, run_dir: Path, cfg: TrainConfig, world: World, overwrite: bool = False, flag=lambda name: f"--{name}"):
        self.dir = run_dir
        self.cfg = cfg
        self.world = world
        self.overwrite = overwrite  # discard the run in run_dir and start over; not a setting of the run
        self.flag = flag  # an option as the caller writes it: --overwrite, or overwrite=True from Python
        self.log_file = run_dir / "metrics.jsonl"
        self.writers: list = []
        self.recent: list[dict] = []  # the last steps' metrics, for the runtime guards
        self.speaking: set[str] = set()  # metrics whose guard warned at the last step
        self.eval_benchmarks: list = []  # what evaluations sample (sps.training.trainer.eval_benchmarks)

    # -- starting and resuming ------------------------------------------------------------------

    def start(self, identity: dict | None = None) -> tuple[tuple[int, Path] | None, list[str]]:
        """Take the run folder's lock (with overwrite, empty the folder), clear what an interrupted
        write left, pick the newest checkpoint that passes verification, check the settings and the
        identity (sps.identity) against the run's and write them, and drop log rows and evaluations
        past the resume point. Returns (the checkpoint to resume from or None, notices for the
        progress line and the log). Called once every input has been checked: nothing is written before."""
        from sps.io import lock_folder, remove_leftovers
        from sps.training.checkpoint import load_trainer_state, newest_good_checkpoint

        checkpoint, notices = None, []
        if self.world.is_main:
            self.lock = lock_folder(self.dir, "sps train")
            if self.overwrite and any(p.name != ".lock" for p in self.dir.iterdir()):
                for path in (p for p in self.dir.iterdir() if p.name != ".lock"):
                    shutil.rmtree(path) if path.is_dir() else path.unlink()
                notices.append(f"{self.flag('overwrite')}: removed the run that was in {self.dir}, starting over")
            owned = [self.dir, self.dir / "checkpoints", *(p for p in (self.dir / "evals").rglob("*") if p.is_dir())]
            for leftover in [found for folder in owned for found in remove_leftovers(folder)]:
                notices.append(f"removed {leftover.relative_to(self.dir)}, left by an interrupted write")
            checkpoint, damaged = newest_good_checkpoint(self.dir)
            if damaged and not checkpoint:
                raise ValueError(f"{self.dir} has no good checkpoint ({'; '.join(f'{name}: {problem}' for name, problem in damaged)}); "
                                 f"restore them, or rerun with {self.flag('overwrite')} to delete the run there and start over")
            notices += [f"checkpoint {name} is damaged ({problem}); it is skipped" for name, problem in damaged]
            if damaged:
                notices.append(f"resuming from {checkpoint[1].name}")
            notices += self.check_config(load_trainer_state(checkpoint[1]).get("config") if checkpoint else None, identity)
            resume_step = checkpoint[0] if checkpoint else 0
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
            for notice in notices:
                print(f"NOTICE: {notice}")
        checkpoint, notices = self.world.gather((checkpoint, notices))[0]  # every process resumes from the same
        self.world.barrier()
        return checkpoint, notices

    def check_config(self, checkpointed: dict | None, identity: dict | None = None) -> list[str]:
        """Refuse to continue a run whose settings (in config.yaml, or recorded in its checkpoint
        when config.yaml is gone) or identity (identity.json) differ from these, naming each
        difference; then write both. Returns a notice for each of RESUMABLE_CHANGES that changed,
        with its old and new value."""
        saved_file = self.dir / "config.yaml"
        current = dataclasses.asdict(self.cfg)
        defaults = dataclasses.asdict(type(self.cfg)())  # a key added since the run began counts as its default
        changed: list[str] = []  # against config.yaml, the newest record, where it is there
        for saved, where in ((yaml.safe_load(saved_file.read_text()) if saved_file.exists() else None, "config.yaml"),
                             (checkpointed, "the checkpoint")):
            if not saved:
                continue
            changed = changed or [f"{k} changed from {saved.get(k, defaults[k])!r} to {current[k]!r}" for k in RESUMABLE_CHANGES
                                  if k != "output_dir" and saved.get(k, defaults[k]) != current[k]]
            differ = [f"{k}: {saved.get(k, defaults[k])!r} there, {current[k]!r} now" for k in current
                      if k not in RESUMABLE_CHANGES and saved.get(k, defaults[k]) != current[k]]
            if differ:
                raise ValueError(
                    f"{self.dir} holds a run with other settings ({where}: {'; '.join(differ)}); "
                    f"choose another output_dir, or rerun with {self.flag('overwrite')} to start over in it"
                )
        identity_file = self.dir / "identity.json"
        if identity_file.is_file() and identity is not None:
            other = changes(json.loads(identity_file.read_text()), identity)
            if other:
                raise ValueError(
                    f"{self.dir}: {', '.join(what for _, what in other)} changed since the run began, and resuming would mix "
                    f"numbers of the two; choose another output_dir, or rerun with {self.flag('overwrite')} to start over in it"
                )
        atomic_write_text(saved_file, yaml.safe_dump(current, sort_keys=False))
        if identity is not None:
            atomic_write_json(identity_file, identity)
        return changed

    def start_model(self) -> str:
        """The model training starts from, as from_pretrained takes it; the main process builds the
        testbed (or converts SmolLM2) first, so the others find it done."""
        from sps.models.loading import resolve_model_path

        if self.world.is_main:
            resolve_model_path(self.cfg.model)
        self.world.barrier()
        return resolve_model_path(self.cfg.model)

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
        evals/step_N/benchmarks.json (their names in order and the mean Avg@n). Every process
        samples its share; the main process writes and reports."""
        if self.cfg.eval_every < 0:
            return
        cfg = self.cfg
        folder = self.dir / "evals" / f"step_{step:06d}"
        benchmarks = self.eval_benchmarks
        several = len(benchmarks) > 1
        results = {b.name: self.evaluate_one(step, b, folder / b.name if several else folder, engine, tokenizer) for b in benchmarks}
        mean_avg = None  # known to the main process, which holds the results
        if self.world.is_main:
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

    def evaluate_one(self, step: int, benchmark, folder: Path, engine, tokenizer) -> dict | None:
        """This process's share of one benchmark's evaluation; its metrics in the main process, None in the others."""
        from sps.evaluation.runner import EvalSettings, run_eval
        from sps.grading.rewards import RewardFunctions

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
            reward_funcs=cfg.reward_funcs,
            reward_weights=cfg.reward_weights,
            success_threshold=cfg.success_threshold,
        )
        rewards = RewardFunctions(settings.rewards(), settings.reward_weights, settings.success_threshold, cfg.reward_timeout,
                                  memory_limit_gib=cfg.reward_memory_limit)
        try:
            return run_eval(engine, tokenizer, benchmark, settings, folder, rewards, cfg.generation_batch_size,
                            show_progress=False, max_reward_failures=cfg.max_reward_failures, world=self.world)
        finally:
            rewards.close()

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

    def keep_if_best(self, step: int, avg_at_n: float | None, model, tokenizer) -> None:
        """Save the policy to <run>/best/ (atomically, with best.json) when avg_at_n, the main
        process's (None in the others), beats the kept one. Every process calls it: a sharded
        model's full weights are gathered from all of them."""
        from sps.algorithms.flowrl import split_log_z_head
        from sps.io import atomic_dir
        from sps.training.distributed import full_state_dict, gather_full_weights

        info_file = self.dir / "best" / "best.json"
        better = avg_at_n is not None and (not info_file.is_file() or json.loads(info_file.read_text())["avg_at_n"] < avg_at_n)
        if not self.world.gather(better)[0]:  # the main process decides
            return
        weights = split_log_z_head(full_state_dict(model))[0]  # without FlowRL's log Z head
        gather_full_weights(model)  # taking the state dict resharded the model (sps.training.distributed)
        if not self.world.is_main:
            return
        with atomic_dir(self.dir / "best") as tmp:
            model.save_pretrained(tmp, state_dict=weights)
            tokenizer.save_pretrained(tmp)
            (tmp / "best.json").write_text(json.dumps({"step": step, "avg_at_n": avg_at_n, "eval_benchmark": self.cfg.eval_benchmark}))
        print(f"best so far: step {step}, mean Avg@n {avg_at_n:.4f}, kept in {self.dir / 'best'}")

    def close(self) -> None:
        if getattr(self, "lock", None) is not None:
            self.lock.close()
        for writer in self.writers:
            close = getattr(writer, "close", None)
            if close:
                close()
