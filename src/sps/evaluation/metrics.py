"""Evaluation metrics from graded samples: Pass@k, Avg@n, Maj@k, diversity on solved problems,
and 95% intervals over problems (docs/sps-method.md §5 and the distinct counts of §6).

Everything is computed from the rows of `samples.jsonl` alone (one row per sample with keys
problem_id, sample_index, completion, extracted, correct, status, num_tokens, finish_reason), so
`metrics.json` can be recomputed exactly: problems are taken in sorted id order and samples in
sample_index order whatever the order of the rows, and the only randomness (Maj@k subsets, the
bootstrap) uses fixed seeds.

`compute_metrics` returns a JSON-serialisable dict. Accuracies are fractions in [0, 1]; `ks` are
every power of two k <= n, and n; per-k maps use the string keys "1", "2", ...; every interval is
[lo, hi], a 95% percentile-bootstrap interval over problems (never over samples).

    num_problems                 P, the number of problems
    n                            samples per problem (the same for every problem)
    ks                           [1, 2, 4, ..., n]
    pass_at_k, pass_at_k_ci      {"k": unbiased Pass@k}, {"k": [lo, hi]}
    avg_at_n, avg_at_n_ci        mean accuracy over all n samples, averaged over problems
    maj_at_k, maj_at_k_ci        {"k": accuracy of the majority-voted answer among k samples}
    num_solved                   problems with at least one correct sample
    solved_fraction              num_solved / P (equals Pass@n)
    distinct_correct_per_solved  mean over solved problems of the number of distinct correct
                                 completions (exact text); null when nothing is solved
    distinct_answers_per_solved  the same for distinct normalised answers of correct samples
    top1_share                   mean over solved problems of the share of the most frequent
                                 correct completion among the correct ones
    status_counts                {grading status: samples}
    finish_reason_counts         {finish reason ("stop", "length"): samples}
    mean_tokens                  mean completion length in tokens over all samples
    mean_reward                  mean reward over the scored samples (null when the rows carry no
                                 reward: samples written before rewards were recorded)
    unscored                     samples whose reward could not be computed (a grader timeout or
                                 error, a failed reward function): counted as not correct
    estimation                   {"ci_level", "ci_resamples", "maj_subsets", "seed"}: how the
                                 intervals and Maj@k were estimated
"""

from __future__ import annotations

import itertools
import math
import re
from collections import Counter
from collections.abc import Sequence

import numpy as np

CI_LEVEL = 0.95
CI_RESAMPLES = 1000
# Maj@k is exact when there are at most this many size-k subsets, else a mean over this many.
MAJ_SUBSETS = 200
SEED = 0

_LATEX_NOISE = re.compile(r"\s+|\\left(?![A-Za-z])|\\right(?![A-Za-z])|\\!|\\,")
_FRAC_VARIANTS = re.compile(r"\\[dt]frac(?![A-Za-z])")
_ENDS = re.compile(r"^\$+|[$.]+$")


def ks_for(n: int) -> list[int]:
    """Every power of two k <= n, and n itself: [1, 2, 4, ..., n]."""
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    powers = [2**i for i in range(n.bit_length())]
    return powers if powers[-1] == n else [*powers, n]


