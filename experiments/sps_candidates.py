"""Candidate new SPS defaults (issue 24), by the rule for one: a win on countdown-val (seed 0) over
SPS, then on the test split over 5 seeds. Each candidate is a configuration of
experiments/sps_vs_pkpo.py (its "sps-" entries), trained in the head-to-head's regime (100 steps of
32 x 16 on the fixed 512-problem set) and evaluated at n = 64; runs are shared with sps_vs_pkpo.py
(out/head_to_head/<name>/seed<k>/), so finished ones are reused and test seeds compare there.

    python experiments/sps_candidates.py --configs sps-adversarial,sps-adversarial-l3 --split val --seeds 0
    python experiments/sps_candidates.py --configs sps-adversarial --split test --seeds 0,1,2,3,4
    python experiments/sps_candidates.py --configs sps-adversarial --summary

Results: experiments/results/sps_candidates.json (each candidate's val and test metrics by seed).
"""

from __future__ import annotations

import argparse
import json

from ablation import RESULTS, held_out_eval, run_metrics
from head_to_head import folder_of
from sps_vs_pkpo import CONFIGS, RUNS, train_configs

OUT = RESULTS / "sps_candidates.json"
SPLITS = {"val": "countdown-val", "test": "countdown-test"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    candidates = [name for name in CONFIGS if name.startswith("sps-")]
    parser.add_argument("--configs", required=True, help=f"comma-separated, from {', '.join(candidates)}")
    parser.add_argument("--split", choices=SPLITS, default="val")
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--summary", action="store_true", help="only record the finished runs")
    args = parser.parse_args()
    configs, seeds = args.configs.split(","), [int(s) for s in args.seeds.split(",")]
    if unknown := [c for c in configs if c not in candidates]:
        raise SystemExit(f"unknown configs {unknown}; known: {', '.join(candidates)}")
    if not args.summary:
        train_configs(configs, seeds, {args.split: held_out_eval(SPLITS[args.split])}, args.workers)
    record = json.loads(OUT.read_text()) if OUT.is_file() else {}
    for name in configs:
        entry = record.setdefault(name, {"overrides": CONFIGS[name], "val": {}, "test": {}})
        for split in SPLITS:
            for metrics in sorted(folder_of(RUNS, name, 0).parent.glob(f"seed*/{split}/metrics.json")):
                seed = metrics.parents[1].name.removeprefix("seed")
                entry[split][seed] = run_metrics(metrics.parents[1], split)
        print(name, {split: {seed: (round(m["pass@1"], 3), round(m["pass@64"], 3)) for seed, m in entry[split].items()} for split in SPLITS})
    OUT.write_text(json.dumps(record, indent=1) + "\n")  # no sort_keys: it would order the curves' k as strings


if __name__ == "__main__":
    main()
