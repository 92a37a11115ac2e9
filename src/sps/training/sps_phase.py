"""The stateful side of SPS: when IRL steps happen, the demonstration buffer, and turning a step's
rollouts into a batch of weighted demonstrations. The maths is in sps.algorithms.irl."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, replace

import torch

from sps.algorithms.irl import (
    DEMO_SCORES,
    IRL_TOKEN_SCOPES,
    demo_weights,
    discriminator_loss,
    first_of_each,
    ngram_features,
    select_demos,
    weight_stats,
)
from sps.rollout.base import Completion
from sps.training.batch import RolloutBatch, collate_rows
from sps.training.config import SPSConfig, TrainConfig

SCHEDULES = ("cycle", "joint", "trigger")
TRIGGER_STATISTICS = {"top1_share": "above", "entropy": "below", "distinct_correct_per_prompt": "below"}
IRL_MODES = ("pull", "push", "pull_push")
DEMO_SOURCES = ("batch", "buffer")


def uniform_prompts(rates: list[float | None], power: float) -> list[float]:
    """Every prompt's demonstrations weigh the same."""
    return [1.0] * len(rates)


def difficult_prompts(rates: list[float | None], power: float) -> list[float]:
    """A prompt weighs (1 - its success rate)^power: the problems the policy rarely solves, which are
    where Pass@k is lost (experiments/results/lost_problems.md), pull hardest. A prompt without
    rollouts this step weighs 1."""
    return [1.0 if rate is None else (1.0 - rate) ** power for rate in rates]


# sps.prompt_weighting -> each prompt's weight from this step's success rates (normalised to mean 1 afterwards).
PROMPT_WEIGHTINGS = {"uniform": uniform_prompts, "difficulty": difficult_prompts}


def validate_sps(cfg: SPSConfig) -> None:
    """Raise ValueError naming the first inconsistent SPS setting."""
    checks = [
        (cfg.schedule in SCHEDULES, f"sps.schedule must be one of {', '.join(SCHEDULES)}"),
        (cfg.irl_mode in IRL_MODES, f"sps.irl_mode must be one of {', '.join(IRL_MODES)}"),
        (cfg.demo_source in DEMO_SOURCES, f"sps.demo_source must be one of {', '.join(DEMO_SOURCES)}"),
        (cfg.demo_weighting in DEMO_SCORES, f"sps.demo_weighting must be one of {', '.join(DEMO_SCORES)}"),
        (cfg.irl_tokens in IRL_TOKEN_SCOPES, f"sps.irl_tokens must be one of {', '.join(IRL_TOKEN_SCOPES)}"),
        (cfg.prompt_weighting in PROMPT_WEIGHTINGS and cfg.difficulty_power >= 0, f"sps.prompt_weighting must be one of {', '.join(PROMPT_WEIGHTINGS)} and difficulty_power >= 0"),
        (cfg.trigger_statistic in TRIGGER_STATISTICS, f"sps.trigger_statistic must be one of {', '.join(TRIGGER_STATISTICS)}"),
        (cfg.rl_steps >= 1 and cfg.irl_steps >= 1, "sps.rl_steps and sps.irl_steps must be >= 1"),
        (cfg.buffer_window >= 1 and cfg.buffer_size >= 1, "sps.buffer_window and sps.buffer_size must be >= 1"),
        (0 < cfg.demo_quantile <= 1, "sps.demo_quantile must be in (0, 1]"),
        (0 < cfg.max_weight <= 1, "sps.max_weight must be in (0, 1]"),
        (cfg.irl_epsilon > 0, "sps.irl_epsilon must be > 0"),
        (cfg.pull_coef >= 0 and cfg.push_coef >= 0, "sps.pull_coef and sps.push_coef must be >= 0"),
        (cfg.discriminator_steps >= 1 and cfg.discriminator_learning_rate > 0 and cfg.discriminator_l2 >= 0,
         "sps.discriminator_steps must be >= 1, discriminator_learning_rate > 0 and discriminator_l2 >= 0"),
    ]
    for ok, message in checks:
        if not ok:
            raise ValueError(message)


