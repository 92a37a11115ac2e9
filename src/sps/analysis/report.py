"""`sps analyze`: the learning-dynamics report of one or more training runs (docs/sps-method.md §5-6).

Reads run folders written by `sps train` (layout in sps.training.run) and writes, into the report
folder, each file atomically:

  pass_at_k_vs_k.png     Pass@k against k at every evaluated checkpoint, one panel per run
  pass_at_k_vs_step.png  Pass@k against training step for the chosen ks, all runs together
  squeezing.png          entropy, log-likelihoods, distinct correct completions, top-1 share per step
  probes.png             the probe set's log-likelihood by tercile of starting likelihood (if any)
  upper_bound.png        envelope, base model and last checkpoint, one panel per run
  report.md, report.html the same content as markdown (figures linked) and one self-contained page

Accuracies are fractions in [0, 1]; log-likelihoods are mean per-token, in nats.
"""

from __future__ import annotations

import base64
import html
import json
import math
from pathlib import Path

import numpy as np

from sps.analysis import plots
from sps.analysis.runs import Checkpoint, Run, load_run
from sps.analysis.upper_bound import UpperBound, upper_bound
from sps.evaluation.report import MISSING, markdown_table
from sps.io import atomic_write_text

# The final squeezing metrics are means over this many last steps: one step's batch is noisy.
FINAL_STEPS = 5
SQUEEZING_COLUMNS = {
    "entropy": ("token entropy (nats)", ".3f"),
    "logp/correct": ("log-lik. correct (nats/token)", ".3f"),
    "logp/incorrect": ("log-lik. incorrect (nats/token)", ".3f"),
    "distinct_correct_per_prompt": ("distinct correct per prompt", ".2f"),
    "top1_share": ("top-1 share", ".1%"),
}
KEY_SETTINGS = ("max_steps", "learning_rate", "prompts_per_step", "num_generations", "temperature", "loss_type", "beta")
SPS_KEY_SETTINGS = ("schedule", "rl_steps", "irl_steps", "demo_source", "demos", "irl_mode", "reshape_strength")
TERCILES = ("rare", "middle", "likely")


def analyze(run_dirs: list[Path], out: Path | None = None, ks: list[int] | None = None) -> Path:
    """Write the learning-dynamics report of the runs in run_dirs; returns the report folder.

    out defaults to <run>/analysis for one run and out/analysis for several. ks are the Pass@k
    columns and lines (default: 1, the power of two nearest sqrt(n), and n, for the smallest n
    evaluated). Raises ValueError naming a folder that is not a run or lacks evaluations."""
    if not run_dirs:
        raise ValueError("analyze needs at least one run folder")
    run_dirs = [Path(d) for d in run_dirs]
    names = [d.name for d in run_dirs]
    if len(set(names)) < len(names):  # e.g. seed1/run and seed2/run
        names = [f"{d.parent.name}/{d.name}" for d in run_dirs]
    runs = [load_run(d, name) for d, name in zip(run_dirs, names)]
    if ks is not None and (not ks or min(ks) < 1):
        raise ValueError(f"ks must be positive integers, got {ks}")
    ks = sorted(set(ks or default_ks(min(c.n for run in runs for c in run.checkpoints))))
    out = Path(out) if out else run_dirs[0] / "analysis" if len(runs) == 1 else Path("out/analysis")
    out.mkdir(parents=True, exist_ok=True)

    bounds = {
        run.name: upper_bound(
            [c.curve() for c in run.checkpoints], [c.correct for c in run.checkpoints], run.base.curve() if run.base else None
        )
        for run in runs
    }
    shared = shared_base(runs)
    probe_groups_by_run = {run.label: probe_groups(run.probes) for run in runs if run.probes}
    plots.plot_pass_at_k_vs_k(runs, out / "pass_at_k_vs_k.png")
    plots.plot_pass_at_k_vs_step(runs, ks, out / "pass_at_k_vs_step.png")
    plots.plot_squeezing(runs, out / "squeezing.png")
    plots.plot_upper_bound(runs, bounds, shared, out / "upper_bound.png")
    if probe_groups_by_run:
        plots.plot_probes(probe_groups_by_run, out / "probes.png")
    else:
        (out / "probes.png").unlink(missing_ok=True)  # left by an earlier report of runs with probes

    blocks = [
        ("h1", "Learning dynamics: " + " vs ".join(run.label for run in runs)),
        *runs_section(runs),
        *checkpoints_section(runs, ks),
        *upper_bound_section(runs, bounds, shared),
        *squeezing_section(runs, probe_groups_by_run),
    ]
    atomic_write_text(out / "report.md", to_markdown(blocks))
    atomic_write_text(out / "report.html", to_html(blocks, out))
    return out


