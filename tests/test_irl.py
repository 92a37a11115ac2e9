"""The SPS IRL pieces: demonstration selection, weights, loss, and the exact squeezing model."""

import math

import pytest
import torch

from sps.algorithms.irl import (
    all_tokens,
    demo_weights,
    discriminator_loss,
    first_of_each,
    fork_tokens,
    frequency_score,
    irl_token_loss,
    irl_token_weights,
    ngram_features,
    select_demos,
    weight_stats,
)
from sps.analysis import simulation


def test_uniform_weights_at_zero_strength():
    w = demo_weights(torch.tensor([-0.1, -2.0, -5.0]), strength=0.0)
    assert torch.allclose(w, torch.full((3,), 1 / 3))


def test_weights_tilt_towards_unlikely_demos_as_strength_grows():
    logps = torch.tensor([-0.1, -0.5, -1.0])
    previous = None
    for strength in (0.5, 1.0, 3.0):
        w = demo_weights(logps, strength)
        assert w[2] > w[1] > w[0]  # the least likely demo weighs most
        assert w.sum() == pytest.approx(1.0)
        if previous is not None:
            assert w[2] > previous[2]
        previous = w
    assert torch.allclose(demo_weights(logps, 1.0), torch.softmax(-1.0 * logps, 0))


def test_max_weight_holds_and_weights_still_sum_to_one():
    w = demo_weights(torch.tensor([-0.1, -0.2, -9.0, -0.3]), strength=3.0, max_weight=0.4)
    assert w.max() <= 0.4 + 1e-6
    assert w.sum() == pytest.approx(1.0)
    # An impossible cap (below 1/d) gives uniform weights rather than breaking.
    assert torch.allclose(demo_weights(torch.tensor([-1.0, -3.0]), 2.0, max_weight=0.2), torch.full((2,), 0.5))


def test_frequency_weights_are_inverse_powers_of_the_sampling_count():
    counts = torch.tensor([8.0, 2.0, 1.0])
    w = demo_weights(frequency_score(torch.zeros(3), counts, None), strength=1.0)
    assert torch.allclose(w, torch.tensor([1 / 8, 1 / 2, 1.0]) / (1 / 8 + 1 / 2 + 1), atol=1e-6)
    w = demo_weights(frequency_score(torch.zeros(3), counts, None), strength=0.5)  # 8^-0.5 : 2^-0.5 : 1
    assert float(w[0] / w[2]) == pytest.approx(8**-0.5, rel=1e-5)


def test_ngram_features_are_per_order_shares_of_hashed_buckets():
    x = ngram_features([[4, 5, 4, 5], [7]], dim=1 << 20)
    row = {int(i): float(x[0, i]) for i in x[0].nonzero()}
    # unigrams 4, 5 (2 of 4 each); bigrams 45 (2 of 3), 54 (1 of 3); trigrams 454, 545 (1 of 2 each)
    assert sorted(row.values()) == pytest.approx(sorted([0.5, 0.5, 2 / 3, 1 / 3, 0.5, 0.5]))
    assert x[0].sum() == pytest.approx(3.0) and x[1].sum() == pytest.approx(1.0)  # [7]: one unigram, no longer grams
    assert torch.equal(x, ngram_features([[4, 5, 4, 5], [7]], dim=1 << 20))  # no salted hash: the same every call


def test_discriminator_loss_weighs_each_class_half():
    logits = torch.tensor([0.0, 0.0, 0.0, 2.0])
    is_demo = torch.tensor([True, False, False, False])
    expected = 0.5 * (math.log(2) + (2 * math.log(2) + math.log(1 + math.e**2)) / 3)
    assert float(discriminator_loss(logits, is_demo)) == pytest.approx(expected)


def test_fork_tokens_mark_where_demos_with_a_shared_prefix_continue_differently():
    demos = [[1, 2, 3, 9], [1, 2, 4, 9], [1, 5, 9], [1, 2, 3, 9]]  # the last repeats the first
    fork = fork_tokens(demos, width=5)
    assert fork.tolist() == [
        [False, True, True, False, False],  # after [1]: 2 or 5; after [1, 2]: 3 or 4
        [False, True, True, False, False],
        [False, True, False, False, False],  # after [1, 5] only 9 follows
        [False, True, True, False, False],
    ]
    assert not fork_tokens([[1, 2, 3]], width=3).any()  # one demo: nothing forks
    assert fork_tokens([[1, 2], [1, 2, 3]], width=3).tolist() == [[False, False, False]] * 2  # a prefix ends without a token to differ
    assert all_tokens([[1, 2], [3]], width=3).tolist() == [[True, True, False], [True, False, False]]


def test_weight_statistics():
    effective, entropy = weight_stats(torch.full((4,), 0.25))
    assert effective == pytest.approx(4.0) and entropy == pytest.approx(math.log(4))
    effective, entropy = weight_stats(torch.tensor([1.0, 0.0]))
    assert effective == pytest.approx(1.0) and entropy == pytest.approx(0.0)


