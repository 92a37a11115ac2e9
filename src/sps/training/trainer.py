"""The training loop, top to bottom. One step:

  next prompts -> sample G completions each (with log-probs) -> grade -> rollout metrics
  -> phase (rl / irl / rl+irl / joint) -> policy update(s) -> log -> evaluate -> checkpoint

Rerunning with the same output_dir resumes from the newest checkpoint: every step's randomness
is derived from (seed, step), and the prompt position, optimizer, scheduler and SPS buffer are
restored, so a resumed run repeats no step, skips none, and on CPU reproduces an uninterrupted run.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path

import torch

from sps.algorithms.advantages import compute_advantages, fill_unscored
from sps.algorithms.entropy_control import EntropyController
from sps.algorithms.flowrl import HEAD_FILE, attach_log_z_head
from sps.algorithms.irl import irl_token_loss, irl_token_weights
from sps.algorithms.losses import loss_weights
from sps.algorithms.policy_losses import POLICY_LOSSES, active_terms
from sps.evaluation.runner import stable_seed
from sps.grading.rewards import RewardError, reward_spec
from sps.interrupts import Interrupted
from sps.rollout.base import Completion, SamplingParams
from sps.tasks.templates import encode_prompt
from sps.training.batch import PolicyForward, RolloutBatch, collate, collate_rows, policy_logprobs
from sps.training.checkpoint import (
    load_optimizer_state,
    load_trainer_state,
    reading,
    save_checkpoint,
)
from sps.training.config import TrainConfig, as_peft_config
from sps.training.distributed import World, gather_full_weights, init_world, parallelize
from sps.training.metrics import rollout_metrics
from sps.training.optimize import LossPart, optimize
from sps.training.rollouts import Rollouts, record_rollouts
from sps.training.run import RunFiles
from sps.training.sps_phase import DemoBatch, DemoBuffer, Discriminator, Update, build_demos, step_phase
from sps.training.validate import check_inputs, check_world, validate, with_presets


def train(cfg: TrainConfig, show_progress: bool = True, overwrite: bool = False, peft_config=None,
          flag=lambda name: f"{name}=True") -> Path:
    """Train (or resume) the run in cfg.output_dir; returns that folder. cfg.reward_funcs may hold
    Python callables, or be one (a module-level function, recorded by its file; a functools.partial
    or a callable object that pickles: see sps.grading.rewards.reward_spec).
    overwrite: discard the run in cfg.output_dir and start over (needed where its settings, its
    identity (sps.identity: reward code, data, template, start model) or every checkpoint are not
    this run's). flag(name): an option as the caller writes it, in messages.
    peft_config: a peft.LoraConfig, as TRL's trainers take it, in place of cfg.peft (which may be one too)."""
    from sps.evaluation.evaluate import make_engine
    from sps.grading.rewards import RewardFunctions
    from sps.identity import run_identity
    from sps.models.loading import check_device, load_tokenizer, resolve_dtype
    from sps.plugins import load_plugins, resolve_plugin
    from sps.tasks.benchmarks import load_benchmark
    from sps.tasks.prompts import PromptSource

    load_plugins(cfg.plugins)  # first: their methods are choices the settings may name
    funcs = [cfg.reward_funcs] if callable(cfg.reward_funcs) or isinstance(cfg.reward_funcs, str) else cfg.reward_funcs
    cfg = replace(cfg, reward_funcs=[reward_spec(f) for f in funcs], peft=as_peft_config(peft_config or cfg.peft),
                  plugins=[resolve_plugin(p) for p in cfg.plugins])
    cfg, applied = with_presets(cfg)
    validate(cfg)
    device = check_device(cfg.device, "device")
    world = init_world(device)
    check_world(cfg, world.size)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    run = RunFiles(Path(cfg.output_dir), cfg, world, overwrite, flag)

    # Every input is checked before the run folder is touched: a typo fixed and rerun is a fresh start.
    start_model = run.start_model()
    train_data = load_benchmark(cfg.train_data, cfg.data_dir or None)
    train_data, run.eval_benchmarks = eval_benchmarks(cfg, train_data)
    grader = RewardFunctions(cfg.reward_funcs or [cfg.grader or train_data.grader], cfg.reward_weights, cfg.success_threshold, cfg.reward_timeout,
                             memory_limit_gib=cfg.reward_memory_limit)
    try:
        for benchmark in [train_data, *run.eval_benchmarks]:
            grader.check_arguments(benchmark.problems[0])
        tokenizer = load_tokenizer(start_model)
        check_inputs(cfg, start_model, tokenizer, train_data, run.eval_benchmarks)
        identity = run_identity(cfg, start_model, train_data, run.eval_benchmarks, tokenizer)
        checkpoint, notices = run.start(identity)
    except BaseException:
        grader.close()
        raise
    step = checkpoint[0] if checkpoint else 0
    run.note_skipped(train_data)
    if world.is_main:
        for line in applied:
            print(f"NOTICE: {line}")

    # The policy, its optimizer, and what it trains on.
    torch.manual_seed(cfg.seed)
    compute_dtype = resolve_dtype(cfg.dtype, device)
    model, tokenizer, reference = policy_and_reference(cfg, start_model, checkpoint[1] if checkpoint else None, device, compute_dtype)
    template = cfg.prompt_template or train_data.template
    prompts = PromptSource(
        train_data.problems, cfg.prompts_per_step, cfg.prompt_mode, cfg.train_size or len(train_data.problems), cfg.seed
    )
    engine = make_engine(cfg.engine, model, tokenizer, start_model, cfg.generation_batch_size, sleep=cfg.vllm_sleep,
                         dtype=str(compute_dtype).removeprefix("torch."))
    sampling = SamplingParams(cfg.temperature, cfg.top_p, 0, cfg.max_completion_length)
    optimizer = torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad], lr=cfg.learning_rate, betas=(cfg.adam_beta1, cfg.adam_beta2), weight_decay=cfg.weight_decay
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / max(cfg.warmup_steps, 1)))
    needs_buffer = (cfg.algorithm == "sps" and cfg.sps.demo_source == "buffer") or cfg.replay_buffer
    buffer = DemoBuffer(cfg.sps.buffer_window, cfg.sps.buffer_size) if needs_buffer else None
    # Adversarial IRL's discriminator (sps.demo_weighting adversarial) keeps training across steps.
    discriminator = (Discriminator(cfg.sps.discriminator_steps, cfg.sps.discriminator_learning_rate, cfg.sps.discriminator_l2)
                     if cfg.algorithm == "sps" and cfg.sps.demo_weighting == "adversarial" else None)
    adaptive = cfg.adaptive_entropy
    entropy_control = (
        EntropyController(cfg.entropy_coef, adaptive.target, adaptive.delta, adaptive.coef_min, adaptive.coef_max)
        if adaptive.enabled else EntropyController.fixed(cfg.entropy_coef)
    )
    nonfinite_streak = 0
    shaping_state: dict = {}  # reward shapings' own state across steps (outcome_bonus: answer counts)
    if checkpoint:
        state = load_trainer_state(checkpoint[1])
        load_optimizer_state(checkpoint[1], model, optimizer)
        scheduler.load_state_dict(state["scheduler"])
        prompts.load_state_dict(state["prompts"])
        nonfinite_streak = state["nonfinite_streak"]
        if buffer is not None:
            buffer.load_state_dict(state["buffer"])
        if discriminator is not None:
            discriminator.load_state_dict(state["discriminator"])
        if state.get("entropy_control"):
            entropy_control.load_state_dict(state["entropy_control"])
        shaping_state = state.get("shaping", {})
    gather_full_weights(model)  # sampling and evaluation run on full weights (see distributed.py)

    if step == 0:
        run.evaluate(0, model, tokenizer, engine)
    try:
        with run.progress(step) as show:
            while step < cfg.max_steps:
                step += 1
                metrics = training_step(
                    cfg, world, step, model, tokenizer, reference, engine, grader, prompts, template,
                    sampling, optimizer, buffer, discriminator, entropy_control, shaping_state,
                )
                if notices:  # what resuming found (a damaged checkpoint skipped, leftovers removed)
                    metrics["notices"], notices = notices, []
                scheduler.step()
                metrics["learning_rate"] = scheduler.get_last_lr()[0]
                nonfinite_streak = nonfinite_streak + 1 if metrics["nonfinite_updates"] else 0
                run.log(step, metrics)
                show(metrics)
                if nonfinite_streak >= cfg.max_nonfinite_steps:
                    raise RuntimeError(
                        f"stopped at step {step}: {nonfinite_streak} steps in a row had a NaN or infinite loss or "
                        "gradient (their updates were skipped); lower learning_rate or check the data"
                    )
                if run.eval_due(step):
                    run.evaluate(step, model, tokenizer, engine)
                if step % cfg.save_every == 0 or step == cfg.max_steps:
                    state = {
                        "step": step,
                        "scheduler": scheduler.state_dict(),
                        "prompts": prompts.state_dict(),
                        "nonfinite_streak": nonfinite_streak,
                        "buffer": buffer.state_dict() if buffer is not None else None,
                        "discriminator": discriminator.state_dict() if discriminator is not None else None,
                        "entropy_control": entropy_control.state_dict(),
                        "shaping": shaping_state,
                        "config": asdict(cfg),
                    }
                    save_checkpoint(run.dir, step, model, optimizer, tokenizer, state, cfg.keep_checkpoints, world)
                    gather_full_weights(model)
    except (KeyboardInterrupt, Interrupted) as interrupt:
        raise Interrupted(getattr(interrupt, "signal_number", 2), f"interrupted at step {step}") from None
    finally:
        grader.close()
        run.close()
        if hasattr(engine, "close"):  # last: vLLM's shutdown also ends the process group
            engine.close()
    return run.dir


