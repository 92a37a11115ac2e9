"""The head-to-head on the testbed: SPS against the published exploration methods (docs/baselines.md).

The fixed regime of the SPS ablation (experiments/ablation.py, docs/method.md): the default testbed
model, 100 steps of 32 prompts x 16 rollouts on the fixed 512-problem training set, the last
checkpoint evaluated with n = 64 samples at temperature 1. Every method runs at its authors'
defaults and at up to 4 other values of its main knob (SETTINGS). Selection, on seed 0 and on
`countdown-val` (300 problems) only, by one rule for every method: the highest Pass@64 among the
method's settings whose Pass@1 is at most 2 points below GRPO's (the ablation's rule); if none
qualifies, the highest Pass@1. The chosen setting then runs 3 seeds and is evaluated on
`countdown-test` (500 problems); GRPO, GRPO + KL (beta 0.04) and the shipped SPS go in the same table.
Two runs go side by side, one CPU thread each; finished runs and evaluations are skipped, so
rerunning continues an interrupted head-to-head.

    python experiments/head_to_head.py                      # everything (prints a time estimate first)
    python experiments/head_to_head.py --methods passk,simko --workers 2
    python experiments/head_to_head.py --defaults-only --seeds 0 --methods sps+passk   # SPS with a peer's advantage
    python experiments/head_to_head.py --defaults-only --seeds 0   # a first look: authors' defaults, one seed
    python experiments/head_to_head.py --summary            # only rebuild the table and figures
    # smoke test of the driver (minutes): a tiny model, few steps and problems, its own folders
    python experiments/head_to_head.py --steps 2 --limit 8 --seeds 0,1 --methods w_reinforce,focal \\
        --runs /tmp/h2h/runs --results /tmp/h2h/results --model <testbed folder> \\
        --train-args "--prompts_per_step 4 --num_generations 4"

Runs: out/head_to_head/<setting>/seed<k>/ (val/ and test/ evaluations inside); GRPO, GRPO + KL and
SPS share the ablation's runs, out/ablation/fixed/<name>/seed<k>/, and its base-model evaluation
(in general <runs>/../ablation/).
Results: experiments/results/head_to_head.md (and .json; with every tested setting against SPS's best
Pass@64 at equal or better Pass@1), head_to_head_pareto.png (Pass@1 against Pass@64, seed range as
bars, the base model marked, SPS's frontier dashed), head_to_head_passk.png (Pass@k of the best five),
head_to_head_selection.png (the knob sweep on countdown-val: each method's settings as one curve).
"""

from __future__ import annotations

import argparse
import itertools
import json
import shlex
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from ablation import (
    REGIMES,
    REPO,
    RESULTS,
    VARIANTS,
    base_metrics,
    evaluate_base,
    held_out_eval,
    mean,
    run_metrics,
    train_and_evaluate,
)