def test_demo_selection():
    correct = torch.tensor([True, False, True, True])
    logps = torch.tensor([-0.1, -0.2, -0.9, -0.5])
    assert select_demos(correct, logps, "correct").tolist() == [0, 2, 3]
    assert select_demos(correct, logps, "all").tolist() == [0, 1, 2, 3]
    assert sorted(select_demos(correct, logps, "correct_low_likelihood", quantile=0.5).tolist()) == [2, 3]
    assert select_demos(torch.tensor([False, False]), logps[:2], "correct").numel() == 0
    with pytest.raises(ValueError, match="demos"):
        select_demos(correct, logps, "best")


def test_dedup_keeps_one_of_each_distinct_trajectory():
    texts = ["a", "b", "a", "c", "b"]
    assert first_of_each(texts, torch.tensor([0, 1, 2, 3, 4])).tolist() == [0, 1, 3]


def test_token_weights_average_each_demo_over_its_tokens():
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]])
    w = irl_token_weights(mask, torch.tensor([0.25, 0.75]))
    assert torch.allclose(w.sum(-1), torch.tensor([0.25, 0.75]))
    assert w[0, 2] == 0
    # No demonstration weight: nothing contributes, and nothing is NaN.
    empty = irl_token_weights(mask, torch.zeros(2))
    assert torch.equal(empty, torch.zeros_like(mask))


def test_pull_and_push_move_a_likelihood_in_opposite_directions():
    torch.manual_seed(0)
    logits = torch.randn(5, 8)
    tokens = torch.randint(0, 8, (1, 5))

    def after_one_step(direction: float) -> float:
        param = torch.nn.Parameter(logits.clone())
        logp = torch.log_softmax(param, -1).gather(-1, tokens.T).T  # (1, 5)
        old = logp.detach()
        loss = (irl_token_weights(torch.ones(1, 5), torch.ones(1)) * irl_token_loss(logp, old, torch.tensor([direction]), 0.2)).sum()
        loss.backward()
        with torch.no_grad():
            param -= 0.5 * param.grad
            return float(torch.log_softmax(param, -1).gather(-1, tokens.T).sum())

    before = float(torch.log_softmax(logits, -1).gather(-1, tokens.T).sum())
    assert after_one_step(+1.0) > before > after_one_step(-1.0)


# The exact softmax-over-trajectories model (sps.analysis.simulation).
THETA = torch.tensor([3.0, 1.5, 0.5, 0.0, 2.0, 1.0])  # trajectories 0-3 correct, 4-5 wrong
CORRECT = torch.tensor([True, True, True, True, False, False])


def test_rl_step_squeezes_the_correct_set():
    after = simulation.rl_step(THETA, CORRECT, lr=1.0)
    assert simulation.correct_mass(after, CORRECT) > simulation.correct_mass(THETA, CORRECT)
    assert simulation.entropy_within_correct(after, CORRECT) < simulation.entropy_within_correct(THETA, CORRECT)


def test_pull_step_spreads_the_correct_set_without_losing_correct_mass():
    # Tolerance: a pull step of lr 0.1 loses at most 0.005 of the correct mass (measured: 0.0024 to
    # 0.0040 for strengths 0.5 to 2), and at any step size the mass lost is at most 0.15 times the
    # entropy gained within the correct set (measured: 0.07 to 0.11).
    mass, spread = simulation.correct_mass(THETA, CORRECT), simulation.entropy_within_correct(THETA, CORRECT)
    for strength in (0.5, 1.0, 2.0):
        small = simulation.pull_step(THETA, CORRECT, lr=0.1, strength=strength)
        assert simulation.entropy_within_correct(small, CORRECT) > spread
        assert simulation.correct_mass(small, CORRECT) >= mass - 0.005
        for lr in (0.3, 1.0):
            after = simulation.pull_step(THETA, CORRECT, lr=lr, strength=strength)
            gained = simulation.entropy_within_correct(after, CORRECT) - spread
            assert gained > 0 and mass - simulation.correct_mass(after, CORRECT) <= 0.15 * gained


def test_interleaving_keeps_the_correct_set_spread_out():
    rl_only, sps = THETA.clone(), THETA.clone()
    for step in range(30):
        rl_only = simulation.rl_step(rl_only, CORRECT, lr=1.0)
        sps = simulation.rl_step(sps, CORRECT, lr=1.0)
        if step % 3 == 2:
            sps = simulation.pull_step(sps, CORRECT, lr=1.0, strength=1.0)
    assert simulation.entropy_within_correct(sps, CORRECT) > simulation.entropy_within_correct(rl_only, CORRECT) + 0.1
    assert simulation.correct_mass(sps, CORRECT) > 0.9
