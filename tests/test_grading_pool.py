"""WorkerPool: hard timeouts kill and replace a worker, crashes become errors, order is kept,
and items sent together in a chunk each run exactly once whatever happens to the others."""

from __future__ import annotations

import contextlib
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import psutil  # installed with peft
import pytest

from sps.grading.base import Grade, PooledGrader
from sps.grading.pool import CHUNKS_PER_WORKER, GIB, MAX_CHUNK, Failure, WorkerPool
from sps.tasks.problem import Problem


# Module-level helpers: spawned workers import this module to unpickle them.
def sleep_then_pid(seconds: float, group: int = 0) -> int:
    """Sleep, then say which worker process ran the item (`group` is only for keying items)."""
    time.sleep(seconds)
    return os.getpid()


def sleep_then_echo(seconds: float, value: int) -> int:
    time.sleep(seconds)
    return value


def exit_or_pid(exit_code: int) -> int:
    """Crash the worker with `exit_code` unless it is 0."""
    if exit_code:
        os._exit(exit_code)
    return os.getpid()


def record(log: str, value: int, action: str = "") -> tuple[int, int]:
    """Append `value` to the file `log` (to count runs), then hang, crash, take 1 GiB or return (value, pid)."""
    with open(log, "a") as file:
        file.write(f"{value}\n")
    if action == "hang":
        time.sleep(60)
    if action == "crash":
        os._exit(7)
    if action == "leak":
        hoard = [bytes(16 << 20) for _ in range(64)]  # 1 GiB: bounded, should the limit not hold
        del hoard
    return value, os.getpid()


def grade_and_record(log: str, completion: str, answer: str) -> Grade:
    """Exact-match grading that appends what it graded to the file `log`."""
    with open(log, "a") as file:
        file.write(f"{completion}|{answer}\n")
    return Grade(completion == answer, "ok", completion)


class RecordingGrader(PooledGrader):
    name = "recording"

    def __init__(self, log: str):
        super().__init__(grade_and_record, workers=2, timeout_s=10.0)
        self.log = log

    def arguments(self, completion: str, problem: Problem) -> tuple:
        return self.log, completion, problem.answer


def meet(folder: str, count: int) -> int:
    """Wait (up to 30 s) until `count` processes run this at once, so each item has its own worker."""
    os.makedirs(folder, exist_ok=True)
    open(os.path.join(folder, str(os.getpid())), "w").close()
    deadline = time.monotonic() + 30
    while len(os.listdir(folder)) < count and time.monotonic() < deadline:
        time.sleep(0.01)
    return os.getpid()


def is_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_results_come_back_in_input_order():
    # Later items finish first, so completion order is the reverse of input order.
    items = [(0.05 * (5 - i), i) for i in range(6)]
    with WorkerPool(sleep_then_echo, workers=2, timeout_s=5) as pool:
        assert pool.map(items) == list(range(6))
        assert pool.map([]) == []


def test_many_items_in_chunks_give_the_serial_results_in_order():
    # Uneven sleeps and keys shuffle which worker finishes what, and when.
    items = [(0.002 * (i % 3), i) for i in range(100)]
    with WorkerPool(sleep_then_echo, workers=2, timeout_s=5) as pool:
        assert pool.map(items, key=lambda args: args[1] % 7) == [sleep_then_echo(*args) for args in items]


def test_workers_are_reused_across_map_calls(tmp_path):
    with WorkerPool(meet, workers=2, timeout_s=60) as pool:
        first = pool.map([(str(tmp_path / "first"), 2)] * 2)
        second = pool.map([(str(tmp_path / "second"), 2)] * 2)
    assert len(set(first)) == 2 and set(second) == set(first)


