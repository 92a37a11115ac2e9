"""The figures of the learning-dynamics report (sps.analysis.report), each saved as a PNG atomically.

Figures are built on the Agg canvas without pyplot's global state, and matplotlib is imported only
when one is drawn. Run i is drawn in colour Ci throughout; the base model (step 0) in black.
"""

from __future__ import annotations

from itertools import cycle
from pathlib import Path

import numpy as np

from sps.analysis.runs import Run
from sps.analysis.upper_bound import UpperBound
from sps.evaluation.report import tick_labels
from sps.io import save_figure

SMOOTHING_WINDOW = 5
BASE_STYLE = {"color": "black", "linestyle": "--", "marker": "o", "markersize": 3, "linewidth": 1.4}
K_STYLES = ("-", "--", ":", "-.")
PROBE_GROUP_COLORS = {"rare": "tab:red", "middle": "tab:gray", "likely": "tab:blue", "all": "black"}
# Panels of the squeezing figure: title, y label, metrics.jsonl keys (drawn solid, then dashed).
SQUEEZING_PANELS = (
    ("Token entropy of rollouts", "entropy (nats/token)", ("entropy",)),
    ("Log-likelihood of rollouts", "mean log-likelihood (nats/token)", ("logp/correct", "logp/incorrect")),
    ("Distinct correct completions", "per prompt with a correct rollout", ("distinct_correct_per_prompt",)),
    ("Top-1 share of correct completions", "share of the correct rollouts", ("top1_share",)),
)


def plot_pass_at_k_vs_k(runs: list[Run], path: Path) -> None:
    """One panel per run: the Pass@k curve of every evaluated checkpoint, coloured by step."""
    from matplotlib import colormaps
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import ListedColormap, Normalize
    from matplotlib.ticker import MaxNLocator

    # Viridis without its pale yellow end, which vanishes on white.
    step_colors = ListedColormap(colormaps["viridis"](np.linspace(0.0, 0.85, 256)))
    norm = Normalize(0, max(max(c.step for run in runs for c in run.checkpoints), 1))
    fig, axes = new_figure(1, len(runs), sharey=True)
    for ax, run in zip(axes, runs):
        for checkpoint in run.checkpoints:
            if checkpoint.step == 0:
                plot_curve(ax, checkpoint.curve(), label="base model (step 0)", zorder=3, **BASE_STYLE)
            else:
                plot_curve(ax, checkpoint.curve(), color=step_colors(norm(checkpoint.step)), marker="o", markersize=3)
        k_axis(ax, sorted({k for c in run.checkpoints for k in c.curve()}))
        ax.set_title(f"{run.label} ({len(run.checkpoints)} evaluated)")
        if run.base:
            ax.legend(loc="lower right")
    axes[0].set_ylabel("Pass@k (problems solved)")
    percent_axis(axes[0])
    colorbar = fig.colorbar(ScalarMappable(norm, step_colors), ax=axes, label="training step", pad=0.01)
    colorbar.locator = MaxNLocator(integer=True)
    finish(fig, axes, "Pass@k against k at every evaluated checkpoint", path)


def plot_pass_at_k_vs_step(runs: list[Run], ks: list[int], path: Path) -> None:
    """Pass@k against step for each k in ks: colour = run, line style = k, band = 95% interval."""
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    fig, axes = new_figure(1, 1, panel_size=(9.0, 4.8))
    ax = axes[0]
    k_style = dict(zip(ks, cycle(K_STYLES)))
    drawn_ks = set()
    for i, run in enumerate(runs):
        for k, style in k_style.items():
            points = [(c.step, *result) for c in run.checkpoints if (result := c.pass_at(k))]
            if not points:  # every checkpoint of this run has fewer than k samples
                continue
            drawn_ks.add(k)
            steps, values, intervals = zip(*points)
            lo, hi = np.array(intervals).T
            ax.fill_between(steps, lo, hi, color=f"C{i}", alpha=0.12, linewidth=0)
            ax.plot(steps, values, color=f"C{i}", linestyle=style, marker="o", markersize=3)
    handles = [Line2D([], [], color=f"C{i}", label=run.label) for i, run in enumerate(runs)]
    handles += [Line2D([], [], color="0.3", linestyle=style, label=f"Pass@{k}") for k, style in k_style.items() if k in drawn_ks]
    handles.append(Patch(color="0.3", alpha=0.15, label="95% CI over problems"))
    fig.legend(handles=handles, loc="outside right upper")
    step_axis(ax)
    ax.set_ylabel("Pass@k (problems solved)")
    percent_axis(ax)
    finish(fig, axes, "Pass@k over training", path)


def plot_squeezing(runs: list[Run], path: Path) -> None:
    """2x2 panels of per-step rollout statistics, one line per run: moving average, raw faint."""
    from matplotlib.lines import Line2D

    fig, axes = new_figure(2, 2, panel_size=(5.2, 3.6), sharex=True)
    for ax, (title, ylabel, keys) in zip(axes, SQUEEZING_PANELS):
        logged = False
        for i, run in enumerate(runs):
            steps = np.array([row["step"] for row in run.log])
            for key, style in zip(keys, ("-", "--")):
                values = np.array([row.get(key, np.nan) for row in run.log], dtype=float)
                logged |= bool(np.isfinite(values).any())
                ax.plot(steps, values, color=f"C{i}", alpha=0.25, linewidth=0.8, linestyle=style)
                ax.plot(steps, moving_average(values, SMOOTHING_WINDOW), color=f"C{i}", linewidth=1.8, linestyle=style)
        if not logged:  # e.g. top-1 share while no rollout is correct
            ax.text(0.5, 0.5, "no values logged", transform=ax.transAxes, ha="center", va="center", color="0.4")
        if len(keys) > 1:
            ax.legend(handles=[Line2D([], [], color="0.3", linestyle=style, label=key.split("/")[-1])
                               for key, style in zip(keys, ("-", "--"))], loc="best", fontsize=8)
        ax.set_title(title)
        ax.set_ylabel(ylabel)
    for ax in axes[2:]:
        step_axis(ax)
    percent_axis(axes[3])
    handles = [Line2D([], [], color=f"C{i}", label=run.label) for i, run in enumerate(runs)]
    fig.legend(handles=handles, loc="outside right upper")
    finish(fig, axes, f"Squeezing: rollout statistics per step (moving average over {SMOOTHING_WINDOW} steps)", path)


