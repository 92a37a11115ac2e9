"""A small pool of worker processes that runs one function on many items under a hard per-item timeout.

math-verify's own timeouts use SIGALRM, which works only on a process's main thread and waits for
C-level bignum work to return (during `str()` of a parsed `(10^{10^{10}})!-1`, an alarm due after
2 s fired after 11 s; the `str()` itself runs for over 30 s). So the parent keeps a deadline for
the item each busy worker is on and SIGKILLs a worker that passes it, returning a `Failure` for
that item and starting a replacement. `ProcessPoolExecutor` cannot kill one stuck worker, hence
this pool. Workers are spawned, never forked: the parent may hold torch and its threads.

Items travel in chunks, and a worker sends each result back as soon as it has it, which restarts
its deadline for the next item. A round trip per item left a worker idle for 0.1-0.3 ms each
time, a third of the time it takes to grade a short completion; per item, the pool now costs
~40 us, mostly the parent's (measured with an echo function on a busy 2-core machine). Chunks
shrink as a call's items run out, so no worker is left with a long tail.

A worker may be given a memory limit: RLIMIT_DATA, its heap and other private writable memory. Not
RLIMIT_AS, which counts address space reserved and never written too: a worker that imported torch
and ran 32 threads held 2.3 GiB of it for 0.9 GiB of data. An item that hits the limit is a
`Failure` and its worker is replaced. A worker ends with its parent, even one killed by SIGKILL, so
no worker outlives the program, nor does multiprocessing's resource tracker, which exits once the
last process holding its pipe (the parent and each worker) has.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import resource
import signal
import sys
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from typing import Any

# How long a new worker may take to import its function and run the initializer.
STARTUP_TIMEOUT_S = 120.0
# The largest chunk; about 10 ms of short completions or 50 ms of long ones.
MAX_CHUNK = 16
# Aim for this many chunks per worker among the items still queued.
CHUNKS_PER_WORKER = 4
PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>
GIB = 2**30

# An item: its position in the call's input, and its argument tuple.
Job = tuple[int, tuple]
# The items not yet sent to a worker, by key.
Queues = dict[Hashable, deque[Job]]


def default_workers() -> int:
    """The default worker count: min(4, CPU count)."""
    return min(4, os.cpu_count() or 1)


@dataclass(frozen=True)
class Failure:
    """Why an item has no result: status "timeout" (killed at its deadline), "memory" (hit the worker's
    memory limit) or "error" (raised or crashed)."""

    status: str
    detail: str


def _end_with_parent() -> None:
    """Make this worker exit when its parent does. On Linux the kernel SIGKILLs it, even while a
    stuck item holds the GIL (it does so when the thread that started the worker ends: start pools
    from a thread that outlives them, as sps does from its main thread); elsewhere, and as a second
    line, a thread exits when the parent's end of the spawn pipe closes."""
    parent = multiprocessing.parent_process()
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent.pid:  # the parent ended before the signal was set
        os._exit(1)
    threading.Thread(target=_exit_when_closed, args=(parent.sentinel,), daemon=True).start()


def _exit_when_closed(sentinel: int) -> None:
    wait([sentinel])  # readable only at end of file: the parent's end closed
    os._exit(1)


def _serve(
    conn: Connection, fn: Callable[..., Any], initializer: Callable[[], None] | None, memory_limit: int | None
) -> None:
    """Worker main loop: answer each argument tuple of each chunk, in order, with ("ok", fn(*args)),
    ("error", reason) or ("memory", None); after "memory" the worker stops (its heap may still hold
    what filled it) and the parent starts a fresh one."""
    _end_with_parent()
    if memory_limit is not None:
        hard = resource.getrlimit(resource.RLIMIT_DATA)[1]
        limit = memory_limit if hard == resource.RLIM_INFINITY else min(memory_limit, hard)
        resource.setrlimit(resource.RLIMIT_DATA, (limit, limit))
    if initializer is not None:
        initializer()
    conn.send(("ready", None))
    while True:
        try:
            chunk = conn.recv()
        except EOFError:  # the parent closed the pipe or exited
            return
        for args in chunk:
            try:
                reply = ("ok", fn(*args))
            except MemoryError:
                reply = ("memory", None)
            except Exception as error:
                # The type name only: formatting the exception could stringify a huge object and hang.
                reply = ("error", f"raised {type(error).__name__}")
            conn.send(reply)
            if reply[0] == "memory":
                return


