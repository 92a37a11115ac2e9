from __future__ import annotations

import json
import math
import random
from fractions import Fraction

import numpy as np
import pytest

from sps.evaluation.metrics import (
    bootstrap_ci,
    compute_metrics,
    correct_counts,
    ks_for,
    maj_at_k_array,
    normalize_answer,
    pass_at_k,
    pass_at_k_array,
)


def closed_form(n: int, c: int, k: int) -> float:
    return float(1 - Fraction(math.comb(n - c, k), math.comb(n, k)))


def maj(answers: list[str | None], correct: list[bool], k: int, **kwargs) -> float:
    return float(maj_at_k_array([answers], np.array([correct]), [k], **kwargs)[0, 0])


def test_pass_at_k_matches_closed_form():
    assert abs(pass_at_k(5, 2, 2) - 0.7) < 1e-12
    for n in [1, 2, 3, 5, 8, 16, 33, 64, 128]:
        for c in range(n + 1):
            for k in ks_for(n):
                assert abs(pass_at_k(n, c, k) - closed_form(n, c, k)) < 1e-12, (n, c, k)


def test_pass_at_k_edge_cases():
    assert pass_at_k(10, 0, 4) == 0.0
    assert pass_at_k(10, 10, 4) == 1.0
    assert pass_at_k(10, 1, 10) == 1.0  # k = n: any correct sample is always drawn
    assert pass_at_k(10, 7, 4) == 1.0  # n - c < k: every k-subset holds a correct sample
    assert pass_at_k(10, 3, 1) == pytest.approx(0.3, abs=1e-15)


def test_pass_at_k_is_stable_at_large_n():
    for c, k in [(1, 1), (1, 512), (3, 1024), (100, 64), (512, 512), (1000, 2), (17, 256)]:
        assert abs(pass_at_k(1024, c, k) - closed_form(1024, c, k)) < 1e-12, (c, k)


def test_pass_at_k_array_matches_scalar():
    n = np.array([8, 8, 16, 16, 16])
    c = np.array([0, 3, 16, 5, 1])
    expected = [closed_form(int(a), int(b), 4) for a, b in zip(n, c, strict=True)]
    np.testing.assert_allclose(pass_at_k_array(n, c, 4), expected, atol=1e-12)


def test_pass_at_k_rejects_k_above_n():
    with pytest.raises(ValueError, match=r"k=9.*n=8"):
        pass_at_k(8, 2, 9)


def test_ks_for():
    assert ks_for(1) == [1]
    assert ks_for(8) == [1, 2, 4, 8]
    assert ks_for(5) == [1, 2, 4, 5]
    assert ks_for(128) == [1, 2, 4, 8, 16, 32, 64, 128]


def test_normalize_answer():
    assert normalize_answer("\\dfrac{1}{2}") == normalize_answer("\\frac{1}{2}") == "\\frac{1}{2}"
    assert normalize_answer(" $\\left( 1,\\!2 \\right)$. ") == "(1,2)"
    assert normalize_answer("3\\,000") == "3000"
    assert normalize_answer("\\rightarrow") == "\\rightarrow"
    assert normalize_answer("3.5") == "3.5"
    assert normalize_answer(None) is None
    assert normalize_answer(" $ $ ") is None


def test_maj_clear_majority():
    answers, correct = ["7", "7", "8"], [True, True, False]
    assert maj(answers, correct, 3) == 1.0
    # k = 1: a mean over all three single samples.
    assert maj(answers, correct, 1) == pytest.approx(2 / 3)
    # k = 2 over the three pairs: {7,7} right; {7,8} twice a tie with half credit.
    assert maj(answers, correct, 2) == pytest.approx((1 + 0.5 + 0.5) / 3)


def test_maj_tie_gets_fractional_credit():
    assert maj(["1", "2", "3", "1", "2", "3"], [True, False, False, True, False, False], 6) == pytest.approx(
        1 / 3
    )


def test_maj_samples_without_answer_do_not_vote():
    assert maj([None, None, "4"], [False, False, True], 3) == 1.0
    assert maj([None, None, None], [False, False, False], 3) == 0.0
    # k = 2: the pair of two non-answers earns 0, the two pairs holding "4" earn 1.
    assert maj([None, None, "4"], [False, False, True], 2) == pytest.approx(2 / 3)


def test_maj_merges_normalised_answers():
    answers = ["\\dfrac{1}{2}", "\\frac{1}{2}", "0.4", "0.4 ", "\\tfrac{1}{2}"]
    assert maj(answers, [True, True, False, False, True], 5) == 1.0


def test_maj_monte_carlo_is_deterministic_and_close_to_exact():
    # 12 right, 8 wrong answers, k = 5: C(20, 5) subsets is far more than 200, so it samples.
    answers = ["a"] * 12 + ["b"] * 8
    correct = [True] * 12 + [False] * 8
    exact = sum(math.comb(12, i) * math.comb(8, 5 - i) for i in range(3, 6)) / math.comb(20, 5)
    estimate = maj(answers, correct, 5)
    assert estimate == maj(answers, correct, 5)
    assert abs(estimate - exact) < 0.1
    assert maj(answers, correct, 5, max_subsets=math.comb(20, 5)) == pytest.approx(exact)
    # Each k has its own generator, so a column does not depend on the other ks asked for.
    both = maj_at_k_array([answers], np.array([correct]), [3, 5])[0]
    assert both.tolist() == [maj(answers, correct, 3), estimate]