def pass_at_k_array(n: Sequence[int] | np.ndarray, c: Sequence[int] | np.ndarray, k: int) -> np.ndarray:
    """Unbiased Pass@k per problem, 1 - C(n-c, k) / C(n, k).

    n, c: (P,) samples and correct samples per problem. Returns (P,) float64.
    Evaluated as 1 - prod_{i=n-c+1}^{n} (1 - k/i), a product of factors in [0, 1) that never
    forms the huge binomials; problems with n - c < k get exactly 1.
    """
    n = np.asarray(n, dtype=np.int64)
    c = np.asarray(c, dtype=np.int64)
    if n.shape != c.shape or n.ndim != 1:
        raise ValueError(f"n and c must be 1-D arrays of the same shape, got {n.shape} and {c.shape}")
    if k < 1:
        raise ValueError(f"k must be at least 1, got k={k}")
    if np.any(k > n):
        raise ValueError(f"k={k} is larger than the number of samples n={int(n.min())}; pass@k needs k <= n")
    if np.any((c < 0) | (c > n)):
        raise ValueError("every correct count c must satisfy 0 <= c <= n")
    # Column j of the (P, max c) table holds the factor for i = n - j; columns j >= c are padding.
    j = np.arange(c.max(initial=0))
    i = n[:, None] - j[None, :]
    factors = np.where(j[None, :] < c[:, None], 1.0 - k / np.maximum(i, 1), 1.0)
    return np.where(n - c < k, 1.0, 1.0 - factors.prod(axis=1))


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased Pass@k of one problem with n samples of which c are correct."""
    return float(pass_at_k_array([n], [c], k)[0])


def normalize_answer(extracted: str | None) -> str | None:
    """The extracted answer text in the form majority voting compares: whitespace, \\left, \\right,
    \\! and \\, removed, \\dfrac and \\tfrac written \\frac, surrounding $ and a trailing period
    dropped. None (or nothing left) means the sample has no answer and does not vote."""
    if extracted is None:
        return None
    text = _FRAC_VARIANTS.sub(r"\\frac", _LATEX_NOISE.sub("", extracted))
    return _ENDS.sub("", text) or None


def group_by_problem(rows: Sequence[dict]) -> dict[str, list[dict]]:
    """The rows of each problem: problems in sorted id order, samples in sample_index order.

    Raises ValueError when there are no rows, when a (problem_id, sample_index) pair repeats, or
    when problems have different numbers of samples (naming the problems that differ).
    """
    if not rows:
        raise ValueError("no samples to compute metrics from")
    by_problem: dict[str, dict[int, dict]] = {}
    for row in rows:
        samples = by_problem.setdefault(row["problem_id"], {})
        if row["sample_index"] in samples:
            raise ValueError(
                f"duplicate sample: problem {row['problem_id']!r} has sample_index {row['sample_index']} twice"
            )
        samples[row["sample_index"]] = row
    sizes = {problem_id: len(samples) for problem_id, samples in by_problem.items()}
    n = Counter(sizes.values()).most_common(1)[0][0]
    odd = [f"{problem_id!r} has {size}" for problem_id, size in sizes.items() if size != n]
    if odd:
        raise ValueError(
            f"every problem needs the same number of samples; most have n={n} but " + ", ".join(odd[:10])
        )
    return {pid: [by_problem[pid][i] for i in sorted(by_problem[pid])] for pid in sorted(by_problem)}


def correct_matrix(problems: dict[str, list[dict]]) -> np.ndarray:
    """(P, n) bool: whether sample j of problem i is correct, for the output of group_by_problem."""
    return np.array([[bool(row["correct"]) for row in samples] for samples in problems.values()], dtype=bool)


def correct_counts(rows: Sequence[dict]) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Problem ids (sorted) with their sample counts n (P,) and correct counts c (P,), int64."""
    problems = group_by_problem(rows)
    correct = correct_matrix(problems)
    return list(problems), np.full(len(problems), correct.shape[1], dtype=np.int64), correct.sum(axis=1)


