"""Per-benchmark report files (metrics.json, report.md, pass_at_k.png) and a markdown table across
benchmarks, all from the dict of `sps.evaluation.metrics.compute_metrics`."""

from __future__ import annotations

import json
import math
import os
import textwrap
from collections.abc import Sequence
from pathlib import Path

from sps.io import atomic_write_json, atomic_write_text, save_figure

MISSING = "–"


def write_report(out_dir: str | os.PathLike, metrics: dict, title: str, settings: dict) -> None:
    """Write metrics.json, report.md and pass_at_k.png into out_dir, each atomically."""
    out_dir = Path(out_dir)
    atomic_write_json(out_dir / "metrics.json", metrics)
    atomic_write_text(out_dir / "report.md", report_markdown(metrics, title, settings))
    plot_pass_at_k(metrics, title, out_dir / "pass_at_k.png")


def report_markdown(metrics: dict, title: str, settings: dict) -> str:
    """The readable report of one benchmark: Pass@k and Maj@k per k, Avg@n, diversity on solved
    problems, grading status and finish reason counts, and the settings used."""
    n, num_problems = metrics["n"], metrics["num_problems"]
    estimation = metrics["estimation"]
    # The runner adds the benchmark rows it could not load, so that none is dropped silently.
    skipped = len(metrics.get("skipped_rows", []))
    per_k = [
        [
            str(k),
            _pct(metrics["pass_at_k"][str(k)]),
            _interval(metrics["pass_at_k_ci"][str(k)]),
            _pct(metrics["maj_at_k"][str(k)]),
            _interval(metrics["maj_at_k_ci"][str(k)]),
        ]
        for k in metrics["ks"]
    ]
    diversity = [
        ["distinct correct completions", _number(metrics["distinct_correct_per_solved"])],
        ["distinct correct answers (normalised)", _number(metrics["distinct_answers_per_solved"])],
        ["share of the most frequent correct completion", _pct(metrics["top1_share"])],
    ]
    lines = [
        f"# {title}",
        "",
        f"{num_problems} problems, n = {n} samples each. Intervals: {estimation['ci_level']:.0%} bootstrap "
        f"over problems ({estimation['ci_resamples']} resamples). Maj@k: majority vote over normalised "
        f"answers, the mean over all size-k subsets or {estimation['maj_subsets']} random ones.",
        "",
        f"**Avg@{n}**: {_pct(metrics['avg_at_n'])} {_interval(metrics['avg_at_n_ci'])}",
        "",
        markdown_table(["k", "Pass@k", "95% CI", "Maj@k", "95% CI"], per_k),
        "",
        "## Diversity of correct samples on solved problems",
        "",
        f"Solved (at least one correct sample): {metrics['num_solved']} of {num_problems} "
        f"({_pct(metrics['solved_fraction'])}).",
        "",
        markdown_table(["mean per solved problem", "value"], diversity),
        "",
        "## Grading",
        "",
        markdown_table(["status", "samples", "share"], _count_rows(metrics["status_counts"])),
        "",
        markdown_table(["finish reason", "samples", "share"], _count_rows(metrics["finish_reason_counts"])),
        "",
        f"Mean completion length: {metrics['mean_tokens']:.1f} tokens. "
        f"Benchmark rows skipped as malformed: {skipped}.",
        "",
        "## Settings",
        "",
        *[
            f"- `{key}`: {value if isinstance(value, str) else json.dumps(value)}"
            for key, value in settings.items()
        ],
    ]
    return "\n".join(lines) + "\n"