def test_bootstrap_ci_contains_estimate_and_is_deterministic():
    values = np.random.default_rng(1).random((50, 3))
    ci = bootstrap_ci(values)
    assert ci.shape == (3, 2)
    np.testing.assert_array_equal(ci, bootstrap_ci(values))
    for column, (lo, hi) in zip(values.T, ci, strict=True):
        assert lo < column.mean() < hi
    assert bootstrap_ci(values[:, 0]).shape == (2,)
    np.testing.assert_allclose(bootstrap_ci(np.array([0.25])), [0.25, 0.25])


def row(problem_id, index, extracted, correct, completion=None, status="ok", tokens=10, finish="stop"):
    return {
        "problem_id": problem_id,
        "sample_index": index,
        "completion": completion if completion is not None else f"{problem_id}-{index}",
        "extracted": extracted,
        "correct": correct,
        "status": status,
        "num_tokens": tokens,
        "finish_reason": finish,
    }


def synthetic_rows() -> list[dict]:
    """Three problems, n = 4: p1 has 2 correct, p2 none, p3 all four."""
    return [
        row("p1", 0, "\\dfrac{1}{2}", True, "x \\boxed{\\dfrac{1}{2}}", tokens=20),
        row("p1", 1, "\\frac{1}{2}", True, "y \\boxed{\\frac{1}{2}}", tokens=20),
        row("p1", 2, "3", False, tokens=20),
        row("p1", 3, None, False, status="no_answer", tokens=100, finish="length"),
        row("p2", 0, "5", False),
        row("p2", 1, "5", False),
        row("p2", 2, "6", False),
        row("p2", 3, "7", False),
        row("p3", 0, "2", True, "a \\boxed{2}"),
        row("p3", 1, "2", True, "a \\boxed{2}"),
        row("p3", 2, "2", True, "b \\boxed{2}"),
        row("p3", 3, "2", True, "c \\boxed{2}"),
    ]


def test_compute_metrics_hand_checked():
    m = compute_metrics(synthetic_rows())
    assert (m["num_problems"], m["n"], m["ks"]) == (3, 4, [1, 2, 4])
    # Pass@2 of p1: 1 - C(2,2)/C(4,2) = 5/6.
    expected_pass = {"1": (0.5 + 0 + 1) / 3, "2": (5 / 6 + 0 + 1) / 3, "4": 2 / 3}
    for k, value in expected_pass.items():
        assert m["pass_at_k"][k] == pytest.approx(value, abs=1e-12)
    assert m["avg_at_n"] == pytest.approx(0.5)
    # Maj@2 of p1 over its six pairs: {0,1} {0,3} {1,3} right, {0,2} {1,2} ties, {2,3} wrong -> 4/6.
    expected_maj = {"1": (0.5 + 0 + 1) / 3, "2": (4 / 6 + 0 + 1) / 3, "4": (1 + 0 + 1) / 3}
    for k, value in expected_maj.items():
        assert m["maj_at_k"][k] == pytest.approx(value, abs=1e-12)
    assert m["num_solved"] == 2
    assert m["solved_fraction"] == pytest.approx(2 / 3)
    assert m["distinct_correct_per_solved"] == pytest.approx((2 + 3) / 2)
    assert m["distinct_answers_per_solved"] == pytest.approx(1.0)
    assert m["top1_share"] == pytest.approx((0.5 + 0.5) / 2)
    assert m["status_counts"] == {"no_answer": 1, "ok": 11}
    assert m["finish_reason_counts"] == {"length": 1, "stop": 11}
    assert m["mean_tokens"] == pytest.approx((3 * 20 + 100 + 8 * 10) / 12)
    for key in ["pass_at_k", "maj_at_k"]:
        for k, (lo, hi) in m[key + "_ci"].items():
            assert lo <= m[key][k] <= hi
    lo, hi = m["avg_at_n_ci"]
    assert lo <= m["avg_at_n"] <= hi
    assert json.loads(json.dumps(m)) == m


def test_compute_metrics_ignores_row_order():
    rows = synthetic_rows()
    shuffled = rows[:]
    random.Random(0).shuffle(shuffled)
    assert compute_metrics(shuffled) == compute_metrics(rows)


def test_compute_metrics_without_solved_problems():
    m = compute_metrics([row("p", i, "1", False) for i in range(2)])
    assert m["pass_at_k"] == {"1": 0.0, "2": 0.0}
    assert m["distinct_correct_per_solved"] is None
    assert m["top1_share"] is None


def test_correct_counts():
    ids, n, c = correct_counts(synthetic_rows())
    assert ids == ["p1", "p2", "p3"]
    assert n.tolist() == [4, 4, 4]
    assert c.tolist() == [2, 0, 4]


def test_unequal_sample_counts_raise():
    rows = synthetic_rows()[:-1]
    with pytest.raises(ValueError, match=r"'p3' has 3"):
        compute_metrics(rows)


def test_duplicate_samples_raise():
    rows = [*synthetic_rows(), row("p2", 1, "5", False)]
    with pytest.raises(ValueError, match=r"duplicate.*'p2'.*sample_index 1"):
        compute_metrics(rows)


def test_no_rows_raise():
    with pytest.raises(ValueError, match="no samples"):
        compute_metrics([])