# -- reading runs ---------------------------------------------------------------------------------


# -- what the report computes ---------------------------------------------------------------------


def default_ks(n: int) -> list[int]:
    """1, the power of two nearest sqrt(n) (the middle of a log2 axis), and n."""
    return sorted({1, 2 ** round(math.log2(n) / 2), n})


def shared_base(runs: list[Run]) -> bool:
    """Whether two or more runs all hold the same base-model evaluation (settings and outcomes)."""
    bases = [run.base for run in runs]
    if len(runs) < 2 or None in bases:
        return False
    return all((b.settings, b.correct) == (bases[0].settings, bases[0].correct) for b in bases)


def evaluation_differences(runs: list[Run]) -> list[str]:
    """One line per evaluation setting (settings.json, the model aside) that is not the same for all
    checkpoints of all runs, listing each run's values."""
    keys = sorted({key for run in runs for c in run.checkpoints for key in c.settings} - {"model"})
    lines = []
    for key in keys:
        values = {run.name: sorted({json.dumps(c.settings.get(key)) for c in run.checkpoints}) for run in runs}
        if len({v for vs in values.values() for v in vs}) > 1:
            lines.append(f"{key}: " + "; ".join(f"{name} {' / '.join(vs)}" for name, vs in values.items()))
    return lines


def probe_groups(probes: list[dict]) -> dict[str, tuple[np.ndarray, np.ndarray, int]]:
    """The probes split into terciles of their mean log-likelihood at the first evaluated step
    (step 0), and each tercile's mean log-likelihood over the evaluated steps.

    probes: rows of probes.jsonl (step, probe, mean_logp). Returns {tercile: (steps (S,),
    mean log-likelihood (S,), number of probes)}, rarest first; a single group "all" when there
    are fewer probes than terciles."""
    steps = sorted({row["step"] for row in probes})
    ids = sorted({row["probe"] for row in probes})
    step_index = {step: i for i, step in enumerate(steps)}
    probe_index = {probe: j for j, probe in enumerate(ids)}
    logps = np.full((len(steps), len(ids)), np.nan)  # (S, probes)
    for row in probes:
        logps[step_index[row["step"]], probe_index[row["probe"]]] = row["mean_logp"]
    order = np.argsort(logps[0])
    groups = zip(TERCILES, np.array_split(order, len(TERCILES))) if len(ids) >= len(TERCILES) else [("all", order)]
    return {name: (np.array(steps), np.nanmean(logps[:, members], axis=1), len(members)) for name, members in groups}


def final_squeezing(run: Run) -> dict[str, float]:
    """Each squeezing metric's mean over the last FINAL_STEPS logged steps (NaN when never logged)."""
    last_rows = run.log[-FINAL_STEPS:]
    finals = {}
    for key in SQUEEZING_COLUMNS:
        values = np.array([row.get(key, math.nan) for row in last_rows], dtype=float)
        finals[key] = float(np.mean(values[np.isfinite(values)])) if np.isfinite(values).any() else math.nan
    return finals


# -- the report text ------------------------------------------------------------------------------
# A report is a list of blocks, rendered once as markdown and once as HTML:
# ("h1" | "h2" | "h3", text), ("p", text), ("list", [text]), ("table", header, rows), ("image", file, caption).


def runs_section(runs: list[Run]) -> list[tuple]:
    differences = evaluation_differences(runs)
    header = ["run", "algorithm", "model", "steps logged", "evaluations", "key settings"]
    blocks = [("h2", "Runs"), ("table", header, [run_row(run) for run in runs])]
    if differences:
        return [*blocks, ("p", "The evaluations differ between or within runs; compare them with care:"), ("list", differences)]
    return [*blocks, ("p", "All evaluations share their settings (benchmark, problems, n, temperature, grader, seed).")]


