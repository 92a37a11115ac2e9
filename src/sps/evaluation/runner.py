"""Sampling evaluation: n completions per problem, graded, written so that a crash loses nothing.

Everything lands in one folder per benchmark:
  settings.json  what the samples depend on; a rerun with other settings is refused
  samples.jsonl  one row per sample, appended batch by batch and fsynced
  metrics.json, report.md, pass_at_k.png   computed from samples.jsonl alone
Rerunning the same command after a crash generates only the samples that are missing.

Inside a training run under torchrun every process samples and scores its share of the batches
(a batch's samples depend on its problems and seed only, not on which process draws them) and the
main process writes them all.
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from sps.evaluation.metrics import compute_metrics
from sps.evaluation.report import write_report
from sps.grading.rewards import check_failures
from sps.identity import changes
from sps.io import append_jsonl, atomic_write_json, atomic_write_jsonl, read_jsonl_repairing
from sps.progress import progress_bar
from sps.rollout.base import SamplingParams
from sps.tasks.benchmarks import Benchmark
from sps.tasks.templates import encode_prompt

if TYPE_CHECKING:
    from sps.training.distributed import World

OUTPUTS = ("samples.jsonl", "metrics.json", "report.md", "pass_at_k.png")


@dataclass(frozen=True)
class EvalSettings:
    """Everything the samples of an evaluation depend on (batch size and device are not)."""

    model: str
    benchmark: str
    n: int = 8
    temperature: float = 0.7
    top_p: float = 1.0
    top_k: int = 0
    max_new_tokens: int | None = 1024  # None: fitted to the model's context (sps.evaluation.evaluate)
    limit: int | None = None
    prompt_template: str = "qwen-boxed"
    grader: str = "math"
    seed: int = 0
    reward_funcs: list[str] = field(default_factory=list)  # empty: the grader (sps.grading.rewards)
    reward_weights: list[float] = field(default_factory=list)
    success_threshold: float = 1.0

    def rewards(self) -> list[str]:
        """What scores a sample: the reward functions, or the grader alone."""
        return self.reward_funcs or [self.grader]

    def sampling(self) -> SamplingParams:
        return SamplingParams(self.temperature, self.top_p, self.top_k, self.max_new_tokens)


class SettingsMismatch(ValueError):
    """The output folder holds samples made with other settings."""


def prepare_out_dir(out_dir: Path, settings: EvalSettings, overwrite: bool, identity: dict | None = None,
                    regrade: bool = False, flag=lambda name: f"--{name}") -> bool:
    """Create out_dir with settings.json, or check that the one there matches these settings and
    this identity (sps.identity: the model, data, template and reward code). Returns whether the
    samples there are to be scored again: their reward changed and `regrade` says so. `flag(name)`
    writes an option as the caller would (--overwrite, or overwrite=True from Python)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    settings_file = out_dir / "settings.json"
    current = {**asdict(settings), "identity": identity or {}}
    rescore = False
    # settings.json without a sample holds nothing: an evaluation that failed before its first
    # batch does not stand in the way of the corrected rerun.
    if settings_file.exists() and not overwrite and holds_a_sample(out_dir / "samples.jsonl"):
        stored = json.loads(settings_file.read_text())
        # A setting added since that evaluation was made counts as its default there.
        defaults = asdict(EvalSettings(model="", benchmark=""))
        differ = [f"{k}: {stored.get(k, defaults[k])!r} there, {v!r} now" for k, v in asdict(settings).items()
                  if stored.get(k, defaults[k]) != v]
        if differ:
            raise SettingsMismatch(
                f"{out_dir} holds an evaluation with other settings ({'; '.join(differ)}). "
                f"Use another output folder, or {flag('overwrite')} to discard it."
            )
        changed = changes(stored.get("identity", {}), identity or {})
        sampled = [what for key, what in changed if key != "rewards"]
        if sampled:
            raise SettingsMismatch(
                f"{out_dir}: {', '.join(sampled)} changed since its samples were made; "
                f"use another output folder, or {flag('overwrite')} to discard them"
            )
        if changed and not regrade:
            raise SettingsMismatch(
                f"{out_dir}: {', '.join(what for _, what in changed)} changed since its samples were scored; "
                f"use {flag('regrade')} to score them again, {flag('overwrite')} to discard them, or another output folder"
            )
        rescore = bool(changed)
    if overwrite:
        for name in OUTPUTS:
            (out_dir / name).unlink(missing_ok=True)
    atomic_write_json(settings_file, current)
    return rescore


