"""PromptSource: shuffled epochs over fixed or streamed prompts, resumable mid-run."""

from __future__ import annotations

import pytest

from sps.tasks.problem import Problem
from sps.tasks.prompts import PromptSource, fixed_prompts

PROBLEMS = [Problem(id=f"p{i}", problem=f"question {i}", answer=str(i)) for i in range(100)]


def ids(batch):
    return [p.id for p in batch]


def test_fixed_prompts_is_a_seeded_subset():
    subset = fixed_prompts(PROBLEMS, 10, seed=3)
    assert ids(subset) == ids(fixed_prompts(PROBLEMS, 10, seed=3)) != ids(fixed_prompts(PROBLEMS, 10, seed=4))
    assert len(set(ids(subset))) == 10
    with pytest.raises(ValueError, match="size 101"):
        fixed_prompts(PROBLEMS, 101, seed=0)


def test_fixed_mode_revisits_its_subset_once_per_epoch():
    source = PromptSource(PROBLEMS, batch_size=4, mode="fixed", fixed_size=12, seed=0)
    epochs = [sum((ids(source.next_batch()) for _ in range(3)), []) for _ in range(2)]
    assert sorted(epochs[0]) == sorted(epochs[1]) == sorted(ids(fixed_prompts(PROBLEMS, 12, seed=0)))
    assert epochs[0] != epochs[1]  # reshuffled


def test_stream_mode_serves_every_problem_before_any_repeats():
    source = PromptSource(PROBLEMS, batch_size=7, mode="stream", seed=0)
    served = sum((ids(source.next_batch()) for _ in range(15)), [])  # 105 prompts: crosses into epoch 2
    assert sorted(served[:100]) == sorted(ids(PROBLEMS))
    assert source.epoch == 1 and source.position == 5


@pytest.mark.parametrize("mode", ["fixed", "stream"])
def test_restored_state_continues_identically(mode):
    original = PromptSource(PROBLEMS, batch_size=8, mode=mode, fixed_size=20, seed=5)
    for _ in range(4):
        original.next_batch()
    state = original.state_dict()
    resumed = PromptSource(PROBLEMS, batch_size=8, mode=mode, fixed_size=20, seed=5)
    resumed.load_state_dict(state)
    assert [ids(original.next_batch()) for _ in range(10)] == [ids(resumed.next_batch()) for _ in range(10)]


def test_state_for_other_settings_is_refused():
    state = PromptSource(PROBLEMS, batch_size=8, mode="stream", seed=5).state_dict()
    with pytest.raises(ValueError, match="seed 5 vs 6"):
        PromptSource(PROBLEMS, batch_size=8, mode="stream", seed=6).load_state_dict(state)
    with pytest.raises(ValueError, match="fingerprint"):
        PromptSource(PROBLEMS[:50], batch_size=8, mode="stream", seed=5).load_state_dict(state)


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="prompt mode 'replay'"):
        PromptSource(PROBLEMS, batch_size=8, mode="replay")
    with pytest.raises(ValueError, match="batch_size 16"):
        PromptSource(PROBLEMS, batch_size=16, mode="fixed", fixed_size=10)