# method -> (its authors' defaults as overrides of configs/testbed/grpo.yaml, {label: overrides of the
# main knob added to them}). A setting is named <method> (the defaults) or <method>-<label>.
SETTINGS: dict[str, tuple[list[str], dict[str, list[str]]]] = {
    "passk": (["--advantage_estimator", "passk", "--advantage.k", "4"],
              {f"k{k}": ["--advantage.k", str(k)] for k in (2, 8, 16)}),
    "pkpo": (["--advantage_estimator", "pkpo", "--advantage.k", "4"],
             {"k2": ["--advantage.k", "2"], "k8": ["--advantage.k", "8"],
              "k8to1": ["--advantage.k", "8", "--advantage.k_final", "1", "--advantage.k_switch_step", "50"]}),
    "grpo_passk": (["--advantage_estimator", "grpo_passk"], {"nostd": ["--scale_rewards", "none"]}),
    "w_reinforce": (["--advantage_estimator", "w_reinforce", "--advantage.positive_weight", "0.1"],
                    {f"l{v}": ["--advantage.positive_weight", v] for v in ("0", "0.05", "0.25", "0.5")}),
    "focal": (["--advantage.focal_gamma", "0.5"], {f"g{v}": ["--advantage.focal_gamma", v] for v in ("0.25", "1", "2")}),
    "unlikeliness": (["--advantage.rank_penalty", "0.25"], {f"b{v}": ["--advantage.rank_penalty", v] for v in ("0.1", "0.5", "1")}),
    "simko": (["--loss_mode", "simko"], {f"a{v}": ["--policy_loss.simko_alpha", v] for v in ("0.03", "0.1", "0.2", "0.3")}),
    # The authors run Clip-Cov with the PPO clip opened to 1 (ratio in [0, 2]).
    "clip_cov": (["--loss_mode", "clip_cov", "--epsilon", "1.0"], {f"r{v}": ["--policy_loss.clip_cov_ratio", v] for v in ("1e-3", "5e-3", "2e-2")}),
    "kl_cov": (["--loss_mode", "kl_cov"], {f"r{v}": ["--policy_loss.kl_cov_ratio", v] for v in ("2e-4", "1e-2", "5e-2")}),
    "dph": (["--loss_mode", "dph"], {f"c{v}": ["--policy_loss.dph_coef", v] for v in ("0.03", "0.1", "0.3")}),
    # Main knob: the step delta, the cap kept at Skywork's 50 x delta.
    "adaptive_entropy": (["--adaptive_entropy.enabled", "true"],
                         {f"d{d}": ["--adaptive_entropy.delta", d, "--adaptive_entropy.coef_max", m]
                          for d, m in (("1e-3", "0.05"), ("5e-3", "0.25"), ("2e-2", "1.0"))}),
    # The newer peers (issue 24). MaxRL has no knob.
    "max_rl": (["--advantage_estimator", "max_rl"], {}),
    "top_entropy": (["--loss_mode", "top_entropy"], {f"rho{v}": ["--policy_loss.top_entropy_quantile", v] for v in ("0.1", "0.5")}),
    "archer": (["--loss_mode", "archer"], {f"e{v}": ["--policy_loss.archer_high_epsilon", v] for v in ("0.3", "0.8")}),
    "outcome_bonus": (["--advantage.outcome_bonus", "ucb_con"],
                      {"mean": ["--advantage.outcome_bonus", "ucb_mean"], "batch": ["--advantage.outcome_bonus", "batch"],
                       "c0.5": ["--advantage.outcome_bonus_coef", "0.5"], "b1": ["--advantage.outcome_bonus_baseline", "1"]}),
    # FlowRL with its authors' aggregation (a mean over completions); main knob beta, the reward's scale.
    "flowrl": (["--loss_mode", "flowrl", "--loss_type", "grpo"], {f"b{v}": ["--policy_loss.flowrl_beta", v] for v in ("5", "30")}),
}
# "sps+<method>" is SPS's IRL step combined with a peer: configs/testbed/sps.yaml with <method>'s
# settings (its advantage or loss applies to the RL steps; the IRL step is orthogonal to both).
COMBINED = "sps+"
REFERENCES = ("grpo", "grpo-kl", "sps")  # the ablation's variants
SPS_SHARES = ("sps-K3", "sps-K2", "sps", "sps-irl2")  # the ablation's IRL shares: 1 IRL step per 3, 2, 1 RL steps; 2 per RL step
ABLATION_RECORD = RESULTS / "ablation.json"  # the references' test results, per seed, as the ablation recorded them
PASS1_SLACK = 0.02  # the selection rule: Pass@1 at most this far below GRPO's (on countdown-val)
MINUTES_PER_RUN = 4.5  # one run with its evaluation, two side by side on 2 cores (docs/method.md: about 4, 8.5 with a reference model)