def _vote_groups(extracted: Sequence[str | None], correct: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Samples grouped by normalised answer.

    extracted: (n,) answer texts; correct: (n,) bool. Returns the group of each sample (n,), -1
    for samples without an answer, and whether each group's answer is correct (G,): a strict
    majority of its samples' flags. Samples with the same normalised answer should agree; the
    majority only settles a grader that judged equal texts differently.
    """
    ids: dict[str, int] = {}
    answers = [normalize_answer(text) for text in extracted]
    group = np.array([-1 if a is None else ids.setdefault(a, len(ids)) for a in answers], dtype=np.int64)
    votes = group >= 0
    size = np.bincount(group[votes], minlength=len(ids))
    correct_size = np.bincount(group[votes], weights=correct[votes], minlength=len(ids))
    return group, 2 * correct_size > size


def _subsets(n: int, k: int, max_subsets: int, rng: np.random.Generator) -> np.ndarray:
    """(S, k) sample indices: all C(n, k) subsets when there are at most max_subsets of them (an
    exact expectation), else max_subsets uniformly random subsets without replacement."""
    if math.comb(n, k) <= max_subsets:
        return np.array(list(itertools.combinations(range(n), k)), dtype=np.int64)
    # The k smallest of n uniform keys per row are a uniform k-subset; argpartition avoids a full sort.
    return rng.random((max_subsets, n)).argpartition(k - 1, axis=1)[:, :k]


def maj_at_k_array(
    extracted: Sequence[Sequence[str | None]],
    correct: np.ndarray,
    ks: Sequence[int],
    *,
    max_subsets: int = MAJ_SUBSETS,
    seed: int = SEED,
) -> np.ndarray:
    """Maj@k per problem for each k in ks: the expected accuracy of the majority-voted answer among
    k samples drawn without replacement.

    extracted: P lists of n extracted answer texts (None: no answer, does not vote);
    correct: (P, n) bool. Returns (P, K) float64 for the K values in ks. Answers are compared after
    normalize_answer. A tie between answer groups earns the fraction of the tied groups that are
    correct; a subset in which no sample has an answer earns 0. Exact when C(n, k) <= max_subsets
    (always for k = n), else a mean over max_subsets random subsets drawn with a generator seeded by
    (seed, k), so each column is the same whichever other ks are asked for.
    """
    correct = np.asarray(correct, dtype=bool)
    rngs = [np.random.default_rng([seed, k]) for k in ks]
    credits = np.empty((len(extracted), len(ks)))
    for p, (answers, flags) in enumerate(zip(extracted, correct, strict=True)):
        group, group_correct = _vote_groups(answers, flags)
        width = len(group_correct) + 1
        for column, (k, rng) in enumerate(zip(ks, rngs, strict=True)):
            chosen = group[_subsets(len(answers), k, max_subsets, rng)]  # (S, k)
            num_subsets = len(chosen)
            # Votes per (subset, group); column 0 collects the samples without an answer.
            flat = (chosen + 1) + width * np.arange(num_subsets)[:, None]
            counts = np.bincount(flat.ravel(), minlength=num_subsets * width)
            votes = counts.reshape(num_subsets, width)[:, 1:]
            top = votes.max(axis=1, initial=0)[:, None]
            tied = (votes == top) & (top > 0)
            credits[p, column] = np.mean((tied & group_correct).sum(axis=1) / np.maximum(tied.sum(axis=1), 1))
    return credits


def solved_diversity(
    completions: Sequence[Sequence[str]], extracted: Sequence[Sequence[str | None]], correct: np.ndarray
) -> dict[str, float | None]:
    """Diversity of the correct samples, averaged over solved problems (at least one correct).

    completions, extracted: P lists of n texts; correct: (P, n) bool. Returns
    distinct_correct_per_solved, distinct_answers_per_solved and top1_share (see the module
    docstring); each is None when no problem is solved.
    """
    correct = np.asarray(correct, dtype=bool)
    distinct_completions, distinct_answers, top1_shares = [], [], []
    for texts, answers, flags in zip(completions, extracted, correct, strict=True):
        correct_texts = Counter(text for text, ok in zip(texts, flags, strict=True) if ok)
        if not correct_texts:
            continue
        distinct_completions.append(len(correct_texts))
        top1_shares.append(max(correct_texts.values()) / correct_texts.total())
        correct_answers = {normalize_answer(a) for a, ok in zip(answers, flags, strict=True) if ok}
        distinct_answers.append(len(correct_answers - {None}))
    return {
        "distinct_correct_per_solved": _mean_or_none(distinct_completions),
        "distinct_answers_per_solved": _mean_or_none(distinct_answers),
        "top1_share": _mean_or_none(top1_shares),
    }


def _mean_or_none(values: list[float]) -> float | None:
    return float(np.mean(values)) if values else None


def bootstrap_ci(
    per_problem: np.ndarray, *, resamples: int = CI_RESAMPLES, level: float = CI_LEVEL, seed: int = SEED
) -> np.ndarray:
    """Percentile-bootstrap interval of the mean over problems, resampling problems with replacement.

    per_problem: (P,) or (P, M), one value per problem for each of M metrics. Returns (2,) or
    (M, 2) [lo, hi]. All columns share the same resampled problems, so their intervals are coherent.
    """
    values = np.asarray(per_problem, dtype=np.float64)
    num_problems = values.shape[0]
    rng = np.random.default_rng(seed)
    # (B, P): how often each problem is drawn in each resample; the same as indexing, without (B, P, M).
    draws = rng.multinomial(num_problems, np.full(num_problems, 1.0 / num_problems), size=resamples)
    means = draws @ values.reshape(num_problems, -1) / num_problems  # (B, M)
    lo, hi = np.quantile(means, [(1 - level) / 2, (1 + level) / 2], axis=0)
    return np.stack([lo, hi], axis=-1).reshape(values.shape[1:] + (2,))


def compute_metrics(
    rows: Sequence[dict],
    *,
    ci_resamples: int = CI_RESAMPLES,
    maj_subsets: int = MAJ_SUBSETS,
    seed: int = SEED,
) -> dict:
    """All evaluation metrics of one benchmark from its sample rows; the schema is in the module
    docstring. Raises ValueError for duplicate samples or unequal sample counts."""
    problems = group_by_problem(rows)
    correct = correct_matrix(problems)  # (P, n)
    num_problems, n = correct.shape
    ks = ks_for(n)
    c = correct.sum(axis=1)
    extracted = [[row["extracted"] for row in samples] for samples in problems.values()]
    completions = [[row["completion"] for row in samples] for samples in problems.values()]

    rewards = [row["reward"] for row in rows if row.get("reward") is not None]
    pass_values = np.stack([pass_at_k_array(np.full(num_problems, n), c, k) for k in ks], axis=1)
    maj_values = maj_at_k_array(extracted, correct, ks, max_subsets=maj_subsets, seed=seed)
    per_problem = np.column_stack([pass_values, c / n, maj_values])  # (P, 2K + 1)
    estimate = per_problem.mean(axis=0).tolist()
    interval = bootstrap_ci(per_problem, resamples=ci_resamples, seed=seed).tolist()
    num_ks = len(ks)
    maj = slice(num_ks + 1, None)

    return {
        "num_problems": num_problems,
        "n": n,
        "ks": ks,
        "pass_at_k": dict(zip(map(str, ks), estimate[:num_ks], strict=True)),
        "pass_at_k_ci": dict(zip(map(str, ks), interval[:num_ks], strict=True)),
        "avg_at_n": estimate[num_ks],
        "avg_at_n_ci": interval[num_ks],
        "maj_at_k": dict(zip(map(str, ks), estimate[maj], strict=True)),
        "maj_at_k_ci": dict(zip(map(str, ks), interval[maj], strict=True)),
        "num_solved": int((c > 0).sum()),
        "solved_fraction": float((c > 0).mean()),
        **solved_diversity(completions, extracted, correct),
        "status_counts": dict(sorted(Counter(row["status"] for row in rows).items())),
        "finish_reason_counts": dict(sorted(Counter(row["finish_reason"] for row in rows).items())),
        "mean_tokens": float(np.mean([row["num_tokens"] for row in rows])),
        "mean_reward": float(np.mean(rewards)) if rewards else None,
        "unscored": sum(1 for row in rows if "reward" in row and row["reward"] is None),
        "estimation": {
            "ci_level": CI_LEVEL,
            "ci_resamples": ci_resamples,
            "maj_subsets": maj_subsets,
            "seed": seed,
        },
    }