def plot_probes(groups_by_run: dict[str, dict[str, tuple[np.ndarray, np.ndarray, int]]], path: Path) -> None:
    """One panel per run: the mean log-likelihood of each probe tercile against step.

    groups_by_run: run label -> the output of sps.analysis.report.probe_groups."""
    fig, axes = new_figure(1, len(groups_by_run), sharey=True)
    for ax, (label, groups) in zip(axes, groups_by_run.items()):
        for name, (steps, mean_logps, _) in groups.items():
            ax.plot(steps, mean_logps, color=PROBE_GROUP_COLORS[name], marker="o", markersize=3, label=name)
        ax.set_title(f"{label}, probes: {sum(size for *_, size in groups.values())}")
        step_axis(ax)
    axes[0].set_ylabel("mean log-likelihood (nats/token)")
    # Every panel has the same groups (up to "all" for a tiny probe set): one legend for the figure.
    handles = {h.get_label(): h for ax in axes for h in ax.get_lines()}
    fig.legend(handles=list(handles.values()), loc="outside lower center", ncols=len(handles),
               title="probes grouped by step-0 log-likelihood")
    finish(fig, axes, "Probes: correct base-model trajectories over training", path)


def plot_upper_bound(runs: list[Run], bounds: dict[str, UpperBound], shared_base: bool, path: Path) -> None:
    """One panel per run: the envelope, the last checkpoint's and the base model's Pass@k, and the
    coverage ceiling. A base evaluation shared by all runs is labelled so."""
    fig, axes = new_figure(1, len(runs), sharey=True)
    base_label = "base model (step 0), the same in every run" if shared_base else "base model (step 0)"
    for i, (ax, run) in enumerate(zip(axes, runs)):
        bound = bounds[run.name]
        plot_curve(ax, bound.envelope, color=f"C{i}", linewidth=2.5, alpha=0.8, label="envelope (best checkpoint per k)")
        last = run.checkpoints[-1]
        if last.step:
            label = f"last checkpoint (step {last.step})"
            plot_curve(ax, last.curve(), color=f"C{i}", linestyle=":", marker="s", markersize=3, label=label)
        if run.base:
            plot_curve(ax, run.base.curve(), label=base_label, **BASE_STYLE)
        ax.axhline(bound.coverage_ceiling, color="0.4", linestyle="-.", linewidth=1,
                   label=f"coverage ceiling ({bound.coverage_ceiling:.1%})")
        k_axis(ax, list(bound.envelope))
        ax.set_title(run.label)
        ax.legend(loc="lower right", fontsize=8)
    axes[0].set_ylabel("Pass@k (problems solved)")
    percent_axis(axes[0])
    # The coverage ceiling bounds every Pass@k of its run; axhline does not widen the axis by itself.
    axes[0].set_ylim(0, min(1.02, 1.08 * max(max(b.coverage_ceiling for b in bounds.values()), 0.01)))
    finish(fig, axes, "Empirical upper bound on Pass@k", path)


# -- shared helpers -------------------------------------------------------------------------------


def new_figure(
    rows: int, cols: int, *, panel_size: tuple[float, float] = (5.0, 4.2), sharex: bool = False, sharey: bool = False
):
    """A constrained-layout figure on the Agg canvas and its rows x cols axes (a flat list)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(max(6.4, panel_size[0] * cols), panel_size[1] * rows), layout="constrained")
    FigureCanvasAgg(fig)
    return fig, fig.subplots(rows, cols, squeeze=False, sharex=sharex, sharey=sharey).ravel().tolist()


def finish(fig, axes: list, title: str, path: Path) -> None:
    """Grid every panel, title the figure and save it."""
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    save_figure(fig, path)


def plot_curve(ax, curve: dict[int, float], **style) -> None:
    """A Pass@k curve {k: Pass@k} as a line."""
    ax.plot(list(curve), list(curve.values()), **style)


def k_axis(ax, ks: list[int]) -> None:
    """A log2 k axis with a tick at every evaluated k."""
    from matplotlib.ticker import FixedFormatter, FixedLocator, NullLocator

    ax.set_xscale("log", base=2)
    ax.xaxis.set_major_locator(FixedLocator(ks))
    ax.xaxis.set_major_formatter(FixedFormatter(tick_labels(ks)))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xlabel("k (samples per problem)")


def step_axis(ax) -> None:
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("training step")


def percent_axis(ax) -> None:
    """A percent y axis from 0. Call it after plotting: it fixes the top at what the data needs."""
    from matplotlib.ticker import PercentFormatter

    ax.yaxis.set_major_formatter(PercentFormatter(1.0))
    ax.set_ylim(bottom=0)


def moving_average(values: np.ndarray, window: int) -> np.ndarray:
    """Centred moving average of (T,) values ignoring NaN; near the ends it averages fewer points."""
    window = min(window, len(values))
    finite = np.isfinite(values)
    kernel = np.ones(window)
    sums = np.convolve(np.where(finite, values, 0.0), kernel, mode="same")
    counts = np.convolve(finite.astype(float), kernel, mode="same")
    return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