@pytest.mark.parametrize(
    ("action", "failure"),
    [
        ("hang", Failure("timeout", "item 5: exceeded the 1 s hard timeout")),
        ("crash", Failure("error", "item 5: worker process died (exit code 7)")),
        ("leak", Failure("memory", "item 5: exceeded the 0.25 GiB memory limit")),
    ],
)
def test_a_bad_item_mid_chunk_fails_alone_and_the_rest_run_exactly_once(tmp_path, action, failure):
    log = str(tmp_path / "runs.txt")
    count, bad = 40, 5
    # One worker's first chunk holds items 0 .. size - 1, so the bad item has chunk-mates on both sides.
    assert min(MAX_CHUNK, count // CHUNKS_PER_WORKER) > bad + 1
    items = [(log, i, action if i == bad else "") for i in range(count)]
    with WorkerPool(record, workers=1, timeout_s=1, memory_limit=GIB // 4) as pool:
        pool.map([(log, -1)])  # start the worker outside the timing
        start = time.monotonic()
        results = pool.map(items)
        elapsed = time.monotonic() - start
    assert results[bad] == failure
    assert [result[0] for result in results if result != failure] == [i for i in range(count) if i != bad]
    first_pid = results[0][1]
    assert {pid for _, pid in results[:bad]} == {first_pid}
    assert first_pid not in {pid for _, pid in results[bad + 1 :]}, "the bad item's worker is replaced"
    with open(log) as file:
        assert sorted(int(line) for line in file) == list(range(-1, count)), "each item ran exactly once"
    if action == "hang":
        assert 1 <= elapsed < 1 + 30, "killed at its deadline (generous slack for a busy machine)"


def test_hanging_item_is_killed_and_its_worker_replaced():
    with WorkerPool(sleep_then_pid, workers=1, timeout_s=1) as pool:
        start = time.monotonic()
        first, hung, after = pool.map([(0,), (60,), (0,)])
        assert time.monotonic() - start < 10
        assert hung == Failure("timeout", "item 1: exceeded the 1 s hard timeout")
        assert after != first, "the killed worker must be replaced by a new process"
        assert not is_alive(first)
        assert pool.map([(0,)]) == [after], "the replacement is reused by the next call"


def test_crashed_worker_is_an_error_and_is_replaced():
    with WorkerPool(exit_or_pid, workers=1, timeout_s=5) as pool:
        first, crashed, after = pool.map([(0,), (7,), (0,)])
        assert crashed == Failure("error", "item 1: worker process died (exit code 7)")
        assert isinstance(after, int) and after != first


def test_items_with_one_key_stay_on_one_worker():
    items = [(0.01, group) for group in range(6) for _ in range(4)]
    with WorkerPool(sleep_then_pid, workers=2, timeout_s=5) as pool:
        pids = pool.map(items, key=lambda args: args[1])
    workers_per_group = [
        len({pid for pid, (_, g) in zip(pids, items, strict=True) if g == group}) for group in range(6)
    ]
    # Only where one worker runs out of groups of its own may it share another's.
    assert workers_per_group.count(1) >= 4, workers_per_group


def test_exception_in_the_function_is_an_error_naming_its_type():
    with WorkerPool(math.sqrt, workers=1, timeout_s=5) as pool:
        assert pool.map([(4.0,), (-1.0,), (9.0,)]) == [
            2.0,
            Failure("error", "item 1: sqrt raised ValueError"),
            3.0,
        ]


def test_close_stops_the_workers_and_a_later_call_starts_fresh_ones():
    pool = WorkerPool(sleep_then_pid, workers=2, timeout_s=5)
    pids = set(pool.map([(0.1,), (0.1,)]))
    assert all(is_alive(pid) for pid in pids)
    pool.close()
    assert not any(is_alive(pid) for pid in pids)
    assert pool.map([(0,)])[0] not in pids, "a closed pool starts fresh workers"
    pool.close()


def test_rejects_a_non_positive_timeout_or_memory_limit():
    with pytest.raises(ValueError, match="timeout_s"):
        WorkerPool(sleep_then_pid, timeout_s=0)
    with pytest.raises(ValueError, match="memory_limit must be a positive number of bytes, got 0"):
        WorkerPool(sleep_then_pid, memory_limit=0)


def test_the_workers_die_with_a_killed_parent(tmp_path):
    # A parent whose two workers hang on an item each is SIGKILLed: nothing may outlive it.
    log = tmp_path / "runs.txt"
    parent = subprocess.Popen([sys.executable, "-c", (
        "from sps.grading.pool import WorkerPool; from test_grading_pool import record\n"
        f"if __name__ == '__main__': WorkerPool(record, workers=2, timeout_s=600).map([({str(log)!r}, i, 'hang') for i in range(2)])"
    )], cwd=Path(__file__).parent)
    workers, alive = killed_once(parent, lambda: log.exists() and len(log.read_text().split()) == 2, 60, 5)  # both items running
    assert len(workers) == 3  # the two workers and multiprocessing's resource tracker
    assert not alive, "a worker outlived its parent"


def killed_once(process: subprocess.Popen, started, limit: float, grace: float) -> tuple[list[psutil.Process], list[psutil.Process]]:
    """SIGKILL `process` once `started()` holds (within `limit` s): (its descendants at that moment,
    those still alive `grace` s later). Whatever is left is killed before returning."""
    descendants: list[psutil.Process] = []
    try:
        deadline = time.monotonic() + limit
        while not started():
            assert process.poll() is None and time.monotonic() < deadline, "it ended, or never started its work"
            time.sleep(0.05)
        descendants = psutil.Process(process.pid).children(recursive=True)
        process.kill()
        process.wait()
        return descendants, alive_after(descendants, grace)
    finally:
        process.kill()
        for survivor in alive_after(descendants, 0):
            survivor.kill()


def alive_after(processes: list[psutil.Process], seconds: float) -> list[psutil.Process]:
    """Those of `processes` still running (not zombies) after up to `seconds`."""
    deadline = time.monotonic() + seconds
    while True:
        alive = []
        for process in processes:
            with contextlib.suppress(psutil.NoSuchProcess):
                if process.is_running() and process.status() != psutil.STATUS_ZOMBIE:
                    alive.append(process)
        if not alive or time.monotonic() >= deadline:
            return alive
        time.sleep(0.05)


def test_a_grader_grades_each_distinct_completion_of_a_problem_once(tmp_path):
    log = tmp_path / "graded.txt"
    first, second = Problem(id="a", problem="", answer="1"), Problem(id="b", problem="", answer="2")
    completions = ["1", "2", "1", "1", "2", "3", "1", "2"]
    problems = [first] * 4 + [second] * 4  # one object per problem, repeated per sample, as callers do
    with RecordingGrader(str(log)) as grader:
        grades = grader.grade(completions, problems)
    assert [g.correct for g in grades] == [True, False, True, True, True, False, False, True]
    assert [g.extracted for g in grades] == completions
    assert sorted(log.read_text().split()) == ["1|1", "1|2", "2|1", "2|2", "3|2"]
