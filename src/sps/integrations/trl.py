"""SPS for TRL users: TRL's GRPOTrainer plus SPS's inverse-RL step (docs/trl.md).

    from sps.integrations.trl import SPSGRPOConfig, SPSGRPOTrainer

is a drop-in for `GRPOConfig` / `GRPOTrainer`. Every completion whose total reward reaches
`sps_correct_reward` goes into SPS's buffer of distinct correct completions per prompt
(sps.training.sps_phase.DemoBuffer, replicated on every process). The schedule is SPS's `cycle`:
`sps_rl_steps` GRPO optimizer steps, then `sps_irl_steps` IRL steps, whose loss is SPS's IRL loss
(sps.algorithms.irl) on the buffered demonstrations of the latest generation batch's prompts,
weighted softmax(-reshape_strength * mean log-likelihood) within each prompt. The buffer's
window counts generation batches; with TRL's defaults (steps_per_generation equal to
gradient_accumulation_steps, num_iterations 1) a generation batch is one optimizer step, as in sps.
"""

from __future__ import annotations

import dataclasses

import trl

SUPPORTED_TRL_VERSIONS = ("1.16.0",)
if trl.__version__ not in SUPPORTED_TRL_VERSIONS:
    raise ImportError(
        f"sps.integrations.trl is tested with trl {', '.join(SUPPORTED_TRL_VERSIONS)}; found trl {trl.__version__}. "
        f"Install a tested version: pip install trl=={SUPPORTED_TRL_VERSIONS[-1]}"
    )

import torch  # noqa: E402
from accelerate.utils import gather_object  # noqa: E402
from trl import GRPOConfig, GRPOTrainer  # noqa: E402

from sps.algorithms.irl import irl_token_loss, irl_token_weights  # noqa: E402
from sps.training.batch import policy_logprobs  # noqa: E402
from sps.training.config import SPSConfig, TrainConfig  # noqa: E402
from sps.training.sps_phase import DemoBuffer, build_demos, step_phase, validate_sps  # noqa: E402

# The SPSConfig options a TRL user sets, as GRPOConfig fields named sps_<option>.
SPS_OPTIONS = ("rl_steps", "irl_steps", "reshape_strength", "buffer_window", "buffer_size", "max_weight", "irl_epsilon")


def _sps_field(name: str):
    """A GRPOConfig field with SPSConfig's default and help text for option `name`."""
    source = {f.name: f for f in dataclasses.fields(SPSConfig)}[name]
    return dataclasses.field(default=source.default, metadata={"help": "SPS: " + source.metadata["help"]})


@dataclasses.dataclass
class SPSGRPOConfig(GRPOConfig):
    """GRPOConfig plus SPS's options (defaults and meanings as in `sps train`)."""

    sps_rl_steps: int = _sps_field("rl_steps")
    sps_irl_steps: int = _sps_field("irl_steps")
    sps_reshape_strength: float = _sps_field("reshape_strength")
    sps_buffer_window: int = _sps_field("buffer_window")
    sps_buffer_size: int = _sps_field("buffer_size")
    sps_max_weight: float = _sps_field("max_weight")
    sps_irl_epsilon: float = _sps_field("irl_epsilon")
    sps_correct_reward: float = dataclasses.field(
        default=1.0, metadata={"help": "SPS: a completion whose total (weighted) reward is at least this is correct"}
    )

    def __post_init__(self):
        super().__post_init__()
        validate_sps(self.sps_config())

    def sps_config(self) -> SPSConfig:
        """The equivalent `sps train` settings: cycle schedule, pull demos from the buffer."""
        options = {name: getattr(self, f"sps_{name}") for name in SPS_OPTIONS}
        return SPSConfig(schedule="cycle", demo_source="buffer", irl_mode="pull", **options)


def ids_key(ids) -> str:
    """A token sequence as a string key (prompts and completions are told apart by their token ids)."""
    return " ".join(map(str, ids))