def eval_benchmarks(cfg: TrainConfig, train_data):
    """(the problems to train on, the benchmarks to evaluate on). Own training data with the default
    eval_benchmark is evaluated on rows held out of it: the testbed's Countdown problems scored by
    another task's reward would give meaningless numbers."""
    from sps.tasks.benchmarks import TESTBED_SPLITS, hold_out, load_benchmark, split_specs

    if cfg.eval_every < 0:
        return train_data, []
    default = TrainConfig.__dataclass_fields__["eval_benchmark"].default
    if cfg.eval_benchmark != default or cfg.train_data in TESTBED_SPLITS:
        return train_data, [load_benchmark(spec, cfg.data_dir or None) for spec in split_specs(cfg.eval_benchmark)]
    count = cfg.eval_split or min(200, max(1, len(train_data.problems) // 10))
    train_data, held = hold_out(train_data, count)
    print(f"NOTICE: evaluating on {held.source}, held out of training (eval_benchmark is left at {default}, the testbed's task); "
          "set eval_benchmark, eval_split, or eval_every -1 for no evaluation")
    return train_data, [held]


def policy_and_reference(cfg: TrainConfig, start_model: str, checkpoint: Path | None, device: str, compute_dtype: torch.dtype):
    """(policy, tokenizer, reference log-probs) of a run starting or resuming. The policy trains
    every weight, kept in float32 (the master copy; dtype is what it computes in), or (peft.r > 0)
    LoRA adapters on a frozen base in the compute dtype. The reference, what the KL and DPH compare
    with, is rows -> (B, T) log-probs of the start model: a frozen copy, or the policy with its
    adapters off; None when no loss needs it."""
    from sps.models.loading import load_policy
    from sps.models.lora import add_adapters, load_adapters

    p = cfg.peft
    if p.r:
        base, tokenizer = load_policy(start_model, str(compute_dtype).removeprefix("torch."), device)
        with reading(checkpoint, "the LoRA adapter"):
            model = load_adapters(base, checkpoint) if checkpoint else add_adapters(base, p.r, p.lora_alpha, p.lora_dropout, p.target_modules)
    else:
        with reading(checkpoint, "the model"):
            model, tokenizer = load_policy(str(checkpoint or start_model), "float32", device)
    needs = forward_needs(cfg, entropy_coef=0.0)
    if "log_z" in needs:  # FlowRL's log Z head trains with the policy (sps.algorithms.flowrl)
        with reading(checkpoint, HEAD_FILE):
            attach_log_z_head(model, cfg.policy_loss.flowrl_head_layers, checkpoint)
    model = parallelize(model, cfg.parallelism, compute_dtype, cfg.cpu_offload, cfg.gradient_checkpointing)
    if "reference" not in needs:
        return model, tokenizer, None
    if p.r:
        def reference(rows: RolloutBatch) -> torch.Tensor:
            with model.disable_adapter():
                return policy_logprobs(model, rows, cfg.temperature, chunk_size=cfg.logits_chunk_size)[0].cpu()
    else:
        frozen = load_policy(start_model, cfg.dtype, device)[0].requires_grad_(False)

        def reference(rows: RolloutBatch) -> torch.Tensor:
            return policy_logprobs(frozen, rows, cfg.temperature, chunk_size=cfg.logits_chunk_size)[0].cpu()
    return model, tokenizer, reference


def training_step(
    cfg: TrainConfig, world: World, step: int, model, tokenizer, reference, engine, grader, prompts, template,
    sampling: SamplingParams, optimizer, buffer: DemoBuffer | None, discriminator: Discriminator | None,
    entropy_control: EntropyController, shaping_state: dict,
) -> dict[str, float]:
    """Sample, grade and update once; returns the step's metrics."""
    start = time.monotonic()
    # This process's share of the step's prompts: a contiguous slice of the global batch.
    problems = prompts.next_batch()
    share = len(problems) // world.size
    problems = problems[world.rank * share : (world.rank + 1) * share]
    prompt_ids = [encode_prompt(template, p.problem, tokenizer) for p in problems]

    t0 = time.monotonic()
    groups = engine.generate(prompt_ids, cfg.num_generations, sampling, seed=stable_seed(cfg.seed, step, world.rank))
    t1 = time.monotonic()
    completions = [c for g in groups for c in g]
    repeated = [p for p in problems for _ in range(cfg.num_generations)]
    scores = grader.score([p.problem for p in repeated], [c.text for c in completions], [c.token_ids for c in completions],
                          repeated, cfg.num_generations)
    failures = int(world.sum(torch.tensor(len(scores.failures))))  # every process stops, or none
    if failures > cfg.max_reward_failures:
        first = scores.failures[0] if scores.failures else "on another process"
        raise RewardError(f"step {step}: {failures} reward failure(s), more than max_reward_failures ({cfg.max_reward_failures}); first: {first}")  # noqa: E501
    t2 = time.monotonic()
    batch = collate(prompt_ids, groups, tokenizer.pad_token_id)
    if cfg.recompute_old_logprobs:
        model.eval()
        with torch.no_grad():
            batch.old_logps = policy_logprobs(model, batch, cfg.temperature, chunk_size=cfg.logits_chunk_size)[0].cpu() * batch.completion_mask
    rewards = torch.tensor(scores.rewards).view(len(problems), cfg.num_generations)  # NaN: unscored
    success = rewards >= cfg.success_threshold
    rollouts = record_rollouts(world, problems, prompt_ids, groups, scores.grades, batch, rewards, success)
    metrics = rollout_metrics(rollouts.everywhere, cfg.num_generations)
    metrics["reward/failures"] = float(failures)
    # The adaptive entropy bonus steers -mean log-prob of the sampled tokens (Skywork-OR1's measure).
    sampled_entropy = -sum(rollouts.everywhere.logp_sums) / max(float(rollouts.everywhere.lengths.sum()), 1.0)
    entropy_coef = entropy_control.bonus()

    phase = step_phase(cfg, step, metrics)
    if buffer is not None:
        buffer.add_successes(rollouts.problem_ids, groups, success, step)
        buffer.forget_expired(step)

    def score(rows: RolloutBatch) -> torch.Tensor:
        return policy_logprobs(model, rows, cfg.temperature, chunk_size=cfg.logits_chunk_size)[0].cpu()

    demos, replayed = None, 0
    model.eval()
    with torch.no_grad():
        if phase.needs_demos:
            demos = build_demos(cfg.sps, prompt_ids, rollouts.problem_ids, groups, success.tolist(), buffer, step, score,
                                tokenizer.pad_token_id, discriminator)
        if world.size > 1 and float(world.sum(torch.tensor(float(demos is not None)))) < world.size:
            demos = None  # every process must take the same updates: skip IRL unless all have demos
        if cfg.replay_buffer:
            batch, replayed = with_replay(rollouts, buffer, step, score, tokenizer.pad_token_id)

    def parts(update: Update) -> list[LossPart]:
        built = {
            "rl": lambda: rl_part(cfg, world, reference, rollouts, batch, replayed, step, entropy_coef, metrics, shaping_state),
            "irl": lambda: None if demos is None else irl_part(cfg, world, demos, update.irl_scale),
        }
        return [part for part in (built[name]() for name in update.parts) if part is not None]

    metrics["nonfinite_updates"] = 0
    for update in phase.updates:
        result = run_update(cfg, world, model, optimizer, parts(update), update, seed=stable_seed(cfg.seed, step, update.seed))
        metrics["nonfinite_updates"] += result.pop("nonfinite_updates")
        if result.pop("nonfinite_weights"):
            raise ValueError(f"step {step}: an update left weights that are not finite (learning_rate {cfg.learning_rate:g}); "
                             "lower learning_rate: the checkpoints written so far are intact")
        metrics.update({update.prefix + name: value for name, value in result.items()})
    if hasattr(engine, "load_weights"):  # an engine with its own copy of the weights (vLLM)
        engine.load_weights(model)
        gather_full_weights(model)  # taking the state dict resharded a sharded model
    t3 = time.monotonic()

    metrics["phase"] = phase.name
    metrics["entropy_control/coef"], metrics["entropy_control/sampled_entropy"] = entropy_coef, sampled_entropy
    entropy_control.update(sampled_entropy)
    if demos is not None:
        metrics.update(demos.stats)
    if buffer is not None:
        metrics["buffer/prompts"] = float(len(buffer.entries))
    if cfg.replay_buffer:
        metrics["replay/rows"] = float(replayed)
    generated = float(rollouts.everywhere.lengths.sum())
    metrics.update(
        {
            "time/generate": t1 - t0,
            "time/grade": t2 - t1,
            "time/train": t3 - t2,
            "tokens_per_second/generate": generated / max(t1 - t0, 1e-9),
            "tokens_per_second/train": generated / max(t3 - t2, 1e-9),
            "time/step": time.monotonic() - start,
        }
    )
    return metrics


def forward_needs(cfg: TrainConfig, entropy_coef: float) -> set[str]:
    """What the RL loss's forward pass must provide: the policy loss's needs and its active terms'."""
    needs = set(POLICY_LOSSES[cfg.loss_mode].needs)
    for term, _ in active_terms(cfg, entropy_coef).values():
        needs.update(term.needs)
    return needs


def rl_part(
    cfg: TrainConfig, world: World, reference: Callable[[RolloutBatch], torch.Tensor] | None, rollouts: Rollouts,
    batch: RolloutBatch, replayed: int, step: int, entropy_coef: float, metrics: dict, shaping_state: dict | None = None,
) -> LossPart:
    """The GRPO-family loss on this step's rollouts (`batch`: theirs, plus `replayed` buffer rows at
    the end with advantage replay_advantage): loss_mode's policy loss on the advantages of the
    rewards, plus each active loss term (beta * KL, -entropy_coef * entropy). The advantages see the
    whole global batch; their metrics go into `metrics`; a reward shaping's state across steps is in
    shaping_state (by name, updated in place). reference: rows -> the start model's log-probs."""
    everywhere = rollouts.everywhere
    rewards = fill_unscored(everywhere.rewards)
    advantages, found = compute_advantages(cfg, rewards, everywhere.success, everywhere.mean_logps, step,
                                           everywhere.answers(), everywhere.problem_ids, shaping_state)
    metrics.update(found)
    rows = rollouts.rewards.numel()
    advantages = advantages.flatten()[world.rank * rows : (world.rank + 1) * rows]
    advantages = torch.cat([advantages, torch.full((replayed,), cfg.replay_advantage)])
    success = torch.cat([rollouts.success.flatten(), torch.ones(replayed, dtype=torch.bool)])  # replayed rows succeeded
    mask = batch.completion_mask.clone()
    mask[:rows][rollouts.rewards.flatten().isnan()] = 0  # unscored: no reward to learn from
    if cfg.mask_truncated_completions:
        mask[batch.truncated] = 0
    if cfg.drop_zero_variance_groups:
        rewards = fill_unscored(rollouts.rewards)
        mask[:rows][(rewards.max(1).values == rewards.min(1).values).repeat_interleave(cfg.num_generations)] = 0
    policy_loss = POLICY_LOSSES[cfg.loss_mode]
    terms = active_terms(cfg, entropy_coef)
    needs = forward_needs(cfg, entropy_coef)
    # A row whose loss is identically zero needs no forward pass; it still counts in the normalisers.
    contributes = (advantages != 0) | bool(terms) | policy_loss.every_row
    ref_logps = None
    if "reference" in needs:
        with torch.no_grad():
            ref_logps = reference(batch)
    generator = torch.Generator().manual_seed(stable_seed(cfg.seed, step, "policy_loss"))  # for losses that draw tokens

    def token_weights(index: torch.Tensor) -> torch.Tensor:
        m = mask[index]
        sequences = int(world.sum(torch.tensor(float((m.sum(-1) > 0).sum()))))
        tokens = int(world.sum(m.sum()))
        return loss_weights(m, cfg.loss_type, sequences, tokens, cfg.max_completion_length) * contributes[index].unsqueeze(-1)

    def token_loss(forward: PolicyForward, index: torch.Tensor):
        logps = forward.logps
        device, width = logps.device, logps.shape[1]
        inputs = {
            "logp": logps, "old_logp": batch.old_logps[index, :width].to(device), "advantages": advantages[index].to(device),
            "success": success[index].to(device), "mask": mask[index, :width].to(device), "entropy": forward.entropy,
            "topk_logp": forward.topk_logps, "is_top1": forward.is_top1, "generator": generator,
            "ref_logp": None if ref_logps is None else ref_logps[index, :width].to(device), "log_z": forward.log_z,
        }
        loss, stats = policy_loss.fn(cfg, **inputs)
        for term, coef in terms.values():
            value, term_stats = term.fn(cfg, **inputs)
            loss = loss + coef * value
            stats.update(term_stats)
        return loss, stats

    names = policy_loss.metrics + tuple(name for term, _ in terms.values() for name in term.metrics)
    top_k = cfg.policy_loss.simko_top_k if "topk" in needs else 0
    return LossPart(batch, token_weights, token_loss, needs_entropy="entropy" in needs, top_k=top_k, stat_names=names,
                    needs_log_z="log_z" in needs)


def with_replay(rollouts: Rollouts, buffer: DemoBuffer, step: int, score, pad_id: int) -> tuple[RolloutBatch, int]:
    """The step's batch with each prompt's buffered correct trajectories that this step did not
    sample appended as extra rows (their old log-probs from the current policy); returns (batch, rows added)."""
    batch, groups = rollouts.batch, rollouts.groups
    rows = []
    for prompt, pid, group in zip(rollouts.prompt_ids, rollouts.problem_ids, groups):
        sampled = {c.text for c in group}
        rows += [(prompt, Completion(ids, text, [0.0] * len(ids), "stop")) for ids, text in buffer.demos(pid, step) if text not in sampled]
    if not rows:
        return batch, 0
    size = len(groups[0])
    prompts = [rollouts.prompt_ids[b // size] for b in range(len(batch.texts))] + [p for p, _ in rows]
    merged = collate_rows(prompts, [c for g in groups for c in g] + [c for _, c in rows], pad_id)
    rollout_rows = len(batch.texts)
    merged.old_logps[:rollout_rows, : batch.old_logps.shape[1]] = batch.old_logps
    replay = torch.arange(rollout_rows, len(prompts))
    logps = score(merged.rows(replay))
    merged.old_logps[rollout_rows:, : logps.shape[1]] = logps * merged.completion_mask[rollout_rows:, : logps.shape[1]]
    return merged, len(rows)


def irl_part(cfg: TrainConfig, world: World, demos: DemoBatch, scale: float) -> LossPart:
    """The SPS IRL loss on the step's demonstrations: a weighted mean over prompts."""
    prompts = {k: max(float(world.sum(torch.tensor(float(v)))), 1.0) for k, v in demos.num_prompts.items()}
    per_prompt = torch.where(demos.direction > 0, prompts["pull"], prompts["push"])
    weights = irl_token_weights(demos.token_mask, scale * demos.weight / per_prompt)

    def token_loss(forward: PolicyForward, index: torch.Tensor):
        logps = forward.logps
        old = demos.batch.old_logps[index, : logps.shape[1]].to(logps.device)
        direction = demos.direction[index].to(logps.device)
        return irl_token_loss(logps, old, direction, cfg.sps.irl_epsilon, cfg.sps.irl_beta), {}

    return LossPart(demos.batch, lambda index: weights[index], token_loss)


def run_update(cfg: TrainConfig, world: World, model, optimizer, parts: list[LossPart], update: Update, seed: int) -> dict:
    """optimize() with the run's settings and the update's; its lr_scale multiplies the learning
    rate for this update only."""
    base = [group["lr"] for group in optimizer.param_groups]
    for group in optimizer.param_groups:
        group["lr"] *= update.lr_scale
    try:
        return optimize(model, optimizer, world, parts, cfg, update.epochs, update.minibatches, seed)
    finally:
        for group, lr in zip(optimizer.param_groups, base):
            group["lr"] = lr
