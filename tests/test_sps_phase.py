"""The stateful side of SPS: which steps are IRL steps, the demonstration buffer, and the
demonstrations a step's rollouts yield."""

import math
from dataclasses import replace

import pytest
import torch

from sps.rollout.base import Completion
from sps.training.config import SPSConfig, TrainConfig
from sps.training.sps_phase import (
    DemoBuffer,
    Discriminator,
    Update,
    build_demos,
    scheduled_phase,
    step_phase,
    validate_sps,
)


def phases(cfg: SPSConfig, steps: int = 6, stats: dict | None = None) -> list[str]:
    return [scheduled_phase(cfg, step, stats or {}) for step in range(1, steps + 1)]


def test_cycle_alternates_rl_and_irl_steps():
    cfg = SPSConfig(schedule="cycle", reuse_rollouts=False)
    assert phases(replace(cfg, rl_steps=1, irl_steps=1)) == ["rl", "irl"] * 3
    assert phases(replace(cfg, rl_steps=2, irl_steps=1)) == ["rl", "rl", "irl"] * 2
    assert phases(replace(cfg, rl_steps=1, irl_steps=2)) == ["rl", "irl", "irl"] * 2


def test_reused_rollouts_keep_every_rl_update():
    assert phases(SPSConfig(rl_steps=2, reuse_rollouts=True)) == ["rl", "rl+irl"] * 3


def test_joint_and_trigger_schedules():
    assert phases(SPSConfig(schedule="joint")) == ["joint"] * 6
    trigger = SPSConfig(schedule="trigger", trigger_statistic="top1_share", trigger_threshold=0.6)
    assert scheduled_phase(trigger, 1, {"top1_share": 0.7}) == "rl+irl"
    assert scheduled_phase(trigger, 1, {"top1_share": 0.5}) == "rl"
    assert scheduled_phase(trigger, 1, {}) == "rl"  # no correct rollout: nothing to measure
    entropy = replace(trigger, trigger_statistic="entropy", trigger_threshold=0.1)
    assert scheduled_phase(entropy, 1, {"entropy": 0.05}) == "rl+irl"


def test_each_phase_is_its_list_of_updates():
    cfg = TrainConfig(algorithm="sps", steps_per_generation=4, num_iterations=2,
                      sps=SPSConfig(irl_learning_rate_scale=0.5, joint_coef=0.3))
    rl, irl = Update(("rl",), 4, 2), Update(("irl",), 1, 1, lr_scale=0.5)
    assert step_phase(cfg, 1, {}).updates == (rl,) and step_phase(cfg, 2, {}).updates == (irl,)
    reuse = replace(cfg, sps=replace(cfg.sps, reuse_rollouts=True))
    assert step_phase(reuse, 1, {}).updates == (rl, Update(("irl",), 1, 1, lr_scale=0.5, prefix="irl/", seed="irl"))
    joint = step_phase(replace(cfg, sps=replace(cfg.sps, schedule="joint")), 1, {})
    assert joint.name == "joint" and joint.updates == (Update(("rl", "irl"), 4, 2, irl_scale=0.3 * 4),)
    assert step_phase(replace(cfg, algorithm="grpo"), 2, {}).updates == (rl,)  # GRPO: every step RL
    assert step_phase(cfg, 2, {}).needs_demos and not step_phase(cfg, 1, {}).needs_demos


@pytest.mark.parametrize(("change", "named"), [({"schedule": "sometimes"}, "sps.schedule"), ({"irl_steps": 0}, "sps.rl_steps"),
                                               ({"max_weight": 0.0}, "sps.max_weight"), ({"irl_mode": "pushpull"}, "sps.irl_mode"),
                                               ({"demo_weighting": "count"}, "sps.demo_weighting"), ({"irl_tokens": "forks"}, "sps.irl_tokens"),
                                               ({"discriminator_steps": 0}, "sps.discriminator_steps")])
def test_inconsistent_settings_are_named(change, named):
    with pytest.raises(ValueError, match=named):
        validate_sps(replace(SPSConfig(), **change))