def settings(methods: list[str], knobs: bool = True) -> dict[str, tuple[str, list[str]]]:
    """setting name -> (method, overrides) for the given methods (their defaults only unless knobs)."""
    found = {}
    for method in methods:
        peer = method.removeprefix(COMBINED)
        if peer not in SETTINGS:
            raise SystemExit(f"unknown method {method!r}: choose from {', '.join(SETTINGS)}, or {COMBINED}<one of them>")
        default, knob = SETTINGS[peer]
        found[method] = (method, default)
        if knobs:
            found.update({f"{method}-{label}": (method, default + extra) for label, extra in knob.items()})
    return found


def folder_of(runs: Path, setting: str, seed: int) -> Path:
    return (runs.parent / "ablation" / "fixed" if setting in REFERENCES else runs) / setting / f"seed{seed}"


def job(runs: Path, setting: str, overrides: list[str], seed: int, steps: int, evaluations: dict[str, list[str]], extra: list[str]) -> str:
    config, base = VARIANTS[setting] if setting in REFERENCES else ("sps" if setting.startswith((COMBINED, "sps-")) else "grpo", [])
    train_and_evaluate(folder_of(runs, setting, seed), config, [*REGIMES["fixed"], *base, *overrides, *extra], seed, steps, evaluations)
    return f"{setting}/seed{seed}: {', '.join(evaluations)} done"


def ablation_record(names: tuple[str, ...], path: Path = ABLATION_RECORD) -> dict[tuple[str, int], dict]:
    """(variant, seed) -> its test metrics as the ablation recorded them (same regime, model and
    evaluation), so the head-to-head need not train them again; empty without a record."""
    if not path.is_file():
        return {}
    runs = json.loads(path.read_text())["runs"].get("fixed", {})
    return {(name, r["seed"]): {**r, "curve": {int(k): v for k, v in r["curve"].items()}} for name in names for r in runs.get(name, [])}


def seed_mean(runs: list[dict]) -> tuple[float, float]:
    """(Pass@1, Pass@64) averaged over a setting's seeds."""
    return mean([r["pass@1"] for r in runs]), mean([r["pass@64"] for r in runs])


def sps_curve(test: dict[str, list[dict]], record: dict[tuple[str, int], dict]) -> dict[str, tuple[float, float]]:
    """SPS's own trade-off on the test split, name -> seed-mean (Pass@1, Pass@64): the ablation's IRL
    shares (SPS_SHARES, as recorded) and every SPS configuration of this run (sps, sps+<peer>)."""
    found = {name: [r for (n, _), r in record.items() if n == name] for name in SPS_SHARES}
    found.update({name: runs for name, runs in test.items() if name == "sps" or name.startswith(COMBINED)})
    return {name: seed_mean(runs) for name, runs in found.items() if runs}


def against_sps(test: dict[str, list[dict]], curve: dict[str, tuple[float, float]]) -> list[str]:
    """Table rows: each tested peer setting against SPS's best Pass@64 at equal or better Pass@1
    (seed means, test split), the comparison SPS's goal is stated in (docs/method.md)."""
    peers = {name: seed_mean(runs) for name, runs in test.items() if name not in curve}
    rows = []
    for name, (p1, p64) in sorted(peers.items(), key=lambda item: -item[1][0]):
        # SPS's best at equal or better Pass@1: on its frontier there, or a configuration above it
        reachable = [y for x, y in curve.values() if x >= p1]
        if (on_frontier := pass64_at(list(curve.values()), p1)) is not None:
            reachable.append(on_frontier)
        rows.append(f"| `{name}` | {len(test[name])} | {p1:.3f} | {p64:.3f} | "
                    + (f"{max(reachable):.3f} | {max(reachable) - p64:+.3f} |" if reachable else "none at this Pass@1 | |"))
    points = ", ".join(f"`{name}` {p1:.3f} / {p64:.3f}" for name, (p1, p64) in sorted(curve.items(), key=lambda item: item[1]))
    return ["", "## Against SPS at equal or better Pass@1 (countdown-test, seed means)", "",
            f"SPS's configurations: {points}. For each peer setting, SPS's best Pass@64 at equal or better",
            "Pass@1: on the frontier of SPS's configurations (those no other beats on both, joined by",
            "straight lines) at the peer's Pass@1, or at a configuration with more Pass@1.", "",
            "| setting | seeds | Pass@1 | Pass@64 | SPS at equal or better Pass@1 | SPS's lead |", "|---|---|---|---|---|---|", *rows]