class SPSGRPOTrainer(GRPOTrainer):
    """GRPOTrainer whose IRL steps (chosen by SPS's cycle schedule) take SPS's IRL loss."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if not isinstance(self.args, SPSGRPOConfig):
            raise TypeError(f"SPSGRPOTrainer needs args=SPSGRPOConfig(...), got {type(self.args).__name__}")
        self.sps = self.args.sps_config()
        self.schedule = TrainConfig(algorithm="sps", sps=self.sps)  # step_phase's view of the run: the cycle
        self.demo_buffer = DemoBuffer(self.sps.buffer_window, self.sps.buffer_size)
        self.generation_batches = 0  # the buffer's clock
        self.batch_prompts: list[list[int]] = []  # the distinct prompts of the latest generation batch, all processes
        self._local_correct: list[bool] = []

    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        rewards_per_func = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)  # all processes
        total = (rewards_per_func * self.reward_weights.to(rewards_per_func.device)).nansum(dim=1)
        start = self.accelerator.process_index * len(prompts)
        self._local_correct = (total[start : start + len(prompts)] >= self.args.sps_correct_reward).tolist()
        return rewards_per_func

    def _generate_and_score_completions(self, inputs):
        output = super()._generate_and_score_completions(inputs)
        if self.model.training:
            self._record_rollouts(output)
        return output

    def _record_rollouts(self, output: dict) -> None:
        """Add this batch's correct completions (from every process) to the buffer."""
        rows = []
        for prompt, prompt_mask, completion, completion_mask, ok in zip(
            output["prompt_ids"].tolist(), output["prompt_mask"].tolist(),
            output["completion_ids"].tolist(), output["completion_mask"].tolist(), self._local_correct, strict=True,
        ):
            prompt = [t for t, m in zip(prompt, prompt_mask) if m]
            completion = [t for t, m in zip(completion, completion_mask) if m] if ok else None
            rows.append((prompt, completion))
        self.generation_batches += 1
        seen, self.batch_prompts = set(), []
        for prompt, completion in gather_object(rows):
            key = ids_key(prompt)
            if key not in seen:
                seen.add(key)
                self.batch_prompts.append(prompt)
            if completion:
                self.demo_buffer.add(key, self.generation_batches, completion, ids_key(completion))
        self.demo_buffer.forget_expired(self.generation_batches)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        phase = step_phase(self.schedule, self.state.global_step + 1, {})
        if not self.model.training or any("rl" in update.parts for update in phase.updates):
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        step = self.generation_batches
        with_demos = [p for p in self.batch_prompts if self.demo_buffer.demos(ids_key(p), step)]
        if not with_demos:  # no prompt of the batch has a demonstration anywhere: a GRPO step instead
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        # The prompts are dealt round-robin to (process, accumulation micro-step) slots; each slot's
        # loss is its share of the mean over prompts, times the processes (DDP averages gradients).
        processes, micro_steps = self.accelerator.num_processes, self.current_gradient_accumulation_steps
        slot = self.accelerator.process_index + processes * (self._step % micro_steps)
        share = with_demos[slot :: processes * micro_steps]
        # A slot without prompts still runs forward and backward (times 0) so gradient syncs line up.
        loss, stats = self.irl_loss(model, share or with_demos[:1], len(with_demos))
        if not share:
            return 0.0 * loss
        for name, value in stats.items():
            self._metrics["train"][name].append(value)
        return processes * loss

    def irl_loss(self, model, prompts: list[list[int]], num_prompts: int) -> tuple[torch.Tensor, dict[str, float]]:
        """SPS's IRL loss on the buffered demonstrations of `prompts`, as a share of the mean over
        `num_prompts` prompts; returns (loss, demo statistics)."""
        temperature = self.args.temperature

        def score(rows):
            return policy_logprobs(model, rows, temperature)[0].cpu()

        keys = [ids_key(p) for p in prompts]
        with torch.no_grad():
            demos = build_demos(
                self.sps, prompts, keys, [[]] * len(prompts), [[]] * len(prompts),
                self.demo_buffer, self.generation_batches, score, self._tokenizer.pad_token_id,
            )
        logps = policy_logprobs(model, demos.batch, temperature)[0]
        device = logps.device
        weights = irl_token_weights(demos.token_mask, demos.weight / num_prompts).to(device)
        old = demos.batch.old_logps.to(device)
        per_token = irl_token_loss(logps, old, demos.direction.to(device), self.sps.irl_epsilon, self.sps.irl_beta)
        return (weights * per_token).sum(), demos.stats
