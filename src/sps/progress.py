"""One progress bar style for every long job (rich), silenced when not wanted."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator


@contextlib.contextmanager
def progress_bar(
    description: str, total: int, done: int = 0, enabled: bool = True, unit: str = "samples"
) -> Iterator[Callable[..., None]]:
    """Yield `advance(k, info="")`; shows the count, the rate in `unit`/s, the latest info text
    (e.g. a training step's reward) and the time left."""
    if not enabled:
        yield lambda k, info="": None
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
