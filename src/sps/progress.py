"""One progress display for every long job: a rich bar on a terminal, and where the output goes to
a file (a batch job, nohup, CI) a plain line every `$SPS_PROGRESS_SECONDS` (default 30), which a
bar would not write until the end."""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Callable, Iterator

DEFAULT_PLAIN_SECONDS = 30.0


@contextlib.contextmanager
def progress_bar(
    description: str, total: int, done: int = 0, enabled: bool = True, unit: str = "samples"
) -> Iterator[Callable[..., None]]:
    """Yield `advance(k, info="")`; shows the count, the rate in `unit`/s, the latest info text
    (e.g. a training step's reward) and the time left."""
    if not enabled:
        yield lambda k, info="": None
        return
    if not sys.stdout.isatty():
        with plain_progress(description, total, done, unit, plain_seconds()) as advance:
            yield advance
        return
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    start, start_done = time.monotonic(), done
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns) as progress:
        task = progress.add_task(description, total=total, completed=done, rate="")

        def advance(k: int, info: str = "") -> None:
            nonlocal done
            done += k
            rate = (done - start_done) / max(time.monotonic() - start, 1e-9)
            progress.update(task, completed=done, rate=f"{rate:,.1f} {unit}/s  {info}".rstrip())

        yield advance


def plain_seconds() -> float:
    text = os.environ.get("SPS_PROGRESS_SECONDS", "")
    try:
        seconds = float(text) if text else DEFAULT_PLAIN_SECONDS
    except ValueError:
        raise ValueError(f"SPS_PROGRESS_SECONDS must be a number of seconds (got {text!r})") from None
    if not seconds > 0:
        raise ValueError(f"SPS_PROGRESS_SECONDS must be > 0 (got {text!r})")
    return seconds


@contextlib.contextmanager
def plain_progress(description: str, total: int, done: int, unit: str, every: float) -> Iterator[Callable[..., None]]:
    """Print `description: done/total, rate unit/s, ETA, info` at most every `every` seconds, and once at the end."""
    start, start_done = time.monotonic(), done
    last_shown, last_info, shown_done = start, "", done

    def line() -> str:
        elapsed = time.monotonic() - start
        rate = (done - start_done) / max(elapsed, 1e-9)
        left = f"{(total - done) / rate:,.0f} s left" if rate > 0 and done < total else "done" if done >= total else "? s left"
        return f"{description}: {done:,}/{total:,} {unit}, {rate:,.2f} {unit}/s, {left}, {elapsed:,.0f} s elapsed  {last_info}".rstrip()

    def advance(k: int, info: str = "") -> None:
        nonlocal done, last_shown, last_info, shown_done
        done += k
        last_info = info or last_info
        if time.monotonic() - last_shown >= every:
            print(line(), flush=True)
            last_shown, shown_done = time.monotonic(), done

    yield advance
    if done != shown_done:
        print(line(), flush=True)