def scheduled_phase(cfg: SPSConfig, step: int, stats: dict[str, float]) -> str:
    """What SPS's schedule makes training step `step` (1-based) do with its rollouts.

    "rl": an RL update; "irl": an IRL update instead; "rl+irl": an RL update, then an IRL update
    on the same rollouts; "joint": one update on RL loss + joint_coef * IRL loss.
    cycle: rl_steps RL steps then irl_steps IRL steps; with reuse_rollouts the IRL updates follow
    every rl_steps-th RL step on its rollouts instead of taking steps of their own.
    trigger: an IRL update after the RL update when the batch statistic crosses the threshold.
    """
    if cfg.schedule == "joint":
        return "joint"
    if cfg.schedule == "trigger":
        value = stats.get(cfg.trigger_statistic)
        if value is None:
            return "rl"
        crossed = value > cfg.trigger_threshold if TRIGGER_STATISTICS[cfg.trigger_statistic] == "above" else value < cfg.trigger_threshold
        return "rl+irl" if crossed else "rl"
    if cfg.reuse_rollouts:
        return "rl+irl" if step % cfg.rl_steps == 0 else "rl"
    return "rl" if (step - 1) % (cfg.rl_steps + cfg.irl_steps) < cfg.rl_steps else "irl"


@dataclass(frozen=True)
class Update:
    """One policy update of a step: the loss parts it sums ("rl", "irl"), its minibatches (one
    optimizer step each) and epochs over them, its learning rate as a multiple of the run's, the
    IRL part's weight, where its loss and grad_norm are logged, and its seed's label."""

    parts: tuple[str, ...]
    minibatches: int
    epochs: int
    lr_scale: float = 1.0
    irl_scale: float = 1.0
    prefix: str = ""
    seed: str = "update"


@dataclass(frozen=True)
class Phase:
    """What a step does: its name in the log and its updates, run in order."""

    name: str
    updates: tuple[Update, ...]

    @property
    def needs_demos(self) -> bool:
        return any("irl" in update.parts for update in self.updates)


def step_phase(cfg: TrainConfig, step: int, stats: dict[str, float]) -> Phase:
    """The updates of training step `step`: one RL update (num_iterations epochs over
    steps_per_generation minibatches) unless SPS's schedule says otherwise. An IRL update takes
    one optimizer step on the demonstrations; under joint, the IRL rows are spread over the RL
    minibatches, so each gets a full share (joint_coef x the minibatches)."""
    name = scheduled_phase(cfg.sps, step, stats) if cfg.algorithm == "sps" else "rl"
    rl = Update(("rl",), cfg.steps_per_generation, cfg.num_iterations)
    irl = Update(("irl",), 1, 1, lr_scale=cfg.sps.irl_learning_rate_scale)
    updates = {
        "rl": (rl,),
        "irl": (irl,),
        "rl+irl": (rl, replace(irl, prefix="irl/", seed="irl")),
        "joint": (replace(rl, parts=("rl", "irl"), irl_scale=cfg.sps.joint_coef * cfg.steps_per_generation),),
    }
    return Phase(name, updates[name])


class DemoBuffer:
    """Per prompt, the distinct correct trajectories that on-policy rollouts found in the last
    `window` steps, at most `size` of them (the most recently seen kept), with how many times each
    was sampled since it entered the buffer."""

    def __init__(self, window: int, size: int):
        self.window = window
        self.size = size
        self.entries: dict[str, dict[str, tuple[list[int], int, int]]] = {}  # id -> text -> (token ids, last step seen, times seen)

    def add(self, problem_id: str, step: int, token_ids: list[int], text: str) -> None:
        found = self.entries.setdefault(problem_id, {})
        _, _, times = found.pop(text, (None, None, 0))  # re-inserting moves it to the newest end
        found[text] = (token_ids, step, times + 1)
        while len(found) > self.size:
            del found[next(iter(found))]

    def add_successes(self, problem_ids: list[str], groups: list[list[Completion]], success: torch.Tensor, step: int) -> None:
        """Add every successful completion of the step (groups P x G, success (P, G) bool)."""
        for pid, group, flags in zip(problem_ids, groups, success.tolist(), strict=True):
            for completion, ok in zip(group, flags, strict=True):
                if ok:
                    self.add(pid, step, completion.token_ids, completion.text)

    def demos(self, problem_id: str, step: int) -> list[tuple[list[int], str]]:
        """(token ids, text) of the buffered trajectories still inside the window at `step`."""
        found = self.entries.get(problem_id, {})
        return [(ids, text) for text, (ids, seen, _) in found.items() if step - seen < self.window]

    def times_seen(self, problem_id: str, text: str) -> int:
        """How many times `text` was sampled for the prompt since it entered the buffer (0 if absent)."""
        return self.entries.get(problem_id, {}).get(text, (None, None, 0))[2]

    def forget_expired(self, step: int) -> None:
        for problem_id in list(self.entries):
            found = self.entries[problem_id]
            for text in [t for t, (_, seen, _) in found.items() if step - seen >= self.window]:
                del found[text]
            if not found:
                del self.entries[problem_id]

    def state_dict(self) -> dict:
        return {"window": self.window, "size": self.size, "entries": self.entries}

    def load_state_dict(self, state: dict) -> None:
        # Checkpoints written before the buffer counted sightings hold (ids, step): count those once.
        self.entries = {pid: {text: (entry[0], entry[1], entry[2] if len(entry) > 2 else 1) for text, entry in found.items()}
                        for pid, found in state["entries"].items()}