def checkpoints_section(runs: list[Run], ks: list[int]) -> list[tuple]:
    header = ["step", *[f"Pass@{k}" for k in ks], "Avg@n", "distinct correct per solved", "top-1 share"]
    blocks: list[tuple] = [("h2", "Evaluated checkpoints")]
    best_and_last = []
    for run in runs:
        blocks += [("h3", run.label), ("table", header, [checkpoint_row(c, ks) for c in run.checkpoints])]
        best = max(run.checkpoints, key=lambda c: c.metrics["avg_at_n"])  # the earliest among ties
        best_and_last.append([run.name, "best by Avg@n", *checkpoint_row(best, ks)])
        best_and_last.append([run.name, "last", *checkpoint_row(run.checkpoints[-1], ks)])
    return [
        *blocks,
        ("h3", "Best and last checkpoints"),
        ("p", "The best checkpoint is picked by Avg@n on the evaluation problems themselves, as the paper "
              "does: an optimistic protocol. The last checkpoint involves no such choice."),
        ("table", ["run", "checkpoint", *header], best_and_last),
        ("h2", "Pass@k over training"),
        ("image", "pass_at_k_vs_k.png",
         "Pass@k against k at every evaluated checkpoint (colour: training step; dashed black: the base model)."),
        ("image", "pass_at_k_vs_step.png",
         "Pass@k against training step (colour: run; line style: k), with 95% bootstrap intervals over problems."),
    ]


def upper_bound_section(runs: list[Run], bounds: dict[str, UpperBound], shared: bool) -> list[tuple]:
    ks = sorted({k for bound in bounds.values() for k in bound.envelope})
    rows = [[f"envelope Pass@{k}", *[fmt(bounds[run.name].envelope.get(k), ".1%") for run in runs]] for k in ks]
    rows.append(["coverage ceiling", *[fmt(bounds[run.name].coverage_ceiling, ".1%") for run in runs]])
    rows.append(["base-model bound", *[base_bound_text(bounds[run.name]) for run in runs]])
    return [
        ("h2", "Empirical upper bound on Pass@k"),
        ("p", "The envelope: for each k, the maximum Pass@k over all evaluated checkpoints of a run (base model "
              "included). The coverage ceiling: the fraction of problems solved by at least one sample of any "
              "checkpoint. The base-model bound: Pass@k of the starting model at the largest k evaluated."
              + (" All runs share the same base-model evaluation." if shared else "")),
        ("table", ["quantity", *[run.name for run in runs]], rows),
        ("image", "upper_bound.png", "The envelope of each run with its base model's and its last checkpoint's Pass@k "
                                     "curves; the dash-dotted line is the coverage ceiling."),
    ]


def squeezing_section(runs: list[Run], probe_groups_by_run: dict) -> list[tuple]:
    finals = {run.name: final_squeezing(run) for run in runs}
    rows = [
        [run.name, str(run.log[-1]["step"]), *[fmt(finals[run.name][key], spec) for key, (_, spec) in SQUEEZING_COLUMNS.items()]]
        for run in runs
    ]
    probe_rows = [
        [label, name, str(size), fmt(logps[0], ".3f"), fmt(logps[-1], ".3f"), fmt(logps[-1] - logps[0], "+.3f")]
        for label, groups in probe_groups_by_run.items()
        for name, (_, logps, size) in groups.items()
    ]
    blocks = [
        ("h2", "Squeezing"),
        ("p", f"Final values: means over the last {FINAL_STEPS} training steps of the rollout statistics."),
        ("table", ["run", "last step", *[heading for heading, _ in SQUEEZING_COLUMNS.values()]], rows),
        ("image", "squeezing.png",
         f"Rollout statistics per training step: moving average over {plots.SMOOTHING_WINDOW} steps, raw values faint."),
    ]
    if probe_rows:
        blocks += [
            ("h3", "Probes"),
            ("p", "Correct trajectories of the base model, grouped by tercile of their step-0 mean log-likelihood "
                  "(nats/token). Squeezing shows as probes losing likelihood to a few dominant trajectories, the rare "
                  "ones first if the likely ones gain; a method that steers squeezing keeps them from collapsing."),
            ("table", ["run", "group", "probes", "step 0", "last", "change"], probe_rows),
            ("image", "probes.png", "Mean log-likelihood of each probe group against training step."),
        ]
    without_probes = [run.name for run in runs if not run.probes]
    if without_probes:
        blocks.append(("p", f"No probes in {', '.join(without_probes)} (trained with probe_problems = 0, or nothing solved "
                            "at step 0)" + ("." if probe_rows else "; the probe figure is left out.")))
    return blocks


