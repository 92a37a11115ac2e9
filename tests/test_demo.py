"""`sps demo --quick`: the README's main job, end to end (about 3 minutes on 2 cores)."""

from sps.demo import run_demo


def test_quick_demo_trains_both_runs_and_writes_the_report(tmp_path, capsys):
    report = run_demo(tmp_path / "demo", quick=True)
    for name in ("report.md", "report.html", "pass_at_k_vs_k.png", "squeezing.png", "upper_bound.png"):
        assert (report / name).is_file(), name
    text = (report / "report.md").read_text()
    assert "grpo" in text and "sps" in text and "coverage ceiling" in text.lower()
    out = capsys.readouterr().out
    assert "| base" in out and "| GRPO" in out and "| SPS" in out