def holds_a_sample(samples_file: Path) -> bool:
    """Whether samples.jsonl holds a complete line, read only as far as its first newline (the
    file of a large evaluation runs to hundreds of MB)."""
    if not samples_file.is_file():
        return False
    with samples_file.open("rb") as f:
        while block := f.read(1 << 16):
            if b"\n" in block:
                return True
    return False


def rescore_rows(rows: list[dict], by_id: dict, settings: EvalSettings, tokenizer, rewards, max_reward_failures: int,
                 name: str) -> list[dict]:
    """The rows scored again by `rewards`, problem by problem; their samples are kept. A reward that
    reads token ids gets the completion's text encoded again (samples.jsonl keeps only the text)."""
    out = []
    for pid in dict.fromkeys(r["problem_id"] for r in rows):
        group = [r for r in rows if r["problem_id"] == pid]
        texts = [r["completion"] for r in group]
        ids = [tokenizer(t, add_special_tokens=False).input_ids for t in texts]
        scores = rewards.score([by_id[pid].problem] * len(group), texts, ids, [by_id[pid]] * len(group), len(group))
        check_failures(scores, max_reward_failures, f"{name}, problem {pid!r} scored again")
        out += [{**r, **scored_fields(g, reward, settings)} for r, g, reward in zip(group, scores.grades, scores.rewards, strict=True)]
    return out


def scored_fields(grade, reward: float, settings: EvalSettings) -> dict:
    return {"extracted": grade.extracted, "correct": bool(reward >= settings.success_threshold),
            "reward": None if math.isnan(reward) else reward, "status": grade.status, "detail": grade.detail}