def run_row(run: Run) -> list[str]:
    cfg = run.config
    settings = ", ".join(f"{key} {cfg[key]}" for key in KEY_SETTINGS if key in cfg)
    if cfg.get("algorithm") == "sps":
        settings += "; sps: " + ", ".join(f"{key} {cfg['sps'][key]}" for key in SPS_KEY_SETTINGS if key in cfg.get("sps", {}))
    steps = [c.step for c in run.checkpoints]
    last = run.checkpoints[-1]
    span = f"step {steps[0]}" if len(steps) == 1 else f"steps {steps[0]}–{steps[-1]}"
    evaluations = f"{len(steps)} ({span}), {last.metrics['num_problems']} problems, n = {last.n}"
    algorithm, model = str(cfg.get("algorithm", MISSING)), str(cfg.get("model", MISSING))
    return [run.name, algorithm, model, str(run.log[-1]["step"]), evaluations, settings]


def checkpoint_row(checkpoint: Checkpoint, ks: list[int]) -> list[str]:
    """step, Pass@k for each k, Avg@n, distinct correct per solved problem, top-1 share."""
    metrics = checkpoint.metrics
    pass_values = [checkpoint.pass_at(k) for k in ks]
    return [
        str(checkpoint.step),
        *[fmt(value[0] if value else None, ".1%") for value in pass_values],
        fmt(metrics["avg_at_n"], ".1%"),
        fmt(metrics.get("distinct_correct_per_solved"), ".2f"),
        fmt(metrics.get("top1_share"), ".1%"),
    ]


def base_bound_text(bound: UpperBound) -> str:
    if bound.base_model_bound is None:
        return f"{MISSING} (no step-0 evaluation)"
    k, value = bound.base_model_bound
    return f"{fmt(value, '.1%')} (Pass@{k})"


def fmt(value: float | None, spec: str) -> str:
    return MISSING if value is None or not math.isfinite(value) else format(value, spec)


def to_markdown(blocks: list[tuple]) -> str:
    parts = []
    for block in blocks:
        match block:
            case ("h1" | "h2" | "h3") as level, text:
                parts.append("#" * int(level[1]) + " " + text)
            case "p", text:
                parts.append(text)
            case "list", items:
                parts.append("\n".join(f"- {item}" for item in items))
            case "table", header, rows:
                parts.append(markdown_table(header, rows))
            case "image", file, caption:
                parts.append(f"![{Path(file).stem}]({file})\n\n{caption}")
    return "\n\n".join(parts) + "\n"


def to_html(blocks: list[tuple], folder: Path) -> str:
    """One self-contained page: the figures in `folder` inlined as base64 PNG."""
    esc = html.escape
    parts = []
    for block in blocks:
        match block:
            case ("h1" | "h2" | "h3") as level, text:
                parts.append(f"<{level}>{esc(text)}</{level}>")
            case "p", text:
                parts.append(f"<p>{esc(text)}</p>")
            case "list", items:
                parts.append("<ul>" + "".join(f"<li>{esc(item)}</li>" for item in items) + "</ul>")
            case "table", header, rows:
                head = "<tr>" + "".join(f"<th>{esc(cell)}</th>" for cell in header) + "</tr>"
                body = "".join("<tr>" + "".join(f"<td>{esc(cell)}</td>" for cell in row) + "</tr>" for row in rows)
                parts.append(f"<table>{head}{body}</table>")
            case "image", file, caption:
                data = base64.b64encode((folder / file).read_bytes()).decode("ascii")
                image = f'<img src="data:image/png;base64,{data}" alt="{esc(caption)}">'
                parts.append(f"<figure>{image}<figcaption>{esc(caption)}</figcaption></figure>")
    title = esc(blocks[0][1])
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>body {{ font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em; }}
table {{ border-collapse: collapse; font-size: 0.9em; }} th {{ background: #f3f3f3; }} img {{ max-width: 100%; }}
th, td {{ border: 1px solid #ccc; padding: 0.3em 0.6em; }} figcaption {{ color: #555; }}</style></head><body>
{chr(10).join(parts)}
</body></html>
"""