def validated(val: dict[str, dict], candidates: dict[str, tuple[str, list[str]]]) -> dict[str, list[str]]:
    """method -> its settings that have a validation result, in the candidates' order."""
    found: dict[str, list[str]] = {}
    for name, (method, _) in candidates.items():
        if name in val:
            found.setdefault(method, []).append(name)
    return found


def choose(val: dict[str, dict], candidates: dict[str, tuple[str, list[str]]]) -> dict[str, str]:
    """method -> its chosen setting by the selection rule, from the seed-0 val metrics."""
    floor = val["grpo"]["pass@1"] - PASS1_SLACK
    chosen = {}
    for method, names in validated(val, candidates).items():
        qualifying = [name for name in names if val[name]["pass@1"] >= floor]
        if qualifying:
            chosen[method] = max(qualifying, key=lambda name: val[name]["pass@64"])
        else:
            chosen[method] = max(names, key=lambda name: val[name]["pass@1"])
    return chosen


def frontier(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The (Pass@1, Pass@64) points that no other point beats on both, in Pass@1 order."""
    return sorted({p for p in points if not any(q != p and q[0] >= p[0] and q[1] >= p[1] for q in points)})


def pass64_at(curve: list[tuple[float, float]], pass1: float) -> float | None:
    """Pass@64 at `pass1` on a method's frontier (its settings, (Pass@1, Pass@64) each), joined by
    straight lines in Pass@1 order. None when `pass1` is outside the frontier's Pass@1 range."""
    front = frontier(curve)
    for (x0, y0), (x1, y1) in itertools.pairwise(front):
        if x0 <= pass1 <= x1:
            return y0 + (y1 - y0) * (pass1 - x0) / (x1 - x0)
    return next((y for x, y in front if x == pass1), None)


def at_sps_pass1(val: dict[str, dict], candidates: dict[str, tuple[str, list[str]]]) -> list[str]:
    """Table rows: each swept method's Pass@64 at SPS's Pass@1 on its validation knob curve, the
    comparison at equal Pass@1 that a selection rule anchored elsewhere cannot give."""
    target = val["sps"]["pass@1"]
    rows = []
    for method, names in validated(val, candidates).items():
        if method in REFERENCES or len(names) < 2:
            continue
        curve = [(val[n]["pass@1"], val[n]["pass@64"]) for n in names]
        at = pass64_at(curve, target)
        low, high = min(curve)[0], max(curve)[0]
        nearest = min(curve, key=lambda point: abs(point[0] - target))
        rows.append(f"| {method} | {len(curve)} | {low:.3f}-{high:.3f} | "
                    + (f"{at:.3f} | {val['sps']['pass@64'] - at:+.3f} |" if at is not None
                       else f"not reached (nearest: {nearest[0]:.3f} / {nearest[1]:.3f}) | |"))
    if not rows:
        return []
    return ["", f"## At SPS's Pass@1 (countdown-val, seed 0: SPS {target:.3f} / {val['sps']['pass@64']:.3f})", "",
            "Each method's Pass@64 at SPS's Pass@1 on the frontier of its knob settings (those no other setting",
            "beats on both Pass@1 and Pass@64, joined by straight lines).", "",
            "| method | settings | Pass@1 range | Pass@64 there | SPS's lead |", "|---|---|---|---|---|", *rows]


def table(val: dict[str, dict], test: dict[str, list[dict]], chosen: dict[str, str], base: dict | None,
          candidates: dict[str, tuple[str, list[str]]], curve: dict[str, tuple[float, float]]) -> str:
    keys = ["pass@1", "pass@8", "pass@64", "distinct", "top1", "train_entropy", "s_per_step"]
    lines = ["# Head-to-head on the testbed (generated by experiments/head_to_head.py)", "",
             f"Selection on countdown-val (seed 0): highest Pass@64 with Pass@1 >= GRPO's - {PASS1_SLACK}.", "",
             "## Test (countdown-test, n = 64; mean (min-max) over seeds)", "",
             "| method | setting | seeds | " + " | ".join(keys) + " |", "|---" * (len(keys) + 3) + "|"]
    if base:
        lines.append("| base model | - | - | " + " | ".join(f"{base[k]:.3f}" if k in base else "" for k in keys) + " |")
    for name, runs in sorted(test.items(), key=lambda item: -mean([r["pass@64"] for r in item[1]])):
        cells = []
        for k in keys:
            values = [r[k] for r in runs]
            cells.append(f"{mean(values):.3f}" if len(values) == 1 else f"{mean(values):.3f} ({min(values):.3f}-{max(values):.3f})")
        method = next((m for m, s in chosen.items() if s == name), None) or f"{candidates[name][0]}, not chosen"
        lines.append(f"| {method} | `{name}` | {len(runs)} | " + " | ".join(cells) + " |")
    reused = [f"`{name}` seed {r['seed']}" for name, runs in test.items() for r in runs if r.get("recorded")]
    if reused:
        lines += ["", f"Taken from the ablation's record ({ABLATION_RECORD.relative_to(REPO)}), not trained again: {', '.join(reused)}."]
    lines += ["", "## Selection (countdown-val, seed 0)", "", "| setting | pass@1 | pass@64 | chosen |", "|---|---|---|---|"]
    marks = {name: "reference" if name in REFERENCES else "yes" for name in chosen.values()}
    lines += [f"| `{name}` | {m['pass@1']:.3f} | {m['pass@64']:.3f} | {marks.get(name, '')} |" for name, m in val.items()]
    lines += against_sps(test, curve) if len(curve) > 1 else []
    lines += at_sps_pass1(val, candidates) if "sps" in val else []
    return "\n".join(lines) + "\n"


def plot(test: dict[str, list[dict]], base: dict | None, curve: dict[str, tuple[float, float]], path_pareto: Path, path_curves: Path) -> None:
    """Pass@1 against Pass@64 (seed ranges as bars, the base model a star, SPS's configurations as
    dots and its frontier a dashed line), and the Pass@k curves of the five highest seed-mean Pass@64."""
    from sps.analysis.plots import BASE_STYLE, finish, k_axis, new_figure, percent_axis, plot_curve

    fig, (ax,) = new_figure(1, 1, panel_size=(7.0, 5.6))
    for name, runs in test.items():
        p1, p64 = [r["pass@1"] for r in runs], [r["pass@64"] for r in runs]
        colour = "tab:blue" if name.startswith("sps") else "tab:red" if name.startswith("grpo") and name in REFERENCES else "tab:gray"
        ax.errorbar(mean(p1), mean(p64), xerr=[[mean(p1) - min(p1)], [max(p1) - mean(p1)]],
                    yerr=[[mean(p64) - min(p64)], [max(p64) - mean(p64)]], fmt="o", color=colour, capsize=2)
        ax.annotate(name, (mean(p1), mean(p64)), fontsize=7, xytext=(3, 3), textcoords="offset points")
    if len(curve) > 1:
        ax.plot(*zip(*frontier(list(curve.values())), strict=True), linestyle="--", color="tab:blue", alpha=0.6, label="SPS's frontier")
        ax.plot(*zip(*curve.values(), strict=True), linestyle="none", marker=".", color="tab:blue")
        for name in curve.keys() - test.keys():
            ax.annotate(name, curve[name], fontsize=7, color="tab:blue", xytext=(3, -9), textcoords="offset points")
    if base:
        ax.plot(base["pass@1"], base["pass@64"], marker="*", markersize=12, color="black", linestyle="none", label="base model")
    ax.legend(fontsize=8, loc="lower left")
    ax.set_xlabel("Pass@1 (test)")
    ax.set_ylabel("Pass@64 (test)")
    finish(fig, [ax], "Head-to-head: Pass@1 against Pass@64 (mean, seed range)", path_pareto)

    fig, (ax,) = new_figure(1, 1, panel_size=(7.0, 5.6))
    best = sorted(test, key=lambda name: -mean([r["pass@64"] for r in test[name]]))[:5]
    ks = sorted(next(iter(test.values()))[0]["curve"])
    if base:
        plot_curve(ax, base["curve"], label="base model", **BASE_STYLE)
    for name in best:
        plot_curve(ax, {k: mean([r["curve"][k] for r in test[name]]) for k in ks}, marker="o", markersize=3,
                   label=f"{name} ({len(test[name])} seeds)")
    k_axis(ax, ks)
    percent_axis(ax)
    ax.set_ylabel("Pass@k on held-out test problems")
    ax.legend(fontsize=8, loc="lower right")
    finish(fig, [ax], "Pass@k of the five best (highest Pass@64)", path_curves)


def plot_selection(val: dict[str, dict], candidates: dict[str, tuple[str, list[str]]], path: Path) -> None:
    """The selection runs (seed 0, countdown-val) in the Pass@1-Pass@64 plane: a method's knob
    settings joined by a line in Pass@1 order, so each method's trade-off curve shows."""
    from sps.analysis.plots import finish, new_figure

    fig, (ax,) = new_figure(1, 1, panel_size=(7.0, 5.6))
    palette = itertools.cycle(["tab:orange", "tab:green", "tab:purple", "tab:olive", "tab:cyan", "tab:pink", "tab:gray",
                               "goldenrod", "black", "lime", "navy"])
    for method, names in validated(val, candidates).items():
        names = sorted(names, key=lambda n: val[n]["pass@1"])
        colour = {"grpo": "tab:red", "grpo-kl": "tab:brown", "sps": "tab:blue"}.get(method) or next(palette)
        ax.plot([val[n]["pass@1"] for n in names], [val[n]["pass@64"] for n in names], marker="o", markersize=4, color=colour, label=method)
        for n in names:  # a setting by its knob label; a method's defaults by the method's name
            ax.annotate(n.removeprefix(method).lstrip("-") or method, (val[n]["pass@1"], val[n]["pass@64"]),
                        fontsize=6, xytext=(3, 3), textcoords="offset points")
    ax.set_xlabel("Pass@1 (countdown-val, seed 0)")
    ax.set_ylabel("Pass@64 (countdown-val, seed 0)")
    ax.legend(fontsize=7, loc="upper right")  # high Pass@1 and Pass@64 together: the corner no run reaches
    finish(fig, [ax], "Selection runs: each method's knob settings", path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", default=",".join(SETTINGS),
                        help=f"comma-separated, from: {', '.join(SETTINGS)}; {COMBINED}<method> runs SPS with that method's settings")
    parser.add_argument("--seeds", default="0,1,2", help="seeds of the test runs (selection uses the first)")
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--limit", type=int, default=0, help="problems per evaluation (0 = all: 300 val, 500 test)")
    parser.add_argument("--runs", default=str(REPO / "out" / "head_to_head"), help="run folder (references in <runs>/../ablation/fixed)")
    parser.add_argument("--results", default=str(RESULTS))
    parser.add_argument("--model", default="", help="start model (default: the configs' testbed)")
    parser.add_argument("--train-args", default="", help="extra `sps train` overrides for every run, e.g. for a smoke test")
    parser.add_argument("--defaults-only", action="store_true", help="a first look: every method at its authors' defaults, no knob sweep")
    parser.add_argument("--test-settings", default="",
                        help="comma-separated settings of the knob sweep (e.g. simko-a0.2) to run on the test split too, for every seed, beside the chosen ones")
    parser.add_argument("--summary", action="store_true", help="only rebuild the table and figures from finished runs")
    args = parser.parse_args()
    runs, results = Path(args.runs), Path(args.results)
    seeds = [int(s) for s in args.seeds.split(",")]
    extra = shlex.split(args.train_args) + (["--model", args.model] if args.model else [])
    val_eval, test_eval = held_out_eval("countdown-val", limit=args.limit), held_out_eval("countdown-test", limit=args.limit)
    candidates = {**{name: (name, []) for name in REFERENCES}, **settings(args.methods.split(","), knobs=not args.defaults_only)}
    base_folder = runs.parent / "ablation" / "base" / "test"  # shared with the ablation

    if not args.summary:
        total = len(candidates) + (len(args.methods.split(",")) + len(REFERENCES)) * (len(seeds) - 1)
        print(f"{total} training runs (+ their evaluations): about {total * MINUTES_PER_RUN * args.steps / 100 / args.workers / 60:.1f} "
              f"hours with {args.workers} workers at the full regime's ~{MINUTES_PER_RUN} min per run", flush=True)
        evaluate_base(base_folder, test_eval, args.model)
        with ThreadPoolExecutor(args.workers) as pool:
            selection = [(name, overrides, seeds[0], {"val": val_eval}) for name, (_, overrides) in candidates.items()]
            for line in pool.map(lambda j: job(runs, *j[:3], args.steps, j[3], extra), selection):
                print(line, flush=True)
    val = {name: run_metrics(folder_of(runs, name, seeds[0]), "val") for name in candidates
           if (folder_of(runs, name, seeds[0]) / "val" / "metrics.json").is_file()}
    if "grpo" not in val:
        raise SystemExit("no GRPO validation result yet: run without --summary first")
    chosen = {**{name: name for name in REFERENCES}, **choose(val, {k: v for k, v in candidates.items() if k not in REFERENCES})}
    also = [name for name in args.test_settings.split(",") if name]
    if unknown := [name for name in also if name not in candidates]:
        raise SystemExit(f"--test-settings: {', '.join(unknown)} not among this sweep's settings ({', '.join(candidates)})")
    tested = list(dict.fromkeys([*chosen.values(), *also]))
    # The references' recorded seeds are not trained again (a run of one, where present, is used
    # instead); they count only in the full regime they were recorded in.
    full_regime = not (args.model or args.train_args or args.limit or args.steps != 100)
    recorded = ablation_record(REFERENCES + SPS_SHARES) if full_regime else {}
    if not args.summary:
        with ThreadPoolExecutor(args.workers) as pool:
            tests = [(name, candidates[name][1], seed, {"test": test_eval}) for name in tested for seed in seeds
                     if (name, seed) not in recorded]
            for line in pool.map(lambda j: job(runs, *j[:3], args.steps, j[3], extra), tests):
                print(line, flush=True)
    test = {}
    for name in tested:
        done = []
        for s in seeds:
            if (folder_of(runs, name, s) / "test" / "metrics.json").is_file():
                done.append({"seed": s, **run_metrics(folder_of(runs, name, s), "test")})
            elif (name, s) in recorded:
                done.append({**recorded[name, s], "recorded": True})
        if done:
            test[name] = done
    base = base_metrics(base_folder)
    results.mkdir(parents=True, exist_ok=True)
    (results / "head_to_head.json").write_text(json.dumps({"base": base, "chosen": chosen, "val": val, "test": test}, indent=1) + "\n")
    curve = sps_curve(test, recorded) if full_regime else {}
    text = table(val, test, chosen, base, candidates, curve)
    (results / "head_to_head.md").write_text(text)
    if test:
        plot(test, base, curve, results / "head_to_head_pareto.png", results / "head_to_head_passk.png")
    if any(name not in REFERENCES and name != method for name, (method, _) in candidates.items()):  # a knob sweep ran
        plot_selection(val, candidates, results / "head_to_head_selection.png")
    print(text)


if __name__ == "__main__":
    main()
