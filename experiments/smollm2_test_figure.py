"""Pass@k on the 300 held-out aiw test problems: the base SmolLM2-135M-Instruct and the step-40
checkpoints of GRPO and SPS (configs/smollm2/), one line per seed, from the `sps eval` folders
that docs/real-model.md lists. Writes experiments/results/smollm2_aiw/test_pass_at_k.png.

    python experiments/smollm2_test_figure.py [--evals out/smollm2/eval]
"""

import argparse
import json
from pathlib import Path

from sps.analysis.plots import BASE_STYLE, finish, k_axis, new_figure, percent_axis, plot_curve

RESULTS = Path(__file__).resolve().parent / "results" / "smollm2_aiw"
COLOURS = {"grpo": "tab:red", "sps": "tab:blue"}


def curve(folder: Path) -> dict[int, float]:
    return {int(k): v for k, v in json.loads((folder / "metrics.json").read_text())["pass_at_k"].items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--evals", type=Path, default=Path("out/smollm2/eval"))
    args = parser.parse_args()
    fig, (ax,) = new_figure(1, 1, panel_size=(7.0, 5.0))
    base = curve(args.evals / "base")
    plot_curve(ax, base, label="base model", **BASE_STYLE)
    for algorithm, colour in COLOURS.items():
        for seed, style in ((0, "-"), (1, ":")):
            plot_curve(ax, curve(args.evals / f"{algorithm}_seed{seed}"), color=colour, linestyle=style, marker="o",
                       markersize=3, label=f"{algorithm.upper()} seed {seed}")
    k_axis(ax, sorted(base))
    percent_axis(ax)
    ax.set_ylabel("Pass@k, 300 test problems (n = 64)")
    ax.legend(fontsize=8, loc="lower right")
    finish(fig, [ax], "SmolLM2-135M on aiw: base, GRPO and SPS after 40 steps", RESULTS / "test_pass_at_k.png")


if __name__ == "__main__":
    main()