def stable_seed(*parts) -> int:
    """A seed that depends only on its parts, so a resumed run samples its batches reproducibly."""
    digest = hashlib.sha256(repr(parts).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def missing_work(problem_ids: list[str], done_rows: list[dict], n: int, samples_file: Path) -> dict[str, list[int]]:
    """For each problem, the sample indices not yet in samples.jsonl (in problem order)."""
    known = set(problem_ids)
    done: set[tuple[str, int]] = set()
    for row in done_rows:
        key = (row["problem_id"], row["sample_index"])
        if row["problem_id"] not in known or not 0 <= row["sample_index"] < n:
            raise ValueError(f"{samples_file} has a sample {key} that these settings would not produce")
        if key in done:
            raise ValueError(f"{samples_file} holds sample {key} twice")
        done.add(key)
    return {pid: [i for i in range(n) if (pid, i) not in done] for pid in problem_ids}


def run_eval(
    engine,
    tokenizer,
    benchmark: Benchmark,
    settings: EvalSettings,
    out_dir: str | Path,
    rewards,
    batch_rows: int = 256,
    overwrite: bool = False,
    show_progress: bool = True,
    max_reward_failures: int = 0,
    world: World | None = None,
    identity: dict | None = None,
    regrade: bool = False,
    flag=lambda name: f"--{name}",
) -> dict | None:
    """Sample, score and report one benchmark into out_dir; returns the metrics dict.

    rewards: the settings' sps.grading.rewards.RewardFunctions; a sample is correct when its reward
    reaches success_threshold. batch_rows: about how many samples are generated and scored between
    two writes. world: a training run's processes (sps.training.distributed.World; every one calls
    this with full weights): each takes every world.size-th batch, and only the main process
    touches out_dir and returns the metrics (the others return None). identity, regrade, flag: see
    prepare_out_dir.
    """
    from sps.io import lock_folder
    from sps.training.distributed import World

    world = world or World()
    out_dir = Path(out_dir)
    created = not out_dir.exists()
    lock = lock_folder(out_dir, "sps eval") if world.is_main else None
    try:
        return evaluate_into(engine, tokenizer, benchmark, settings, out_dir, rewards, batch_rows, overwrite, show_progress,
                             max_reward_failures, world, identity, regrade, flag)
    except BaseException:
        if lock is not None and created and not holds_a_sample(out_dir / "samples.jsonl"):
            lock.close()
            shutil.rmtree(out_dir, ignore_errors=True)  # a failed start leaves no folder behind
        raise
    finally:
        if lock is not None:
            lock.close()


def evaluate_into(engine, tokenizer, benchmark: Benchmark, settings: EvalSettings, out_dir: Path, rewards, batch_rows: int,
                  overwrite: bool, show_progress: bool, max_reward_failures: int, world: World, identity: dict | None,
                  regrade: bool, flag) -> dict | None:
    """run_eval's work, with the folder's lock held by the main process."""
    problems = benchmark.problems[: settings.limit] if settings.limit else benchmark.problems
    by_id = {p.id: p for p in problems}
    samples_file = out_dir / "samples.jsonl"
    rows, todo = [], {}
    if world.is_main:
        rescore = prepare_out_dir(out_dir, settings, overwrite, identity, regrade, flag)
        rows = read_jsonl_repairing(samples_file)
        if rescore:
            rows = rescore_rows(rows, by_id, settings, tokenizer, rewards, max_reward_failures, benchmark.name)
            atomic_write_jsonl(samples_file, rows)
            print(f"{benchmark.name}: scored the {len(rows):,} samples in {samples_file} again")
        todo = {pid: idx for pid, idx in missing_work(list(by_id), rows, settings.n, samples_file).items() if idx}
    todo = world.gather(todo)[0]  # what the main process found missing
    work = batches(todo, batch_rows)

    with progress_bar(f"eval {benchmark.name}", total=len(problems) * settings.n, done=len(rows),
                      enabled=show_progress and world.is_main) as advance:
        for start in range(0, len(work), world.size):
            mine = work[start + world.rank] if start + world.rank < len(work) else []
            new_rows = sample_and_score(engine, tokenizer, mine, todo, by_id, settings, rewards, max_reward_failures, benchmark.name)
            new_rows = [row for part in world.gather(new_rows) for row in part]
            if world.is_main:
                append_jsonl(samples_file, new_rows)
                rows.extend(new_rows)
            advance(len(new_rows))
    if not world.is_main:
        return None
    order = {pid: i for i, pid in enumerate(by_id)}
    rows.sort(key=lambda r: (order[r["problem_id"]], r["sample_index"]))
    metrics = compute_metrics(rows)
    metrics["skipped_rows"] = benchmark.skipped
    write_report(out_dir, metrics, title=f"{benchmark.name}: {settings.model}", settings=asdict(settings))
    return metrics


def sample_and_score(engine, tokenizer, batch: list[str], todo: dict[str, list[int]], by_id: dict, settings: EvalSettings,
                     rewards, max_reward_failures: int, name: str) -> list[dict]:
    """The samples.jsonl rows of one batch of problems (each missing the sample indices todo names); [] for none."""
    if not batch:
        return []
    prompts = [encode_prompt(settings.prompt_template, by_id[pid].problem, tokenizer) for pid in batch]
    count = len(todo[batch[0]])
    seed = stable_seed(settings.seed, tuple(batch), tuple(todo[batch[0]]))
    groups = engine.generate(prompts, count, settings.sampling(), seed=seed)
    flat = [(pid, index, c) for pid, group in zip(batch, groups) for index, c in zip(todo[pid], group)]
    problems = [by_id[pid] for pid, _, _ in flat]
    scores = rewards.score([p.problem for p in problems], [c.text for _, _, c in flat], [c.token_ids for _, _, c in flat],
                           problems, count)
    check_failures(scores, max_reward_failures, f"{name}, one batch of samples")
    return [
        {
            "problem_id": pid,
            "sample_index": index,
            "completion": c.text,
            **scored_fields(g, reward, settings),
            "num_tokens": len(c.token_ids),
            "finish_reason": c.finish_reason,
        }
        for (pid, index, c), g, reward in zip(flat, scores.grades, scores.rewards, strict=True)
    ]


def batches(todo: dict[str, list[int]], batch_rows: int) -> list[list[str]]:
    """Group problems that miss the same sample indices, about batch_rows samples per group."""
    groups: list[list[str]] = []
    for pid, indices in todo.items():
        last = groups[-1] if groups else None
        if last and todo[last[0]] == indices and (len(last) + 1) * len(indices) <= max(batch_rows, len(indices)):
            last.append(pid)
        else:
            groups.append([pid])
    return groups