class Discriminator:
    """Adversarial IRL's learned reward (sps.demo_weighting adversarial): a logistic regression on
    the hashed n-grams of a completion's tokens (sps.algorithms.irl.ngram_features) that tells the
    demonstrations from the policy's fresh rollouts of the same prompts. Every IRL step trains it
    for `steps` full-batch Adam steps from where the last one stopped, so it keeps chasing the
    policy; its reward is its logit, which at the optimum is log q - log pi. A linear model on
    n-grams generalises across trajectories that share pieces, which the exact likelihood does not."""

    FEATURES = 4096  # hash buckets: far more than the testbed's or a short answer's distinct n-grams

    def __init__(self, steps: int, learning_rate: float, l2: float):
        self.steps, self.l2 = steps, l2
        self.params = torch.zeros(self.FEATURES + 1, dtype=torch.float64, requires_grad=True)  # weights, then bias
        self.optimizer = torch.optim.Adam([self.params], lr=learning_rate)

    def _logits(self, features: torch.Tensor) -> torch.Tensor:
        return features @ self.params[:-1] + self.params[-1]

    def reward(self, sequences: list[list[int]]) -> torch.Tensor:
        """r = log D - log(1 - D) of each completion's token ids. Returns (n,) float64."""
        with torch.no_grad():
            return self._logits(ngram_features(sequences, self.FEATURES))

    def fit(self, demos: list[list[int]], rollouts: list[list[int]]) -> dict[str, float]:
        """Train on demonstrations (label 1) against rollouts (label 0); returns its loss and
        balanced accuracy on them, before this round of training."""
        features = ngram_features(demos + rollouts, self.FEATURES)
        is_demo = torch.arange(len(features)) < len(demos)
        with torch.no_grad():
            before = self._logits(features)
        stats = {
            "irl/discriminator_loss": float(discriminator_loss(before, is_demo)),
            "irl/discriminator_accuracy": 0.5 * float((before[is_demo] > 0).double().mean() + (before[~is_demo] <= 0).double().mean()),
        }
        with torch.enable_grad():  # the demos are built under no_grad
            for _ in range(self.steps):
                self.optimizer.zero_grad()
                loss = discriminator_loss(self._logits(features), is_demo) + self.l2 * self.params[:-1].pow(2).sum()
                loss.backward()
                self.optimizer.step()
        return stats

    def state_dict(self) -> dict:
        return {"params": self.params.detach().clone(), "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        with torch.no_grad():
            self.params.copy_(state["params"])
        self.optimizer.load_state_dict(state["optimizer"])


@dataclass
class DemoBatch:
    """The demonstrations of one IRL update. Row i: a demo with its direction (+1 pull, -1 push),
    weight (its weight within its prompt times the term's coefficient) and the tokens the loss acts on."""

    batch: RolloutBatch
    direction: torch.Tensor  # (D,)
    weight: torch.Tensor  # (D,)
    token_mask: torch.Tensor  # (D, T) float, 1 where the IRL loss acts (sps.irl_tokens)
    num_prompts: dict[str, int]  # prompts with demos, per term ("pull", "push")
    stats: dict[str, float]


def build_demos(
    cfg: SPSConfig,
    prompt_ids: list[list[int]],
    problem_ids: list[str],
    rollouts: list[list[Completion]],
    correct: list[list[bool]],
    buffer: DemoBuffer | None,
    step: int,
    score,
    pad_id: int,
    discriminator: Discriminator | None = None,
) -> DemoBatch | None:
    """Select and weight the demonstrations of every prompt; None when there are none.

    score(batch) -> (B, T) log-probs of the rows under the current policy (no gradient): used for
    buffered demos, which carry no rollout log-probs. Rollout log-probs serve batch demos.
    discriminator (demo_weighting adversarial): trained here on the distinct correct candidates
    against this step's rollouts, then scores the candidates.
    """
    candidates = []  # per prompt: (completions, correct flags, times each was sampled)
    for p, pid in enumerate(problem_ids):
        if cfg.demo_source == "buffer":
            found = buffer.demos(pid, step)
            completions = [Completion(ids, text, [0.0] * len(ids), "stop") for ids, text in found]
            candidates.append((completions, [True] * len(completions), [buffer.times_seen(pid, text) for _, text in found]))
        else:
            sampled = Counter(c.text for c in rollouts[p])
            candidates.append((rollouts[p], correct[p], [sampled[c.text] for c in rollouts[p]]))
    rows = [(p, c) for p, (completions, _, _) in enumerate(candidates) for c in completions]
    if not rows:
        return None
    pool = collate_rows([prompt_ids[p] for p, _ in rows], [c for _, c in rows], pad_id)
    if cfg.demo_source == "buffer":
        pool.old_logps = score(pool) * pool.completion_mask
    mean_logps = pool.old_logps.sum(-1) / pool.completion_mask.sum(-1).clamp(min=1)
    counts = torch.tensor([n for _, _, times in candidates for n in times], dtype=torch.float)
    learned_reward, learned_stats = None, {}
    if discriminator is not None:
        # The positives sample q: each prompt's distinct correct trajectories, once each.
        correct_rows = [i for i, ok in enumerate(ok for _, flags, _ in candidates for ok in flags) if ok]
        per_prompt = [f"{p}\x00{c.text}" for p, c in rows]
        distinct = first_of_each(per_prompt, torch.tensor(correct_rows, dtype=torch.long)).tolist()
        if distinct:
            rows_ids = [c.token_ids for _, c in rows]
            learned_stats = discriminator.fit([rows_ids[i] for i in distinct], [c.token_ids for group in rollouts for c in group])
            learned_reward = discriminator.reward(rows_ids)
        else:
            learned_reward = torch.zeros(len(rows), dtype=torch.float64)  # nothing to learn from: uniform
    demo_score = DEMO_SCORES[cfg.demo_weighting](mean_logps, counts, learned_reward)  # (N,)
    token_scope = torch.zeros_like(pool.completion_mask, dtype=torch.bool)  # (N, T), set per prompt below

    # How much each prompt's demonstrations weigh, from how often this step's rollouts solved it.
    rates = [sum(flags) / len(flags) if len(flags) else None for flags in correct]
    prompt_weight = PROMPT_WEIGHTINGS[cfg.prompt_weighting](rates, cfg.difficulty_power)
    chosen, direction, weight, used = [], [], [], []
    num_prompts = {"pull": 0, "push": 0}
    effective, entropies = [], []
    start = 0
    for p, (completions, flags, _) in enumerate(candidates):
        index = torch.arange(start, start + len(completions))
        start += len(completions)
        if not len(index):
            continue
        picked = index[select_demos(torch.tensor(flags, dtype=torch.bool), mean_logps[index], cfg.demos, cfg.demo_quantile)]
        if cfg.dedup:
            picked = first_of_each(pool.texts, picked)
        scope = IRL_TOKEN_SCOPES[cfg.irl_tokens]([completions[i - int(index[0])].token_ids for i in picked.tolist()], token_scope.shape[1])
        if not scope.any():
            continue  # no demos, or nothing to reshape among them (one demo, with irl_tokens: fork)
        token_scope[picked] = scope
        used.append(prompt_weight[p])
        if cfg.irl_mode in ("pull", "pull_push"):
            w = demo_weights(demo_score[picked], cfg.reshape_strength, cfg.max_weight)
            chosen.append(picked)
            direction.append(torch.ones(len(picked)))
            weight.append(cfg.pull_coef * w * prompt_weight[p])
            num_prompts["pull"] += 1
            e, h = weight_stats(w)
            effective.append(e)
            entropies.append(h)
        if cfg.irl_mode in ("push", "pull_push"):
            head = picked[mean_logps[picked] > cfg.push_floor]
            if len(head):
                chosen.append(head)
                direction.append(-torch.ones(len(head)))
                weight.append(cfg.push_coef * demo_weights(demo_score[head], -cfg.reshape_strength, cfg.max_weight) * prompt_weight[p])
                num_prompts["push"] += 1
    if not chosen:
        return None
    scale = sum(used) / len(used)  # prompt weights average 1 over the prompts with demonstrations
    weight = [w / scale if scale > 0 else w * 0 for w in weight]
    index = torch.cat(chosen)
    stats = {
        "irl/prompts_with_demos": float(num_prompts["pull"] or num_prompts["push"]),
        "irl/demos": float(len(index)),
        "irl/effective_demos": sum(effective) / len(effective) if effective else 0.0,
        "irl/weight_entropy": sum(entropies) / len(entropies) if entropies else 0.0,
        "irl/demo_mean_logp": float(mean_logps[index].mean()),
        **learned_stats,
    }
    stats["irl/scoped_token_fraction"] = float(token_scope[index].sum() / pool.completion_mask[index].sum())
    batch = pool.rows(index)
    return DemoBatch(batch, torch.cat(direction), torch.cat(weight), token_scope[index, : batch.completion_mask.shape[1]].float(), num_prompts, stats)
