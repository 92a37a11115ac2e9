"""Two single-threaded training runs side by side, or one two-threaded run after the other?

Runs the same short GRPO training on the testbed (a) twice in sequence with 2 threads each and
(b) twice at the same time with 1 thread each, and reports runs per hour for both. The ablations
and `sps demo` run many small jobs; this decides how they use a 2-core machine.

    python bench/parallel_runs.py [--steps 8]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def command(model: str, out: Path, steps: int, threads: int) -> list[str]:
    return [
        sys.executable, "-m", "sps.cli", "train", "--config", str(REPO / "configs/testbed/grpo.yaml"),
        "--model", model, "--output_dir", str(out), "--max_steps", str(steps), "--eval_every", "-1",
        "--save_every", "1000", "--threads", str(threads),
    ]


def timed(commands: list[list[str]], together: bool) -> float:
    start = time.perf_counter()
    if together:
        processes = [subprocess.Popen(c, stdout=subprocess.DEVNULL) for c in commands]
        for p in processes:
            assert p.wait() == 0
    else:
        for c in commands:
            subprocess.run(c, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=8)
    args = parser.parse_args()
    from sps.models.testbed import TestbedConfig, build_testbed

    model = str(build_testbed(TestbedConfig()))
    work = Path(tempfile.mkdtemp())
    sequential = timed([command(model, work / f"seq{i}", args.steps, 2) for i in range(2)], together=False)
    parallel = timed([command(model, work / f"par{i}", args.steps, 1) for i in range(2)], together=True)
    print(f"# two GRPO runs of {args.steps} steps on the testbed (32 prompts x 16), including start-up")
    print("| schedule | wall s | runs per hour |")
    print("|---|---|---|")
    print(f"| one after the other, 2 threads each | {sequential:.0f} | {2 * 3600 / sequential:.1f} |")
    print(f"| side by side, 1 thread each | {parallel:.0f} | {2 * 3600 / parallel:.1f} |")
    print(f"\nside by side / one after the other, wall time: {parallel / sequential:.2f}")


if __name__ == "__main__":
    main()
