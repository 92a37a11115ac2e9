"""One progress bar style for every long job (rich), silenced when not wanted."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator


@contextlib.contextmanager
def progress_bar(
    description: str, total: int, done: int = 0, enabled: bool = True, unit: str = "samples"
) -> Iterator[Callable[[int], None]]:
    """Yield `advance(k)`; shows the count, the rate in `unit`/s and the time left."""
    if not enabled:
        yield lambda k: None
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

        def advance(k: int) -> None:
            nonlocal done
            done += k
            rate = (done - start_done) / max(time.monotonic() - start, 1e-9)
            progress.update(task, completed=done, rate=f"{rate:,.1f} {unit}/s")

        yield advance