class _Worker:
    """One worker process, the parent's end of its pipe, and the items sent to it but not answered."""

    def __init__(self, context: Any, pool: WorkerPool):
        self.conn, child_conn = context.Pipe()
        self.process = context.Process(
            target=_serve, args=(child_conn, pool.fn, pool.initializer, pool.memory_limit), daemon=True
        )
        self.process.start()
        child_conn.close()
        self.ready = False
        # Sent and not answered, in order, with their keys; the first is the one it is working on.
        self.pending: deque[tuple[Hashable, Job]] = deque()
        self.key: Hashable = None  # the key of its latest item
        self.deadline = time.monotonic() + STARTUP_TIMEOUT_S

    @property
    def waited_on(self) -> bool:
        """Whether a reply is due: the ready signal or the result of an item."""
        return not self.ready or bool(self.pending)

    def stop(self) -> None:
        """Kill the process (it holds no state worth a graceful exit) and reap it."""
        self.process.kill()
        self.process.join()
        self.conn.close()


def _stop_all(workers: list[_Worker]) -> None:
    for worker in workers:
        worker.stop()
    workers.clear()


class WorkerPool:
    """Runs `fn(*args)` for argument tuples in worker processes, each call under a hard timeout.

    Workers start on `start()` or first use and are reused across `map` calls; `close()` (or leaving
    a `with` block, or interpreter exit, or the process's death) stops them. `memory_limit`: the
    most bytes of data each worker may hold (None: no limit). `fn` and `initializer` must be importable
    module-level functions, as spawned workers unpickle them by name. Not safe to `map` from several
    threads at once.
    """

    def __init__(
        self,
        fn: Callable[..., Any],
        workers: int | None = None,
        timeout_s: float = 10.0,
        initializer: Callable[[], None] | None = None,
        memory_limit: int | None = None,
    ):
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be positive, got {timeout_s}")
        if memory_limit is not None and memory_limit <= 0:
            raise ValueError(f"memory_limit must be a positive number of bytes, got {memory_limit}")
        self.fn = fn
        self.size = workers or default_workers()
        self.timeout_s = timeout_s
        self.initializer = initializer
        self.memory_limit = memory_limit
        self._context = multiprocessing.get_context("spawn")
        self._workers: list[_Worker] = []
        self._finalizer = weakref.finalize(self, _stop_all, self._workers)

    def start(self, workers: int | None = None) -> None:
        """Start workers up to `workers` (default: the pool's size) without waiting for them to be
        ready, so their startup overlaps whatever the caller does before its first `map`."""
        while len(self._workers) < min(self.size, self.size if workers is None else workers):
            self._workers.append(_Worker(self._context, self))

    def map(self, arg_tuples: Iterable[tuple], key: Callable[[tuple], Hashable] | None = None) -> list[Any]:
        """Results of `fn(*args)` in input order; a `Failure` for each item that timed out or failed.

        Items with the same `key(args)` go to the same worker where that keeps all workers busy, so
        per-process caches (a parsed gold answer shared by all samples of a problem) get hits.
        """
        queues: Queues = {}
        for index, args in enumerate(arg_tuples):
            queues.setdefault(key(args) if key else None, deque()).append((index, args))
        results: list[Any] = [None] * sum(len(queue) for queue in queues.values())
        try:
            self.start(len(results))
            while queues or any(worker.pending for worker in self._workers):
                for worker in self._workers:
                    if queues and worker.ready and not worker.pending:
                        self._dispatch(worker, queues)
                self._collect(queues, results)
        except BaseException:
            self.close()  # workers still busy with this call's items must not leak into the next call
            raise
        return results

    def close(self) -> None:
        """Stop all workers; a later `map` starts fresh ones."""
        _stop_all(self._workers)

    def __enter__(self) -> WorkerPool:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _dispatch(self, worker: _Worker, queues: Queues) -> None:
        """Send `worker` a chunk: items with its last key, then with keys no other worker last had, then the oldest."""
        queued = sum(len(queue) for queue in queues.values())
        size = max(1, min(MAX_CHUNK, queued // (CHUNKS_PER_WORKER * len(self._workers))))
        # Another worker's key stays its own while that worker waits for its next chunk, so a key's
        # items are split between workers only once every key still queued is some worker's.
        claimed = {other.key for other in self._workers if other is not worker}
        while queues and len(worker.pending) < size:
            if worker.key not in queues:
                worker.key = next((key for key in queues if key not in claimed), next(iter(queues)))
            queue = queues[worker.key]
            worker.pending.append((worker.key, queue.popleft()))
            if not queue:
                del queues[worker.key]
        worker.deadline = time.monotonic() + self.timeout_s
        try:
            worker.conn.send([args for _, (_, args) in worker.pending])
        except OSError:  # the worker died while idle: no item's fault, so all go back to the queues
            self._replace(worker, queues)

    def _collect(self, queues: Queues, results: list[Any]) -> None:
        """Wait for the first reply or deadline, then handle every worker that replied or ran out of time."""
        waited_on = [worker for worker in self._workers if worker.waited_on]
        next_deadline = min(worker.deadline for worker in waited_on)
        replied = wait([worker.conn for worker in waited_on], max(0.0, next_deadline - time.monotonic()))
        for worker in waited_on:
            if worker.conn in replied:
                self._receive(worker, queues, results)
            elif time.monotonic() >= worker.deadline:
                if not worker.ready:
                    raise RuntimeError(
                        f"a worker for {self.fn.__name__} did not start in {STARTUP_TIMEOUT_S} s"
                    )
                self._fail_current(
                    worker, queues, results, "timeout", f"exceeded the {self.timeout_s} s hard timeout"
                )

    def _receive(self, worker: _Worker, queues: Queues, results: list[Any]) -> None:
        """Handle one reply; a result restarts the worker's deadline, now for its next item."""
        try:
            status, value = worker.conn.recv()
        except (EOFError, OSError):  # the process died: a crash, not a slow item
            if not worker.ready:
                raise RuntimeError(f"a worker for {self.fn.__name__} died while starting") from None
            worker.process.join()
            reason = f"worker process died (exit code {worker.process.exitcode})"
            self._fail_current(worker, queues, results, "error", reason)
            return
        if status == "ready":
            worker.ready = True
            return
        if status == "memory":
            limit = f"exceeded the {self.memory_limit / GIB:g} GiB memory limit" if self.memory_limit else "ran out of memory"
            self._fail_current(worker, queues, results, "memory", limit)
            return
        index = worker.pending.popleft()[1][0]
        results[index] = (
            value if status == "ok" else Failure("error", f"item {index}: {self.fn.__name__} {value}")
        )
        worker.deadline = time.monotonic() + self.timeout_s

    def _fail_current(
        self, worker: _Worker, queues: Queues, results: list[Any], status: str, reason: str
    ) -> None:
        """Record a `Failure` for the item `worker` is stuck on or crashed on, then replace the worker."""
        index = worker.pending.popleft()[1][0]
        results[index] = Failure(status, f"item {index}: {reason}")
        self._replace(worker, queues)

    def _replace(self, worker: _Worker, queues: Queues) -> None:
        """Kill the worker and start a fresh one in its place. Its unanswered items go back to the
        front of their queues: none is lost, and none runs twice, as a worker runs its chunk in order
        and the item it was on, if any, has already been given its failure."""
        for key, job in reversed(worker.pending):
            queues.setdefault(key, deque()).appendleft(job)
        worker.stop()
        self._workers[self._workers.index(worker)] = _Worker(self._context, self)