def combined_table(results: dict[str, dict], ks: Sequence[int] | None = None) -> str:
    """A markdown table with one row per benchmark: problems, n, Avg@n, Pass@1, Pass@k for each k in
    ks, Pass@n.

    results: benchmark name -> metrics dict. ks defaults to the powers of 4 between 1 and the
    largest n (exclusive); a benchmark sampled fewer than k times shows "–" in that column.
    """
    if ks is None:
        largest = max(metrics["n"] for metrics in results.values())
        ks = [4**i for i in range(1, largest.bit_length()) if 4**i < largest]
    header = ["benchmark", "problems", "n", "Avg@n", "Pass@1", *[f"Pass@{k}" for k in ks], "Pass@n"]
    rows = [
        [
            name,
            str(m["num_problems"]),
            str(m["n"]),
            _pct(m["avg_at_n"]),
            *[_pct(m["pass_at_k"].get(str(k))) for k in [1, *ks, m["n"]]],
        ]
        for name, m in results.items()
    ]
    return markdown_table(header, rows) + "\n"


def plot_pass_at_k(metrics: dict, title: str, path: str | os.PathLike) -> None:
    """Save the Pass@k curve against k (log2 axis, a tick at every evaluated k) with its 95% band
    as a PNG at path, atomically."""
    # Imported here so that computing metrics never pays for matplotlib; the Agg canvas needs no display.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import FixedFormatter, FixedLocator, NullLocator, PercentFormatter

    ks = metrics["ks"]
    values = [metrics["pass_at_k"][str(k)] for k in ks]
    lo, hi = zip(*(metrics["pass_at_k_ci"][str(k)] for k in ks), strict=True)

    fig = Figure(figsize=(6.4, 4.4), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.fill_between(ks, lo, hi, color="C0", alpha=0.25, linewidth=0, label="95% CI (bootstrap over problems)")
    ax.plot(ks, values, color="C0", marker="o", markersize=4, label="Pass@k")
    ax.set_xscale("log", base=2)
    ax.xaxis.set_major_locator(FixedLocator(ks))
    ax.xaxis.set_major_formatter(FixedFormatter(tick_labels(ks)))
    ax.xaxis.set_minor_locator(NullLocator())
    if len(ks) == 1:  # a band has no width at a single k: draw the interval as a bar, give the axis a span
        ax.vlines(ks, lo, hi, color="C0", alpha=0.25, linewidth=10)
        ax.set_xlim(ks[0] / 2, ks[0] * 2)
    ax.set_ylim(0, 1.02)  # a little headroom so that markers at 100% are not cut by the frame
    ax.yaxis.set_major_formatter(PercentFormatter(1.0))
    ax.set_xlabel("k (samples)")
    ax.set_ylabel("Pass@k")
    ax.set_title(
        f"{textwrap.fill(title, 60)}\n{metrics['num_problems']} problems, n = {metrics['n']}", fontsize=11
    )
    ax.grid(alpha=0.3)
    ax.legend(loc="best")
    save_figure(fig, path)


def tick_labels(ks: Sequence[int]) -> list[str]:
    """Labels for ticks at ks on a log2 axis. The power of two just below n is left unlabelled when
    it sits within 6% of the axis of n (e.g. 64 beside 70), where the two labels would overlap."""
    labels = [str(k) for k in ks]
    if len(ks) > 1 and math.log(ks[-1] / ks[-2]) < 0.06 * math.log(ks[-1] / ks[0]):
        labels[-2] = ""
    return labels


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    """A markdown table, the first column left-aligned and the others right-aligned."""
    align = [":--", *["--:"] * (len(header) - 1)]
    return "\n".join(
        "| " + " | ".join(cell.replace("|", "\\|") for cell in line) + " |" for line in [header, align, *rows]
    )


def _count_rows(counts: dict[str, int]) -> list[list[str]]:
    total = sum(counts.values())
    return [[name, str(count), _pct(count / total)] for name, count in counts.items()]


def _pct(value: float | None) -> str:
    return MISSING if value is None else f"{100 * value:.1f}%"


def _interval(bounds: Sequence[float]) -> str:
    lo, hi = bounds
    return f"[{100 * lo:.1f}, {100 * hi:.1f}]"


def _number(value: float | None) -> str:
    return MISSING if value is None else f"{value:.2f}"
