"""A training run's evaluation on 1 and 2 processes: every process samples and scores its share of
the batches (sps.evaluation.runner), where before the main process did it all while the others waited.

SmolLM2-135M-Instruct on 48 problems of reasoning-gym's aiw (n = 16, 32 new tokens, batches of
128 samples: 6 batches), one thread per process, under torchrun; each setting `--repeats` times,
alternating. Reports the evaluation's wall time (median and range) and whether the 1- and 2-process
samples are the same.

    python bench/distributed_eval.py [--repeats 3]     # writes bench/results/distributed_eval.md
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results" / "distributed_eval.md"
BENCHMARK, N, TOKENS, BATCH = "rg:aiw:val?size=48", 16, 32, 128


def worker(out: Path) -> None:
    """One process of the torchrun world: evaluate its share into out/, the main process writes seconds.json."""
    import torch

    from sps.evaluation.runner import EvalSettings, run_eval
    from sps.grading.rewards import RewardFunctions
    from sps.models.loading import load_policy
    from sps.rollout.hf import HFEngine
    from sps.tasks.benchmarks import load_benchmark
    from sps.training.distributed import init_world

    torch.set_num_threads(1)
    world = init_world("cpu")
    model, tokenizer = load_policy("smollm2-135m-instruct", dtype="float32", device="cpu")
    benchmark = load_benchmark(BENCHMARK)
    settings = EvalSettings(model="smollm2-135m-instruct", benchmark=benchmark.source, n=N, temperature=0.6, max_new_tokens=TOKENS,
                            prompt_template="chat-answer", grader=benchmark.grader)
    rewards = RewardFunctions(settings.rewards(), settings.reward_weights, settings.success_threshold)
    world.barrier()
    start = time.perf_counter()
    run_eval(HFEngine(model, tokenizer, batch_size=BATCH), tokenizer, benchmark, settings, out, rewards, BATCH, show_progress=False,
             world=world)
    world.barrier()
    seconds = time.perf_counter() - start
    rewards.close()
    if world.is_main:
        (out / "seconds.json").write_text(json.dumps(seconds))


def timed(processes: int, out: Path, port: int) -> float:
    shutil.rmtree(out, ignore_errors=True)
    launcher = shutil.which("torchrun", path=str(Path(sys.executable).parent))
    subprocess.run([launcher, "--nproc_per_node", str(processes), "--master_port", str(port), __file__, "--worker", str(out)],
                   check=True, capture_output=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    return json.loads((out / "seconds.json").read_text())


def samples(out: Path) -> list[tuple]:
    rows = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    return sorted((r["problem_id"], r["sample_index"], r["completion"]) for r in rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(Path(args.worker))
    times: dict[int, list[float]] = {1: [], 2: []}
    with tempfile.TemporaryDirectory() as tmp:
        for repeat in range(args.repeats):
            for processes in (1, 2):
                times[processes].append(timed(processes, Path(tmp) / str(processes), 29650 + processes))
                print(f"repeat {repeat}, {processes} process(es): {times[processes][-1]:.1f} s", flush=True)
        same = samples(Path(tmp) / "1") == samples(Path(tmp) / "2")
    rows = [f"| {p} | {statistics.median(t):.1f} | {min(t):.1f}-{max(t):.1f} |" for p, t in times.items()]
    ratio = [a / b for a, b in zip(times[1], times[2])]
    text = "\n".join([
        "# A training run's evaluation on 1 and 2 processes (bench/distributed_eval.py)", "",
        f"SmolLM2-135M-Instruct, {BENCHMARK}, n = {N}, {TOKENS} new tokens, batches of {BATCH} samples; one thread per process "
        f"under torchrun, on this machine's 2 cores; {args.repeats} repeats, alternating. Wall time of run_eval, in seconds.", "",
        "| processes | median | range |", "|---|---|---|", *rows, "",
        f"Speed-up of 2 processes: median {statistics.median(ratio):.2f}x (range {min(ratio):.2f}-{max(ratio):.2f}). "
        f"The 1- and 2-process samples are {'the same' if same else 'NOT the same'}.", "",
    ])
    RESULTS.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