def test_buffer_keeps_the_newest_distinct_trajectories_inside_the_window():
    buffer = DemoBuffer(window=3, size=2)
    buffer.add("p", 1, [1], "a")
    buffer.add("p", 2, [2], "b")
    buffer.add("p", 2, [1], "a")  # seen again: becomes the newest
    buffer.add("p", 3, [3], "c")  # size 2: the oldest ("b") goes
    assert [text for _, text in buffer.demos("p", 3)] == ["a", "c"]
    assert [text for _, text in buffer.demos("p", 5)] == ["c"]  # "a" (step 2) is out of the window at step 5
    buffer.forget_expired(6)
    assert buffer.entries == {}


def test_buffer_counts_how_often_each_trajectory_was_sampled():
    buffer = DemoBuffer(window=3, size=2)
    for step, text in [(1, "a"), (1, "a"), (2, "b"), (2, "a")]:
        buffer.add("p", step, [1], text)
    assert (buffer.times_seen("p", "a"), buffer.times_seen("p", "b"), buffer.times_seen("p", "c")) == (3, 1, 0)
    # a checkpoint from before the buffer counted sightings loads with one sighting each
    buffer.load_state_dict({"entries": {"p": {"a": ([1], 2)}}})
    assert buffer.times_seen("p", "a") == 1 and buffer.demos("p", 2) == [([1], "a")]


def completion(ids: list[int], logp: float) -> Completion:
    return Completion(ids, " ".join(map(str, ids)), [logp] * len(ids), "stop")


def test_demos_from_a_batch_dedup_weight_and_skip_prompts_without_a_correct_rollout():
    cfg = SPSConfig(demo_source="batch", demos="correct", dedup=True, reshape_strength=1.0, max_weight=1.0, irl_mode="pull")
    rollouts = [
        [completion([5, 6], -0.1), completion([5, 6], -0.1), completion([7, 8, 9], -2.0), completion([4], -0.5)],
        [completion([5], -0.3), completion([6], -0.3)],
    ]
    correct = [[True, True, True, False], [False, False]]
    demos = build_demos(cfg, [[1, 2], [3]], ["a", "b"], rollouts, correct, None, 1, None, pad_id=0)
    assert demos.stats["irl/prompts_with_demos"] == 1 and demos.stats["irl/demos"] == 2  # the repeat counted once
    assert demos.direction.tolist() == [1.0, 1.0]
    # softmax(-1 * mean log-likelihood) over (-0.1, -2.0): the unlikely demo weighs more
    expected = torch.softmax(torch.tensor([0.1, 2.0]), 0)
    assert torch.allclose(demos.weight, expected, atol=1e-6)
    none = build_demos(cfg, [[3]], ["b"], rollouts[1:], correct[1:], None, 1, None, pad_id=0)
    assert none is None


def test_frequency_weighting_and_fork_tokens_in_the_demo_batch():
    cfg = SPSConfig(demo_source="batch", dedup=True, reshape_strength=1.0, max_weight=1.0, demo_weighting="frequency", irl_tokens="fork")
    rollouts = [
        [completion([5, 6], -0.1), completion([5, 6], -0.1), completion([5, 6], -0.1), completion([5, 8, 9], -2.0)],
        [completion([5], -0.3), completion([6], -0.3)],  # one correct demo: nothing forks, the prompt is skipped
    ]
    correct = [[True, True, True, True], [True, False]]
    demos = build_demos(cfg, [[1, 2], [3]], ["a", "b"], rollouts, correct, None, 1, None, pad_id=0)
    assert demos.num_prompts["pull"] == 1 and demos.batch.texts == ["5 6", "5 8 9"]
    # sampled 3 times and once: weights 1/3 : 1, whatever their likelihoods
    assert torch.allclose(demos.weight, torch.tensor([0.25, 0.75]))
    assert demos.token_mask.tolist() == [[0.0, 1.0, 0.0], [0.0, 1.0, 0.0]]  # both start with 5, then fork
    assert demos.stats["irl/scoped_token_fraction"] == pytest.approx(2 / 5)
    everywhere = build_demos(replace(cfg, irl_tokens="all"), [[1, 2], [3]], ["a", "b"], rollouts, correct, None, 1, None, pad_id=0)
    assert everywhere.num_prompts["pull"] == 2
    assert torch.equal(everywhere.token_mask, everywhere.batch.completion_mask)


