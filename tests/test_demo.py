"""`sps demo --quick`: the README's main job, end to end, and the headline that reads its table."""

import pytest

from sps.demo import HeadlineRow, headline, headline_rows, run_demo, stalled
from sps.io import read_jsonl

# The quick demo's effect as measured on 3 seeds (docs/analysis.md): GRPO's Pass@1 gain over the
# base model (0.068 at least) and SPS's Pass@32 lead over GRPO (0.18 at least); the margins are under half of those.
MIN_GRPO_PASS1_GAIN = 0.03
MIN_SPS_PASSN_LEAD = 0.08


@pytest.mark.demo
def test_quick_demo_shows_squeezing_and_sps_keeping_pass_at_n(tmp_path, capsys):
    report = run_demo(tmp_path / "demo", quick=True)
    for name in ("report.md", "report.html", "pass_at_k_vs_k.png", "squeezing.png", "upper_bound.png"):
        assert (report / name).is_file(), name
    text = (report / "report.md").read_text()
    assert "grpo" in text and "sps" in text and "coverage ceiling" in text.lower()

    runs = {name: tmp_path / "demo" / name for name in ("grpo", "sps")}
    base, grpo, sps = headline_rows(runs)
    assert grpo.pass_at_1 > base.pass_at_1 + MIN_GRPO_PASS1_GAIN, (base, grpo)
    assert sps.pass_at_n > grpo.pass_at_n + MIN_SPS_PASSN_LEAD, (grpo, sps)
    for folder in runs.values():
        assert stalled(read_jsonl(folder / "metrics.jsonl")) is None
    out = capsys.readouterr().out
    assert "| base" in out and "| GRPO" in out and "| SPS" in out
    assert "GRPO raised Pass@1" in out and "WARNING" not in out


def rows(base, grpo, sps, n=16):
    return [HeadlineRow(label, step, n, p1, pn, 2.0) for label, step, (p1, pn) in (("base", 0, base), ("GRPO", 12, grpo), ("SPS", 12, sps))]


def test_headline_states_the_effect_when_the_table_shows_it():
    text = headline(rows((0.10, 0.60), (0.20, 0.40), (0.19, 0.55)), {"grpo": None, "sps": None})
    assert text == (
        "GRPO raised Pass@1 over the base model (0.100 -> 0.200) and lost Pass@16 (0.600 -> 0.400); "
        "SPS kept more of Pass@16 (0.550) at Pass@1 0.190."
    )


def test_headline_says_when_the_table_does_not_show_the_effect():
    # The numbers of the old quick demo, where both runs collapsed.
    text = headline(rows((0.032, 0.367), (0.003, 0.050), (0.003, 0.050)), {"grpo": "why", "sps": None})
    assert text.startswith("This run does not show the expected effect: GRPO did not raise Pass@1")
    assert "SPS did not keep more of Pass@16 than GRPO (0.050 vs 0.050)" in text
    assert "WARNING: the grpo run stopped learning: why." in text and "sps run" not in text


def log(rewards, zero_std):
    return [{"reward": r, "frac_reward_zero_std": z} for r, z in zip(rewards, zero_std)]


def test_stalled_flags_no_reward_variance_and_collapsed_reward_only():
    # The old quick demo: reward 0.14 then ~0, every group without variance.
    assert "no reward variance" in stalled(log([0.14] + [0.008] * 11, [0.5] + [1.0] * 11))
    assert "collapsed from 0.100 to 0.020" in stalled(log([0.1] * 5 + [0.02] * 5, [0.5] * 10))
    # A healthy run: reward rises, most groups keep variance.
    assert stalled(log([0.1 + 0.02 * i for i in range(12)], [0.4] * 12)) is None
    assert stalled(log([0.1] * 4, [1.0] * 4)) is None  # too short to judge