def test_difficulty_weighting_pulls_harder_on_the_prompts_rarely_solved():
    cfg = SPSConfig(demo_source="batch", dedup=True, reshape_strength=0.0, max_weight=1.0, prompt_weighting="difficulty")
    rollouts = [
        [completion([5], -0.1), completion([6], -0.1), completion([7], -0.1), completion([8], -0.1)],  # solved 1 in 4
        [completion([5], -0.3), completion([6], -0.3), completion([7], -0.3), completion([8], -0.3)],  # solved 3 in 4
    ]
    correct = [[True, False, False, False], [True, True, True, False]]
    demos = build_demos(cfg, [[1], [2]], ["hard", "easy"], rollouts, correct, None, 1, None, pad_id=0)
    # (1 - 1/4) and (1 - 3/4), normalised to mean 1: 1.5 and 0.5; the easy prompt's 3 demos share its 0.5.
    assert torch.allclose(demos.weight, torch.tensor([1.5, 0.5 / 3, 0.5 / 3, 0.5 / 3]))
    uniform = build_demos(replace(cfg, prompt_weighting="uniform"), [[1], [2]], ["hard", "easy"], rollouts, correct, None, 1, None, pad_id=0)
    assert torch.allclose(uniform.weight, torch.tensor([1.0, 1 / 3, 1 / 3, 1 / 3]))


def test_the_discriminator_learns_the_demos_density_over_the_policys():
    # Three distinct demos once each (q = 1/3) against rollouts that sample them 6, 2 and 1 times in 9:
    # at the optimum the reward is log q - log pi = log(1/2), log(3/2), log(3).
    discriminator = Discriminator(steps=3000, learning_rate=0.05, l2=0.0)
    stats = discriminator.fit([[5], [6], [7]], [[5]] * 6 + [[6]] * 2 + [[7]])
    assert stats["irl/discriminator_loss"] == pytest.approx(math.log(2))  # untrained: logit 0 everywhere
    reward = discriminator.reward([[5], [6], [7]])
    assert reward.tolist() == pytest.approx([math.log(0.5), math.log(1.5), math.log(3.0)], abs=0.01)


def test_a_reloaded_discriminator_continues_exactly_as_the_uninterrupted_one():
    demos, rollouts = [[5, 6], [5, 8, 9]], [[5, 6]] * 3 + [[5, 8, 9], [4]]
    whole = Discriminator(steps=5, learning_rate=0.05, l2=1e-3)
    whole.fit(demos, rollouts)
    whole.fit(demos[:1], rollouts[1:])
    first = Discriminator(steps=5, learning_rate=0.05, l2=1e-3)
    first.fit(demos, rollouts)
    resumed = Discriminator(steps=5, learning_rate=0.05, l2=1e-3)
    resumed.load_state_dict(first.state_dict())
    resumed.fit(demos[:1], rollouts[1:])
    assert torch.equal(resumed.params, whole.params)


def test_adversarial_weighting_pulls_hardest_on_the_demo_the_discriminator_finds_least_policy_like():
    cfg = SPSConfig(demo_source="batch", dedup=True, reshape_strength=1.0, max_weight=1.0, demo_weighting="adversarial")
    # Same likelihoods, so only the learned reward can tell the demos apart: [5, 6] is sampled 3 times.
    rollouts = [[completion([5, 6], -0.5), completion([5, 6], -0.5), completion([5, 6], -0.5), completion([5, 8, 9], -0.5)]]
    discriminator = Discriminator(steps=200, learning_rate=0.05, l2=1e-3)
    demos = build_demos(cfg, [[1, 2]], ["a"], rollouts, [[True] * 4], None, 1, None, pad_id=0, discriminator=discriminator)
    assert demos.batch.texts == ["5 6", "5 8 9"]
    reward = discriminator.reward([[5, 6], [5, 8, 9]])
    assert reward[1] > 0 > reward[0]  # rare: more demo than rollout; common: the other way round
    assert torch.allclose(demos.weight, torch.softmax(reward, 0).float(), atol=1e-6)
    assert demos.weight[1] > 0.6
    assert demos.stats["irl/discriminator_accuracy"] == 0.5  # measured before its first training: logit 0 calls all "rollout"
